"""Errors the database layer raises; each is a user-facing SleeptimeError."""

from sleeptime import SleeptimeError


class UnknownContext(SleeptimeError):
    """No context has this name."""


class UnknownVersion(SleeptimeError):
    """The context has no checkpoint with this version (or no checkpoint at all)."""


class CorruptCheckpoint(SleeptimeError):
    """A checkpoint's payload does not match its stored sha256."""


class HeadConflict(SleeptimeError):
    """A publish lost the compare-and-swap: the head moved away from the expected parent."""


class InvalidInput(SleeptimeError):
    """Input refused before anything was written."""


class DatabaseUnavailable(SleeptimeError):
    """The database cannot be used at all: unreachable, missing, read-only, or not a database."""
