"""The database layer: schema, engines, migrations and the Store. It knows bytes, never torch."""

from sleeptime.db.engine import make_engine
from sleeptime.db.errors import (
    CorruptCheckpoint,
    DatabaseUnavailable,
    HeadConflict,
    InvalidInput,
    UnknownContext,
    UnknownVersion,
)
from sleeptime.db.migrate import current_revision, head_revision, require_current, upgrade
from sleeptime.db.records import (
    Anticipated,
    ApiKeyInfo,
    Checkpoint,
    CheckpointInfo,
    ContextInfo,
    Job,
    MessageRecord,
    Pending,
    Precomputed,
    RunInfo,
)
from sleeptime.db.store import Store
from sleeptime.db.text import normalize_question

__all__ = [
    "Anticipated",
    "ApiKeyInfo",
    "Checkpoint",
    "CheckpointInfo",
    "ContextInfo",
    "CorruptCheckpoint",
    "DatabaseUnavailable",
    "HeadConflict",
    "InvalidInput",
    "Job",
    "MessageRecord",
    "Pending",
    "Precomputed",
    "RunInfo",
    "Store",
    "UnknownContext",
    "UnknownVersion",
    "current_revision",
    "head_revision",
    "make_engine",
    "normalize_question",
    "require_current",
    "upgrade",
]
