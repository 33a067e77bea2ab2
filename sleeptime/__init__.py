"""sleeptime: a sleep-time memory consolidation daemon with a Titans neural long-term memory per context."""

__version__ = "0.1.0"


class SleeptimeError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 1; HTTP answers 4xx."""
