"""What the Store returns: small frozen dataclasses, detached from any session."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ContextInfo:
    name: str
    created_at: datetime
    last_activity_at: datetime
    head_version: int | None
    # last message seq folded into the head checkpoint (0 without one); the tail starts after it
    cursor_seq: int
    last_seq: int


@dataclass(frozen=True)
class MessageRecord:
    seq: int
    role: str
    content: str
    n_tokens: int
    created_at: datetime
    rank: float = 0.0  # how well it matched a full-text search, higher is better (0 outside a search)


@dataclass(frozen=True)
class Pending:
    """Messages after the head cursor: what the next consolidation will consume."""

    messages: int
    tokens: int
    cursor_seq: int


@dataclass(frozen=True)
class CheckpointInfo:
    context: str
    version: int
    parent_version: int | None
    cursor_seq: int
    model_id: str
    sha256: str
    size_bytes: int
    meta: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Checkpoint(CheckpointInfo):
    """A checkpoint with its payload, verified against its sha256."""

    payload: bytes


@dataclass(frozen=True)
class RunInfo:
    id: int
    context: str
    parent_version: int | None
    from_seq: int
    to_seq: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    published_version: int | None
    error: str | None


@dataclass(frozen=True)
class Anticipated:
    question: str
    normalized: str
    source: str
    created_at: datetime
    source_seq: int | None = None  # the message an extracted question was read from


@dataclass(frozen=True)
class Precomputed:
    version: int
    question: str
    normalized_question: str
    answer: str
    created_at: datetime
    sources: tuple[int, ...] = ()  # seqs of the messages the answer read (re-reading); () from memory alone
    confidence: float | None = None  # the model's own probability of the answer; None: written before it was kept


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    context: str
    status: str
    attempts: int
    payload: dict[str, Any] | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class ApiKeyInfo:
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
