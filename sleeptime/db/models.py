"""The schema: SQLAlchemy 2 typed declarative models. The initial Alembic revision creates exactly these tables."""

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# deterministic constraint names, so later migrations (and SQLite batch mode) can address them
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MESSAGE_ROLES = ("user", "assistant", "system", "tool")
ANTICIPATED_SOURCES = ("registered", "extracted", "query_log")
RUN_STATUSES = ("running", "published", "failed", "superseded", "abandoned")
JOB_STATUSES = ("queued", "running", "done", "failed")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on both backends: SQLite keeps no offset, so values are stored as UTC and re-tagged."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# the full-text index is raw DDL (migration 0003): FTS5 tables on SQLite, a generated tsvector column on PostgreSQL
SEARCH_TABLE_PREFIX = "messages_fts"
SEARCH_COLUMN = "content_tsv"
SEARCH_INDEX = "ix_messages_content_tsv"


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic's filter: the search index is not in the models, so schema comparisons leave it out."""
    if type_ == "table":
        return not (name or "").startswith(SEARCH_TABLE_PREFIX)
    return name not in (SEARCH_COLUMN, SEARCH_INDEX)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Context(Base):
    __tablename__ = "contexts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_activity_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # a version number, not a foreign key: the head and the checkpoint row are written in one transaction
    head_version: Mapped[int | None] = mapped_column(Integer)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("context_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    context_id: Mapped[int] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    n_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("context_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    context_id: Mapped[int] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    # the last message seq folded into this state; the tail is everything after it
    cursor_seq: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str] = mapped_column(String(256))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    # safetensors bytes; deferred so that listing versions never pulls the blobs
    payload: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConsolidationRun(Base):
    __tablename__ = "consolidation_runs"
    __table_args__ = (Index("ix_consolidation_runs_finished_at", "finished_at"),)  # trim_history deletes by age

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    context_id: Mapped[int] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"), index=True)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    from_seq: Mapped[int] = mapped_column(Integer)
    to_seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    published_version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)


class AnticipatedQuery(Base):
    __tablename__ = "anticipated_queries"
    __table_args__ = (UniqueConstraint("context_id", "normalized"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    context_id: Mapped[int] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(Text)
    normalized: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # the message an extracted question was read from (re-reading starts there); null for other sources
    source_seq: Mapped[int | None] = mapped_column(Integer)


class PrecomputedAnswer(Base):
    __tablename__ = "precomputed_answers"
    __table_args__ = (
        UniqueConstraint("context_id", "version", "normalized_question"),
        # answers belong to one checkpoint: pruning a checkpoint must remove them first
        ForeignKeyConstraint(["context_id", "version"], ["checkpoints.context_id", "checkpoints.version"]),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    context_id: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer)
    normalized_question: Mapped[str] = mapped_column(Text)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # seqs of the messages the answer read (re-reading); null for an answer from memory alone
    sources: Mapped[list[int] | None] = mapped_column(JSON)
    # the model's own probability of the answer, in [0, 1]; null for an answer written before it was kept
    confidence: Mapped[float | None] = mapped_column(Float)


class QueryLog(Base):
    __tablename__ = "query_log"
    __table_args__ = (
        Index("ix_query_log_context_id_created_at", "context_id", "created_at"),
        Index("ix_query_log_created_at", "created_at"),  # trim_history deletes by age across contexts
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    context_id: Mapped[int] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"))
    question: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float] = mapped_column(Float)
    version: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # a burst of triggers for one (kind, context) collapses into one queued job
        Index(
            "uq_jobs_queued_kind_context",
            "kind",
            "context_id",
            unique=True,
            sqlite_where=text("status = 'queued'"),
            postgresql_where=text("status = 'queued'"),
        ),
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_status_updated_at", "status", "updated_at"),  # trim_history: finished jobs by age
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    context_id: Mapped[int] = mapped_column(ForeignKey("contexts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # sha256 of the plaintext; the plaintext is shown once at creation and never stored
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
