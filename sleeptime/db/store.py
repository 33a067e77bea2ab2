"""Store: every database operation sleeptime needs, by name. No Session, row or SQL leaves this module.

Writes run in short transactions that take their locks up front (BEGIN IMMEDIATE on SQLite, row locks on
PostgreSQL), so several processes may write one database: they queue rather than fail.
"""

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    bindparam,
    column,
    delete,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    table,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, aliased, sessionmaker, undefer

from sleeptime.db import models as m
from sleeptime.db.engine import make_engine, write_engine
from sleeptime.db.errors import CorruptCheckpoint, HeadConflict, InvalidInput, UnknownContext, UnknownVersion
from sleeptime.db.locks import PassLocks
from sleeptime.db.migrate import require_current, upgrade
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
from sleeptime.db.text import normalize_question, search_terms, shown

log = logging.getLogger(__name__)

CONTEXT_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
MAX_QUESTION_BYTES = 8192
API_KEY_PREFIX = "st_"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _check_name(what: str, name: object) -> str:
    # "." and ".." read as paths (in a URL they would even move up a level): refused
    if not isinstance(name, str) or not CONTEXT_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidInput(
            f"invalid {what} name {shown(name)}: use 1-128 characters from A-Z a-z 0-9 _ . : @ -, not . or .."
        )
    return name


# versions are 32-bit integer columns: a larger number cannot name a stored version (and would overflow the driver)
MAX_VERSION = 2**31 - 1


def _check_version(name: str, version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise UnknownVersion(f"context {shown(name)} has no checkpoint version {shown(version)}")
    return version


def _check_text(what: str, value: object, max_bytes: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what}: expected text, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInput(f"{what} is empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{what} is not valid UTF-8 (lone surrogate)") from None
    if size > max_bytes:
        raise InvalidInput(f"{what} is {size} bytes, over the limit of {max_bytes}")
    # PostgreSQL text cannot hold NUL; refuse it everywhere so both backends agree
    if "\x00" in value:
        raise InvalidInput(f"{what} contains a NUL character")
    return value


def _json(what: str, value: Any) -> Any:
    """The value as JSON round-trips it, so every backend and reader sees the same thing."""
    try:
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} is not JSON: {exc}") from None


def _check_seconds(what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidInput(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _precomputed(row: m.PrecomputedAnswer) -> Precomputed:
    sources = tuple(row.sources or ())
    return Precomputed(
        row.version, row.question, row.normalized_question, row.answer, row.created_at, sources, row.confidence
    )


def _check_confidence(question: str, confidence: object) -> float | None:
    # NaN fails the range test too: no backend would give it back the same
    if confidence is None:
        return None
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0.0 <= confidence <= 1.0:
        raise InvalidInput(f"confidence of the answer to {question!r} must be a number in [0, 1], got {confidence!r}")
    return float(confidence)


StoredAnswer = tuple[str, str, list[int] | None, float | None]


def _check_answers(answers: Iterable[Sequence[Any]]) -> dict[str, StoredAnswer]:
    """Answers as (question, normalized, answer[, source seqs[, confidence]]), keyed by normalized question (a
    repeat keeps its first answer)."""
    unique: dict[str, StoredAnswer] = {}
    for item in answers:
        if len(item) not in (3, 4, 5):
            raise InvalidInput("an answer is (question, normalized, answer[, source seqs[, confidence]])")
        question, normalized, answer = item[:3]
        sources = item[3] if len(item) >= 4 else None
        _check_text("anticipated question", question, MAX_QUESTION_BYTES)
        _check_text("normalized question", normalized, MAX_QUESTION_BYTES)
        if not isinstance(answer, str) or "\x00" in answer:
            raise InvalidInput(f"answer to {question!r} must be text without NUL")
        if sources is not None:
            if not all(isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 for seq in sources):
                raise InvalidInput(f"sources of the answer to {question!r} must be message seqs, got {sources!r}")
            sources = sorted(set(sources))
        confidence = _check_confidence(question, item[4] if len(item) == 5 else None)
        unique.setdefault(normalized, (question, answer, sources, confidence))
    return unique


def _answer_rows(context_id: int, version: int, answers: dict, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "context_id": context_id,
            "version": version,
            "normalized_question": normalized,
            "question": question,
            "answer": answer,
            "sources": sources,
            "confidence": confidence,
            "created_at": now,
        }
        for normalized, (question, answer, sources, confidence) in answers.items()
    ]


def _context_and_answer_query() -> Any:
    # built once: composing the statement costs about as much as running it
    answer = m.PrecomputedAnswer
    last_seq = select(func.coalesce(func.max(m.Message.seq), 0)).where(m.Message.context_id == m.Context.id)
    return (
        select(
            m.Context.name,
            m.Context.created_at,
            m.Context.last_activity_at,
            m.Context.head_version,
            m.Checkpoint.cursor_seq.label("cursor"),
            last_seq.scalar_subquery().label("last"),
            answer.question,
            answer.answer,
            answer.created_at.label("answered_at"),
            answer.sources,
            answer.confidence,
        )
        .outerjoin(
            m.Checkpoint,
            and_(m.Checkpoint.context_id == m.Context.id, m.Checkpoint.version == m.Context.head_version),
        )
        .outerjoin(
            answer,
            and_(
                answer.context_id == m.Context.id,
                answer.version == m.Context.head_version,
                answer.normalized_question == bindparam("normalized"),
            ),
        )
        .where(m.Context.name == bindparam("name"))
    )


_CONTEXT_AND_ANSWER = _context_and_answer_query()


def _questions_due() -> Any:
    """True for a context with a head and questions since its last pass: asked and answered online, or registered.
    The next pass answers them (re-reading), even when no message is new."""
    last_pass = (
        select(func.max(m.ConsolidationRun.started_at))
        .where(m.ConsolidationRun.context_id == m.Context.id)
        .scalar_subquery()
    )
    since = or_(last_pass.is_(None), m.QueryLog.created_at > last_pass)
    asked = exists().where(m.QueryLog.context_id == m.Context.id, m.QueryLog.source == "online", since)
    registered_since = or_(last_pass.is_(None), m.AnticipatedQuery.created_at > last_pass)
    registered = exists().where(
        m.AnticipatedQuery.context_id == m.Context.id, m.AnticipatedQuery.source == "registered", registered_since
    )
    return and_(m.Context.head_version.is_not(None), or_(asked, registered))
_FTS = table("messages_fts", column("rowid"))
_MESSAGE_COLUMNS = (m.Message.seq, m.Message.role, m.Message.content, m.Message.n_tokens, m.Message.created_at)
_IN_RANGE = (m.Message.context_id == bindparam("context_id"), m.Message.seq <= bindparam("up_to"))
# bm25 is lower for a better match: negated, both backends rank higher-is-better
_BM25 = (-func.bm25(literal_column("messages_fts"))).label("rank")
text_search_sqlite = (
    select(*_MESSAGE_COLUMNS, _BM25)
    .join(_FTS, _FTS.c.rowid == m.Message.id)
    .where(literal_column("messages_fts").op("MATCH")(bindparam("query")), *_IN_RANGE)
    .order_by(_BM25.desc(), m.Message.seq.desc())
    .limit(bindparam("limit"))
)
_TSQUERY = func.to_tsquery(literal_column("'english'"), bindparam("query"))
_TSVECTOR = literal_column("messages.content_tsv")
_TS_RANK = func.ts_rank(_TSVECTOR, _TSQUERY).label("rank")
text_search_pg = (
    select(*_MESSAGE_COLUMNS, _TS_RANK)
    .where(_TSVECTOR.op("@@")(_TSQUERY), *_IN_RANGE)
    .order_by(_TS_RANK.desc(), m.Message.seq.desc())
    .limit(bindparam("limit"))
)

_LIVE_KEY = select(m.ApiKey.name).where(m.ApiKey.key_hash == bindparam("key_hash"), m.ApiKey.revoked_at.is_(None))
# revoked keys count: keys are never deleted, so once one was created the API stays closed (invariant 9)
_ANY_KEY_EVER = select(exists().where(m.ApiKey.id.is_not(None)))


class Store:
    """The database, by named operations. Build it from a SQLAlchemy URL or an engine."""

    def __init__(self, target: str | URL | Engine, *, clock: Callable[[], datetime] = utcnow):
        self._owns_engine = not isinstance(target, Engine)
        self._engine = make_engine(target) if self._owns_engine else target
        self._clock = clock
        self._read = sessionmaker(self._engine, expire_on_commit=False)
        self._write = sessionmaker(write_engine(self._engine), expire_on_commit=False)
        self.backend: str = self._engine.dialect.name
        self.url: URL = self._engine.url
        self._pass_locks = PassLocks(self._engine)

    def migrate(self) -> None:
        """Create or upgrade the schema (Alembic, to head)."""
        upgrade(self._engine)

    def require_schema(self) -> None:
        """Raise SleeptimeError unless the schema is at the revision this code needs."""
        require_current(self._engine)

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> "Store":  # noqa: PYI034 Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> datetime:
        return self._clock()

    def _insert(self, model: type[m.Base]) -> Any:
        # both dialects offer INSERT .. ON CONFLICT, under their own construct
        return (postgresql.insert if self.backend == "postgresql" else sqlite.insert)(model)

    def _context(self, s: Session, name: str, *, lock: bool = False) -> m.Context:
        query = select(m.Context).where(m.Context.name == name)
        if lock:
            # FOR NO KEY UPDATE: serialises writers of this context without blocking inserts that reference it
            query = query.with_for_update(key_share=True)
        ctx = s.scalars(query).one_or_none()
        if ctx is None:
            raise UnknownContext(f"unknown context {shown(name)}")
        return ctx

    def _create_context(self, s: Session, name: str) -> None:
        now = self._now()
        s.execute(
            self._insert(m.Context)
            .values(name=name, created_at=now, last_activity_at=now, head_version=None)
            .on_conflict_do_nothing(index_elements=["name"])
        )

    def _last_seq(self, s: Session, context_id: int) -> int:
        return s.scalar(select(func.coalesce(func.max(m.Message.seq), 0)).where(m.Message.context_id == context_id))

    def _head_cursor(self, s: Session, ctx: m.Context) -> int:
        if ctx.head_version is None:
            return 0
        return s.scalar(
            select(m.Checkpoint.cursor_seq).where(
                m.Checkpoint.context_id == ctx.id, m.Checkpoint.version == ctx.head_version
            )
        )

    # contexts and messages

    def _contexts(self, s: Session, name: str | None = None) -> list[ContextInfo]:
        last_seq = select(func.coalesce(func.max(m.Message.seq), 0)).where(m.Message.context_id == m.Context.id)
        query = (
            select(m.Context, m.Checkpoint.cursor_seq, last_seq.scalar_subquery())
            .outerjoin(
                m.Checkpoint,
                and_(m.Checkpoint.context_id == m.Context.id, m.Checkpoint.version == m.Context.head_version),
            )
            .order_by(m.Context.name)
        )
        if name is not None:
            query = query.where(m.Context.name == name)
        return [
            ContextInfo(ctx.name, ctx.created_at, ctx.last_activity_at, ctx.head_version, cursor or 0, last)
            for ctx, cursor, last in s.execute(query)
        ]

    def ensure_context(self, name: str) -> ContextInfo:
        """Create the context if it does not exist; return it either way."""
        _check_name("context", name)
        with self._write.begin() as s:
            self._create_context(s, name)
        return self.get_context(name)

    def get_context(self, name: str) -> ContextInfo:
        with self._read() as s:
            found = self._contexts(s, name)
        if not found:
            raise UnknownContext(f"unknown context {shown(name)}")
        return found[0]

    def list_contexts(self) -> list[ContextInfo]:
        with self._read() as s:
            return self._contexts(s)

    def append_messages(
        self,
        name: str,
        messages: Sequence[tuple[str, str, int]],
        *,
        max_message_bytes: int = 65536,
        create: bool = True,
    ) -> list[int]:
        """Append (role, content, n_tokens) messages in one transaction; returns their seqs.

        Every message is checked before anything is written: one bad message and nothing is stored.
        """
        if create:
            _check_name("context", name)
        if not messages:
            raise InvalidInput("no messages to append")
        for i, message in enumerate(messages, 1):
            if not isinstance(message, tuple | list) or len(message) != 3:
                raise InvalidInput(f"message {i}: expected (role, content, n_tokens)")
            role, content, n_tokens = message
            if role not in m.MESSAGE_ROLES:
                raise InvalidInput(f"message {i}: role {role!r} is not one of {', '.join(m.MESSAGE_ROLES)}")
            _check_text(f"message {i} content", content, max_message_bytes)
            if not isinstance(n_tokens, int) or isinstance(n_tokens, bool) or n_tokens < 0:
                raise InvalidInput(f"message {i}: n_tokens must be a non-negative integer, got {n_tokens!r}")

        now = self._now()
        with self._write.begin() as s:
            if create:
                self._create_context(s, name)
            ctx = self._context(s, name, lock=True)
            first = self._last_seq(s, ctx.id) + 1
            seqs = list(range(first, first + len(messages)))
            rows = [
                {"context_id": ctx.id, "seq": seq, "role": role, "content": content, "n_tokens": n_tokens,
                 "created_at": now}
                for seq, (role, content, n_tokens) in zip(seqs, messages)
            ]
            s.execute(insert(m.Message), rows)
            s.execute(update(m.Context).where(m.Context.id == ctx.id).values(last_activity_at=now))
        return seqs

    def messages_after(self, name: str, seq: int, limit: int | None = None) -> list[MessageRecord]:
        """Messages with seq > `seq`, in order."""
        with self._read() as s:
            ctx = self._context(s, name)
            query = (
                select(m.Message)
                .where(m.Message.context_id == ctx.id, m.Message.seq > seq)
                .order_by(m.Message.seq)
                .limit(limit)
            )
            return [
                MessageRecord(row.seq, row.role, row.content, row.n_tokens, row.created_at) for row in s.scalars(query)
            ]

    def pending(self, name: str, after: int | None = None) -> Pending:
        """Messages and tokens after the head cursor (or after seq `after`)."""
        with self._read() as s:
            ctx = self._context(s, name)
            cursor = self._head_cursor(s, ctx) if after is None else after
            count, tokens = s.execute(
                select(func.count(), func.coalesce(func.sum(m.Message.n_tokens), 0)).where(
                    m.Message.context_id == ctx.id, m.Message.seq > cursor
                )
            ).one()
        return Pending(count, tokens, cursor)

    def questions_due(self, name: str) -> bool:
        """Whether questions arrived since the context's last pass (see idle_contexts): a pass is due for them."""
        with self._read() as s:
            self._context(s, name)
            return bool(s.scalar(select(exists().where(m.Context.name == name, _questions_due()))))

    def messages_at(self, name: str, seqs: Iterable[int]) -> list[MessageRecord]:
        """The messages with these seqs, in seq order (seqs with no message are left out)."""
        wanted = sorted({seq for seq in seqs if isinstance(seq, int)})
        if not wanted:
            return []
        with self._read() as s:
            ctx = self._context(s, name)
            query = (
                select(m.Message)
                .where(m.Message.context_id == ctx.id, m.Message.seq.in_(wanted))
                .order_by(m.Message.seq)
            )
            return [
                MessageRecord(row.seq, row.role, row.content, row.n_tokens, row.created_at) for row in s.scalars(query)
            ]

    def search_messages(
        self, name: str, text: str, limit: int = 8, *, up_to_seq: int | None = None
    ) -> list[MessageRecord]:
        """The context's messages that best match `text` (full-text index, any of its words), best first, each with
        its `rank` (higher is better); among equal matches the newest first, since a fact can be updated. Up to `limit`, at seq <= up_to_seq when given.
        """
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"limit must be a positive integer, got {limit!r}")
        terms = search_terms(_check_text("search text", text, MAX_QUESTION_BYTES))
        if not terms:
            return []
        params: dict[str, Any] = {"up_to": up_to_seq if up_to_seq is not None else 2**31 - 1, "limit": limit}
        if self.backend == "postgresql":
            # the terms are \w+ words, so they need no quoting inside to_tsquery
            params["query"] = " | ".join(terms)
            statement = text_search_pg
        else:
            params["query"] = " OR ".join(f'"{term}"' for term in terms)
            statement = text_search_sqlite
        with self._read() as s:
            ctx = self._context(s, name)
            rows = s.execute(statement, {**params, "context_id": ctx.id}).all()
        return [
            MessageRecord(row.seq, row.role, row.content, row.n_tokens, row.created_at, float(row.rank))
            for row in rows
        ]

    def touch(self, name: str) -> None:
        """Record activity: the idle sweep leaves the context alone for idle_after from now."""
        with self._write.begin() as s:
            ctx = self._context(s, name)
            s.execute(update(m.Context).where(m.Context.id == ctx.id).values(last_activity_at=self._now()))

    def idle_contexts(
        self, idle_after_seconds: float, now: datetime | None = None, *, max_wait_seconds: float | None = None
    ) -> list[str]:
        """Contexts with messages after their head cursor, or with questions since their last pass (asked and
        answered online, or registered), and either no message or query for idle_after_seconds, or (with
        max_wait_seconds) a pending message that old: a context queried without pause still sleeps."""
        now = now or self._now()
        if now.tzinfo is None:
            raise InvalidInput("idle_contexts needs an aware datetime (UTC)")
        cutoff = now - timedelta(seconds=idle_after_seconds)
        cursor = func.coalesce(m.Checkpoint.cursor_seq, 0)
        has_pending = exists().where(m.Message.context_id == m.Context.id, m.Message.seq > cursor)
        ready = m.Context.last_activity_at <= cutoff
        if max_wait_seconds is not None:
            overdue = now - timedelta(seconds=max_wait_seconds)
            waited = exists().where(
                m.Message.context_id == m.Context.id, m.Message.seq > cursor, m.Message.created_at <= overdue
            )
            ready = or_(ready, waited)
        query = (
            select(m.Context.name)
            .outerjoin(
                m.Checkpoint,
                and_(m.Checkpoint.context_id == m.Context.id, m.Checkpoint.version == m.Context.head_version),
            )
            .where(ready, or_(has_pending, _questions_due()))
            .order_by(m.Context.last_activity_at, m.Context.name)
        )
        with self._read() as s:
            return list(s.scalars(query))

    # checkpoints

    def _info(self, name: str, row: m.Checkpoint) -> CheckpointInfo:
        return CheckpointInfo(
            name,
            row.version,
            row.parent_version,
            row.cursor_seq,
            row.model_id,
            row.sha256,
            row.size_bytes,
            row.meta,
            row.created_at,
        )

    def _verified(self, name: str, row: m.Checkpoint) -> Checkpoint:
        payload = bytes(row.payload)
        actual = _sha256(payload)
        if actual != row.sha256:
            raise CorruptCheckpoint(
                f"checkpoint {row.version} of context {name!r} is corrupt: "
                f"sha256 {actual[:12]}... does not match the stored {row.sha256[:12]}..."
            )
        info = self._info(name, row)
        return Checkpoint(**vars(info), payload=payload)

    def _checkpoint_row(self, s: Session, ctx: m.Context, version: int, *, payload: bool) -> m.Checkpoint | None:
        query = select(m.Checkpoint).where(m.Checkpoint.context_id == ctx.id, m.Checkpoint.version == version)
        if payload:
            query = query.options(undefer(m.Checkpoint.payload))
        return s.scalars(query).one_or_none()

    def publish_checkpoint(
        self,
        name: str,
        parent_version: int | None,
        cursor_seq: int,
        model_id: str,
        payload: bytes,
        meta: dict[str, Any],
        answers: Iterable[Sequence[Any]] = (),
        run_id: int | None = None,
    ) -> CheckpointInfo:
        """Publish a checkpoint as the new head, with its precomputed answers, in one transaction.

        The head moves from `parent_version` (None for the first checkpoint) to max(version) + 1 by compare-and-swap:
        if another publish or a rollback moved it first, HeadConflict is raised and nothing is written. Answers are
        (question, normalized, answer[, source seqs[, confidence in [0, 1]]]); a repeated normalized question keeps
        its first answer.
        """
        if not isinstance(payload, bytes | bytearray | memoryview) or len(payload) == 0:
            raise InvalidInput("checkpoint payload must be non-empty bytes")
        payload = bytes(payload)
        meta = _json("checkpoint meta", meta)
        unique_answers = _check_answers(answers)

        now = self._now()
        with self._write.begin() as s:
            ctx = self._context(s, name, lock=True)
            if run_id is not None and not s.scalar(
                select(exists().where(m.ConsolidationRun.id == run_id, m.ConsolidationRun.context_id == ctx.id))
            ):
                # forgotten while the pass ran (its runs went with it), maybe created again under the same name
                raise UnknownContext(f"context {name!r} was forgotten while this pass ran: nothing is published")
            if ctx.head_version != parent_version:
                raise HeadConflict(
                    f"context {name!r}: the head is at {ctx.head_version}, not at the expected parent "
                    f"{parent_version} (another consolidation or a rollback moved it)"
                )
            parent_cursor = self._head_cursor(s, ctx)
            last_seq = self._last_seq(s, ctx.id)
            if not parent_cursor <= cursor_seq <= last_seq:
                raise InvalidInput(
                    f"cursor {cursor_seq} is outside [{parent_cursor}, {last_seq}] (parent cursor, last message)"
                )
            top = s.scalar(select(func.max(m.Checkpoint.version)).where(m.Checkpoint.context_id == ctx.id))
            version = (top or 0) + 1
            s.execute(
                insert(m.Checkpoint).values(
                    context_id=ctx.id,
                    version=version,
                    parent_version=parent_version,
                    cursor_seq=cursor_seq,
                    model_id=model_id,
                    sha256=_sha256(payload),
                    size_bytes=len(payload),
                    payload=payload,
                    meta=meta,
                    created_at=now,
                )
            )
            # the lock above already serialises publishers; the CAS in the WHERE keeps that true on its own
            moved = s.execute(
                update(m.Context)
                .where(m.Context.id == ctx.id, m.Context.head_version.is_not_distinct_from(parent_version))
                .values(head_version=version)
            )
            if moved.rowcount != 1:
                raise HeadConflict(f"context {name!r}: the head moved while publishing")
            if unique_answers:
                s.execute(insert(m.PrecomputedAnswer), _answer_rows(ctx.id, version, unique_answers, now))
            if run_id is not None:
                self._finish_run(s, run_id, "published", published_version=version, error=None, context_id=ctx.id)
            row = self._checkpoint_row(s, ctx, version, payload=False)
            return self._info(name, row)

    def add_answers(
        self, name: str, version: int, answers: Iterable[Sequence[Any]], run_id: int | None = None
    ) -> int:
        """Precomputed answers for questions the checkpoint `version` has none for, while it is still the head (a
        pass over new questions alone); answers it already has stand. Raises HeadConflict when the head moved,
        and then writes nothing. Returns how many were added."""
        unique_answers = _check_answers(answers)
        now = self._now()
        with self._write.begin() as s:
            ctx = self._context(s, name, lock=True)
            if ctx.head_version != version:
                raise HeadConflict(f"context {name!r}: the head is at {ctx.head_version}, not at {version}")
            have = set(
                s.scalars(
                    select(m.PrecomputedAnswer.normalized_question).where(
                        m.PrecomputedAnswer.context_id == ctx.id, m.PrecomputedAnswer.version == version
                    )
                )
            )
            new = {k: v for k, v in unique_answers.items() if k not in have}
            if new:
                s.execute(insert(m.PrecomputedAnswer), _answer_rows(ctx.id, version, new, now))
            if run_id is not None:
                self._finish_run(s, run_id, "published", published_version=version, error=None, context_id=ctx.id)
            return len(new)

    def load_checkpoint(self, name: str, version: int | None = None) -> Checkpoint:
        """The checkpoint `version` (default: the head), verified; raises UnknownVersion or CorruptCheckpoint."""
        with self._read() as s:
            ctx = self._context(s, name)
            wanted = ctx.head_version if version is None else _check_version(name, version)
            if wanted is None:
                raise UnknownVersion(f"context {name!r} has no checkpoint yet")
            row = self._checkpoint_row(s, ctx, wanted, payload=True)
            if row is None:
                raise UnknownVersion(f"context {name!r} has no checkpoint version {wanted}")
            return self._verified(name, row)

    def load_checkpoint_with_fallback(self, name: str) -> Checkpoint | None:
        """The newest valid checkpoint on the head's ancestry (head, parent, ...): a corrupt head is skipped
        with a warning so the previous version keeps serving. `.version` says which one is served.

        None when the context has no checkpoint; CorruptCheckpoint when no ancestor still stored is valid.
        """
        with self._read() as s:
            ctx = self._context(s, name)
            version, corrupt = ctx.head_version, []
            while version is not None:
                row = self._checkpoint_row(s, ctx, version, payload=True)
                if row is None:
                    # pruned: the ancestry ends here
                    break
                try:
                    checkpoint = self._verified(name, row)
                except CorruptCheckpoint as exc:
                    log.warning("%s", exc)
                    corrupt.append(version)
                    version = row.parent_version
                    continue
                if corrupt:
                    log.warning("context %r: serving checkpoint %d instead of corrupt %s", name, version, corrupt)
                return checkpoint
        if not corrupt:
            return None
        raise CorruptCheckpoint(f"context {name!r}: no valid checkpoint at or below the head (corrupt: {corrupt})")

    def head_checkpoint_meta(self, name: str) -> CheckpointInfo | None:
        """The head's metadata without its payload; None before the first checkpoint."""
        with self._read() as s:
            ctx = self._context(s, name)
            if ctx.head_version is None:
                return None
            return self._info(name, self._checkpoint_row(s, ctx, ctx.head_version, payload=False))

    def list_checkpoints(self, name: str) -> list[CheckpointInfo]:
        """All stored versions, newest first."""
        with self._read() as s:
            ctx = self._context(s, name)
            rows = s.scalars(
                select(m.Checkpoint).where(m.Checkpoint.context_id == ctx.id).order_by(m.Checkpoint.version.desc())
            )
            return [self._info(name, row) for row in rows]

    def rollback(self, name: str, version: int) -> CheckpointInfo:
        """Move the head to an existing, valid version. History is kept; a consolidation in flight loses its CAS."""
        _check_version(name, version)
        with self._write.begin() as s:
            ctx = self._context(s, name, lock=True)
            row = self._checkpoint_row(s, ctx, version, payload=True)
            if row is None:
                raise UnknownVersion(f"context {name!r} has no checkpoint version {version}")
            self._verified(name, row)
            s.execute(update(m.Context).where(m.Context.id == ctx.id).values(head_version=version))
            return self._info(name, row)

    def prune_checkpoints(self, name: str, keep: int) -> list[int]:
        """Delete all but the newest `keep` versions and the head; returns the deleted versions."""
        if not isinstance(keep, int) or keep < 1:
            raise InvalidInput(f"keep must be at least 1, got {keep!r}")
        with self._write.begin() as s:
            ctx = self._context(s, name, lock=True)
            versions = list(
                s.scalars(
                    select(m.Checkpoint.version)
                    .where(m.Checkpoint.context_id == ctx.id)
                    .order_by(m.Checkpoint.version.desc())
                )
            )
            doomed = [v for v in versions[keep:] if v != ctx.head_version]
            if doomed:
                s.execute(
                    delete(m.PrecomputedAnswer).where(
                        m.PrecomputedAnswer.context_id == ctx.id, m.PrecomputedAnswer.version.in_(doomed)
                    )
                )
                s.execute(
                    delete(m.Checkpoint).where(m.Checkpoint.context_id == ctx.id, m.Checkpoint.version.in_(doomed))
                )
        return doomed

    def forget(self, name: str) -> dict[str, int]:
        """Delete a context and everything that belongs to it, in one transaction; returns the rows deleted per
        table. On SQLite the deleted bytes are zeroed (secure_delete, set on every connection) and the WAL, which
        still holds earlier copies of the pages, is checkpointed and truncated. On PostgreSQL the rows are gone
        for every reader at commit; their bytes stay in the table files until VACUUM reuses the space (and in WAL
        archives and backups for as long as those are kept)."""
        with self._write.begin() as s:
            ctx = self._context(s, name, lock=True)
            deleted = {}
            # answers first: they reference their checkpoint
            for model in (
                m.PrecomputedAnswer, m.Checkpoint, m.AnticipatedQuery, m.QueryLog, m.ConsolidationRun, m.Job, m.Message
            ):
                deleted[model.__tablename__] = s.execute(delete(model).where(model.context_id == ctx.id)).rowcount
            s.execute(delete(m.Context).where(m.Context.id == ctx.id))
            deleted["contexts"] = 1
        if self.backend == "sqlite":
            self._truncate_wal()
        return deleted

    def _truncate_wal(self) -> None:
        # TRUNCATE waits (busy_timeout) for readers of older pages, copies the WAL into the file and empties it
        # on the driver's connection: SQLAlchemy would open a transaction around it, and a checkpoint inside one
        # cannot finish
        raw = self._engine.raw_connection()
        try:
            busy, _, _ = raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            raw.close()
        if busy:
            log.warning("the WAL could not be emptied (a reader held it); the next checkpoint overwrites it")

    # consolidation runs

    def start_run(self, name: str, parent_version: int | None, from_seq: int, to_seq: int) -> int:
        """Record a consolidation run over messages (from_seq, to_seq]; returns its id."""
        with self._write.begin() as s:
            ctx = self._context(s, name)
            return s.scalar(
                insert(m.ConsolidationRun)
                .values(
                    context_id=ctx.id,
                    parent_version=parent_version,
                    from_seq=from_seq,
                    to_seq=to_seq,
                    status="running",
                    started_at=self._now(),
                )
                .returning(m.ConsolidationRun.id)
            )

    def _finish_run(
        self,
        s: Session,
        run_id: int,
        status: str,
        *,
        published_version: int | None,
        error: str | None,
        context_id: int | None = None,
    ) -> None:
        if status not in ("published", "failed", "superseded"):
            raise InvalidInput(f"a run finishes as published, failed or superseded, not {status!r}")
        query = update(m.ConsolidationRun).where(m.ConsolidationRun.id == run_id)
        if context_id is not None:
            query = query.where(m.ConsolidationRun.context_id == context_id)
        done = s.execute(
            query.values(status=status, finished_at=self._now(), published_version=published_version, error=error)
        )
        if done.rowcount != 1:
            raise InvalidInput(f"unknown consolidation run {run_id}")

    def finish_run(
        self, run_id: int, status: str, *, published_version: int | None = None, error: str | None = None
    ) -> None:
        """Close a run as published, failed or superseded (publish_checkpoint does this itself given run_id)."""
        with self._write.begin() as s:
            self._finish_run(s, run_id, status, published_version=published_version, error=error)

    def abandon_runs(self, name: str, reason: str) -> list[int]:
        """Close the context's runs still marked running as abandoned: called when the queue hands a job of a dead
        worker (SIGKILL, lost machine) to another one, so no live process is running them. Returns their ids."""
        with self._write.begin() as s:
            ctx = self._context(s, name)
            running = m.ConsolidationRun.context_id == ctx.id, m.ConsolidationRun.status == "running"
            ids = list(s.scalars(select(m.ConsolidationRun.id).where(*running)))
            if ids:
                s.execute(
                    update(m.ConsolidationRun)
                    .where(m.ConsolidationRun.id.in_(ids))
                    .values(status="abandoned", finished_at=self._now(), error=reason)
                )
            return ids

    @contextmanager
    def pass_lock(self, name: str, stop: Any = None, poll_seconds: float = 0.1) -> Iterator[list[int] | None]:
        """Hold the context's consolidation lock for the block, waiting while another pass (in any process) holds
        it. Yields the ids of the runs it closed as abandoned (runs still "running" once the lock is held were left
        by a process that died, see db/locks.py), or None when `stop` (anything with `is_set()`) was set before the
        lock came free: the block then runs without it and must not consolidate."""
        while (release := self._pass_locks.try_acquire(name)) is None:
            if stop is not None and stop.is_set():
                break
            time.sleep(poll_seconds)
        try:
            yield None if release is None else self._abandon_dead_runs(name)
        finally:
            if release is not None:
                release()

    def _abandon_dead_runs(self, name: str) -> list[int]:
        try:
            return self.abandon_runs(name, "its process ended before finishing it (killed, or the machine was lost)")
        except UnknownContext:
            return []

    def reap_runs(self, name: str) -> list[int]:
        """Close as abandoned the context's runs still marked running whose process is gone: only when no pass
        holds the lock (a live pass keeps its run). Returns their ids."""
        release = self._pass_locks.try_acquire(name)
        if release is None:
            return []
        try:
            return self._abandon_dead_runs(name)
        finally:
            release()

    def _run_info(self, name: str, row: m.ConsolidationRun) -> RunInfo:
        return RunInfo(
            row.id,
            name,
            row.parent_version,
            row.from_seq,
            row.to_seq,
            row.status,
            row.started_at,
            row.finished_at,
            row.published_version,
            row.error,
        )

    def list_runs(self, name: str, limit: int | None = None) -> list[RunInfo]:
        """Runs of a context, newest first."""
        with self._read() as s:
            ctx = self._context(s, name)
            rows = s.scalars(
                select(m.ConsolidationRun)
                .where(m.ConsolidationRun.context_id == ctx.id)
                .order_by(m.ConsolidationRun.id.desc())
                .limit(limit)
            )
            return [self._run_info(name, row) for row in rows]

    def last_run(self, name: str) -> RunInfo | None:
        runs = self.list_runs(name, limit=1)
        return runs[0] if runs else None

    # anticipated queries, precomputed answers, query log

    def add_anticipated(
        self, name: str, questions: Iterable[str], source: str = "registered", *, source_seqs: Sequence[int] = ()
    ) -> int:
        """Register expected questions (deduplicated by normalized text); returns how many were new.

        source_seqs, one per question when given: the message each was read from (its provenance); a question
        read again from a newer message moves its provenance there, since the fact may have been updated."""
        if source not in m.ANTICIPATED_SOURCES:
            raise InvalidInput(f"source {source!r} is not one of {', '.join(m.ANTICIPATED_SOURCES)}")
        questions = list(questions)
        if source_seqs and len(source_seqs) != len(questions):
            raise InvalidInput("source_seqs needs one seq per question")
        pairs: dict[str, str] = {}
        provenance: dict[str, int] = {}
        for i, question in enumerate(questions):
            _check_text("question", question, MAX_QUESTION_BYTES)
            normalized = normalize_question(question)
            if not normalized:
                raise InvalidInput(f"question {question!r} has no words")
            pairs.setdefault(normalized, question.strip())
            if source_seqs:
                seq = source_seqs[i]
                if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
                    raise InvalidInput(f"source seq of {question!r} must be a message seq, got {seq!r}")
                provenance[normalized] = max(seq, provenance.get(normalized, 0))
        now = self._now()
        added = 0
        with self._write.begin() as s:
            ctx = self._context(s, name)
            for normalized, question in pairs.items():
                # RETURNING yields no row when the question was already there (rowcount is unreliable here)
                inserted = s.execute(
                    self._insert(m.AnticipatedQuery)
                    .values(
                        context_id=ctx.id,
                        question=question,
                        normalized=normalized,
                        source=source,
                        created_at=now,
                        source_seq=provenance.get(normalized),
                    )
                    .on_conflict_do_nothing(index_elements=["context_id", "normalized"])
                    .returning(m.AnticipatedQuery.id)
                )
                added += len(inserted.all())
                if normalized in provenance:
                    s.execute(
                        update(m.AnticipatedQuery)
                        .where(m.AnticipatedQuery.context_id == ctx.id, m.AnticipatedQuery.normalized == normalized)
                        .where(or_(m.AnticipatedQuery.source_seq.is_(None),
                                   m.AnticipatedQuery.source_seq < provenance[normalized]))
                        .values(source_seq=provenance[normalized])
                    )
        return added

    def list_anticipated(self, name: str) -> list[Anticipated]:
        with self._read() as s:
            ctx = self._context(s, name)
            rows = s.scalars(
                select(m.AnticipatedQuery)
                .where(m.AnticipatedQuery.context_id == ctx.id)
                .order_by(m.AnticipatedQuery.id)
            )
            return [Anticipated(row.question, row.normalized, row.source, row.created_at, row.source_seq) for row in rows]

    def get_precomputed(self, name: str, version: int, normalized: str) -> Precomputed | None:
        """The precomputed answer to a normalized question at a checkpoint version; one indexed lookup."""
        query = (
            select(m.PrecomputedAnswer)
            .join(m.Context, m.Context.id == m.PrecomputedAnswer.context_id)
            .where(
                m.Context.name == name,
                m.PrecomputedAnswer.version == version,
                m.PrecomputedAnswer.normalized_question == normalized,
            )
        )
        with self._read() as s:
            row = s.scalars(query).one_or_none()
            return None if row is None else _precomputed(row)

    def context_and_answer(self, name: str, normalized: str) -> tuple[ContextInfo, Precomputed | None]:
        """A context and its head's precomputed answer to a normalized question (None without one): the query
        path's lookup, one indexed read instead of get_context then get_precomputed. Raises UnknownContext."""
        with self._engine.connect() as c:
            row = c.execute(_CONTEXT_AND_ANSWER, {"name": name, "normalized": normalized}).one_or_none()
        if row is None:
            raise UnknownContext(f"unknown context {shown(name)}")
        ctx = ContextInfo(row.name, row.created_at, row.last_activity_at, row.head_version, row.cursor or 0, row.last)
        if row.answer is None:
            return ctx, None
        sources = tuple(row.sources or ())
        found = Precomputed(
            row.head_version, row.question, normalized, row.answer, row.answered_at, sources, row.confidence
        )
        return ctx, found

    def list_precomputed(self, name: str, version: int) -> list[Precomputed]:
        with self._read() as s:
            ctx = self._context(s, name)
            rows = s.scalars(
                select(m.PrecomputedAnswer)
                .where(m.PrecomputedAnswer.context_id == ctx.id, m.PrecomputedAnswer.version == version)
                .order_by(m.PrecomputedAnswer.id)
            )
            return [_precomputed(row) for row in rows]

    def log_query(
        self, name: str, question: str, source: str, latency_ms: float, version: int | None = None
    ) -> None:
        """Log an answered question (it feeds the next anticipation); a query counts as activity."""
        self.log_queries([(name, question, source, latency_ms, version)])

    def log_queries(self, rows: Sequence[tuple[str, str, str, float, int | None]]) -> None:
        """Log answered questions, (context, question, source, latency_ms, version) each, in one transaction (the
        front end's log writer batches them); each context's activity time moves to now. Raises UnknownContext
        and InvalidInput, and then writes nothing."""
        for _, question, source, _, _ in rows:
            _check_text("question", question, MAX_QUESTION_BYTES)
            if not isinstance(source, str) or not 0 < len(source) <= 16:
                raise InvalidInput(f"query source must be a short label, got {source!r}")
        if not rows:
            return
        names = {row[0] for row in rows}
        now = self._now()
        with self._write.begin() as s:
            ids = dict(s.execute(select(m.Context.name, m.Context.id).where(m.Context.name.in_(names))).all())
            if missing := sorted(names - ids.keys()):
                raise UnknownContext(f"unknown context {shown(missing[0])}")
            s.execute(
                insert(m.QueryLog),
                [
                    {
                        "context_id": ids[name],
                        "question": question,
                        "source": source,
                        "latency_ms": float(latency_ms),
                        "version": version,
                        "created_at": now,
                    }
                    for name, question, source, latency_ms, version in rows
                ],
            )
            s.execute(update(m.Context).where(m.Context.id.in_(ids.values())).values(last_activity_at=now))

    def recent_questions(self, name: str, limit: int = 50) -> list[str]:
        """Distinct logged questions, most recently asked first."""
        with self._read() as s:
            ctx = self._context(s, name)
            return list(
                s.scalars(
                    select(m.QueryLog.question)
                    .where(m.QueryLog.context_id == ctx.id)
                    .group_by(m.QueryLog.question)
                    .order_by(func.max(m.QueryLog.id).desc())
                    .limit(limit)
                )
            )

    # the embedded job queue

    def _job(self, row: m.Job, context: str) -> Job:
        return Job(
            row.id,
            row.kind,
            context,
            row.status,
            row.attempts,
            row.payload,
            row.lease_owner,
            row.lease_expires_at,
            row.error,
        )

    def enqueue(self, kind: str, context: str, payload: dict[str, Any] | None = None) -> int:
        """Queue a job; while one (kind, context) job is queued, more triggers return its id (the payload of the
        first one stands)."""
        if not isinstance(kind, str) or not 0 < len(kind) <= 32:
            raise InvalidInput(f"job kind must be a short label, got {kind!r}")
        payload = _json("job payload", payload)
        now = self._now()
        with self._write.begin() as s:
            ctx = self._context(s, context)
            s.execute(
                self._insert(m.Job)
                .values(
                    kind=kind,
                    context_id=ctx.id,
                    status="queued",
                    attempts=0,
                    payload=payload,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=["kind", "context_id"], index_where=text("status = 'queued'"))
            )
            return s.scalar(
                select(m.Job.id).where(m.Job.kind == kind, m.Job.context_id == ctx.id, m.Job.status == "queued")
            )

    def claim(
        self, worker_id: str, lease_seconds: float, *, max_attempts: int = 5, kind: str | None = None
    ) -> Job | None:
        """Take the oldest runnable job (of `kind`, when given) and lease it to worker_id, or None.

        Runnable: queued, or running with an expired lease (its worker died). One job per context runs at a time.
        A job whose lease expired max_attempts times is marked failed instead of being handed out again.
        """
        lease = timedelta(seconds=_check_seconds("lease", lease_seconds))
        now = self._now()
        other = aliased(m.Job)

        def live_lease_beside(job_id: Any, context_id: Any) -> Any:
            return and_(
                other.context_id == context_id,
                other.id != job_id,
                other.status == "running",
                other.lease_expires_at > now,
            )

        context_busy = exists().where(live_lease_beside(m.Job.id, m.Job.context_id))
        candidates = (
            select(m.Job, m.Context.name)
            .join(m.Context, m.Context.id == m.Job.context_id)
            .where(
                or_(m.Job.status == "queued", and_(m.Job.status == "running", m.Job.lease_expires_at <= now)),
                ~context_busy,
                true() if kind is None else m.Job.kind == kind,
            )
            .order_by(m.Job.id)
            .limit(1)
            # PostgreSQL: concurrent claimers skip each other's rows; SQLite: BEGIN IMMEDIATE already serialises
            .with_for_update(skip_locked=True, of=m.Job)
        )
        with self._write.begin() as s:
            while True:
                found = s.execute(candidates).one_or_none()
                if found is None:
                    return None
                job, context = found
                if job.status == "running" and job.attempts >= max_attempts:
                    job.status, job.error, job.updated_at = "failed", f"lease expired {job.attempts} times", now
                    s.flush()
                    continue
                # two claimers of different jobs of one context: the context row lock makes the second see the first
                self._context(s, context, lock=True)
                if s.scalar(select(exists().where(live_lease_beside(job.id, job.context_id)))):
                    return None
                job.status, job.lease_owner = "running", worker_id
                job.lease_expires_at = now + lease
                job.attempts += 1
                job.updated_at = now
                s.flush()
                return self._job(job, context)

    def heartbeat(self, job_id: int, worker_id: str, lease_seconds: float) -> bool:
        """Extend the lease; False when the job is no longer this worker's (reclaimed after expiry, or finished)."""
        lease = timedelta(seconds=_check_seconds("lease", lease_seconds))
        now = self._now()
        with self._write.begin() as s:
            done = s.execute(
                update(m.Job)
                .where(m.Job.id == job_id, m.Job.status == "running", m.Job.lease_owner == worker_id)
                .values(lease_expires_at=now + lease, updated_at=now)
            )
            return done.rowcount == 1

    def _settle(self, job_id: int, worker_id: str | None, **values: Any) -> bool:
        query = update(m.Job).where(m.Job.id == job_id, m.Job.status == "running")
        if worker_id is not None:
            query = query.where(m.Job.lease_owner == worker_id)
        with self._write.begin() as s:
            return s.execute(query.values(updated_at=self._now(), lease_expires_at=None, **values)).rowcount == 1

    def complete(self, job_id: int, worker_id: str | None = None) -> bool:
        """Mark a running job done; with worker_id, only if that worker still holds it."""
        return self._settle(job_id, worker_id, status="done", error=None)

    def fail(self, job_id: int, error: str, worker_id: str | None = None) -> bool:
        """Mark a running job failed with an error message."""
        return self._settle(job_id, worker_id, status="failed", error=str(error))

    def list_jobs(self, context: str | None = None, status: str | None = None) -> list[Job]:
        query = select(m.Job, m.Context.name).join(m.Context, m.Context.id == m.Job.context_id).order_by(m.Job.id)
        if context is not None:
            query = query.where(m.Context.name == context)
        if status is not None:
            query = query.where(m.Job.status == status)
        with self._read() as s:
            return [self._job(job, name) for job, name in s.execute(query)]

    def trim_history(self, keep: timedelta) -> dict[str, int]:
        """Delete bookkeeping that only grows: finished jobs, query-log rows, and finished consolidation runs
        (each context keeps its newest run), all older than `keep`. Messages and checkpoints are never touched
        here. Returns the number of rows deleted per table."""
        if not isinstance(keep, timedelta) or keep <= timedelta(0):
            raise InvalidInput(f"keep must be a positive timedelta, got {keep!r}")
        older_than = self._now() - keep
        newest_runs = select(func.max(m.ConsolidationRun.id)).group_by(m.ConsolidationRun.context_id)
        with self._write.begin() as s:
            jobs = s.execute(
                delete(m.Job).where(m.Job.status.in_(("done", "failed")), m.Job.updated_at < older_than)
            )
            queries = s.execute(delete(m.QueryLog).where(m.QueryLog.created_at < older_than))
            runs = s.execute(
                delete(m.ConsolidationRun).where(
                    m.ConsolidationRun.status != "running",
                    m.ConsolidationRun.finished_at < older_than,
                    m.ConsolidationRun.id.not_in(newest_runs.scalar_subquery()),
                )
            )
            return {"jobs": jobs.rowcount, "query_log": queries.rowcount, "consolidation_runs": runs.rowcount}

    # API keys

    def create_api_key(self, name: str) -> str:
        """Create a key and return its plaintext, the only time it is seen: only its sha256 is stored."""
        _check_name("API key", name)
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self._write.begin() as s:
            if s.scalar(select(m.ApiKey.id).where(m.ApiKey.name == name)) is not None:
                raise InvalidInput(f"an API key named {name!r} already exists")
            s.execute(
                insert(m.ApiKey).values(
                    name=name, key_hash=_sha256(key.encode()), prefix=key[:10], created_at=self._now(), revoked_at=None
                )
            )
        return key

    def list_api_keys(self) -> list[ApiKeyInfo]:
        with self._read() as s:
            rows = s.scalars(select(m.ApiKey).order_by(m.ApiKey.id))
            return [ApiKeyInfo(row.name, row.prefix, row.created_at, row.revoked_at) for row in rows]

    def revoke_api_key(self, name: str) -> None:
        """Revoke a key by name (revoking twice is harmless)."""
        with self._write.begin() as s:
            row = s.scalars(select(m.ApiKey).where(m.ApiKey.name == name)).one_or_none()
            if row is None:
                raise InvalidInput(f"no API key named {shown(name)}")
            if row.revoked_at is None:
                row.revoked_at = self._now()

    def verify_api_key(self, key: str) -> str | None:
        """The name of the live key matching `key`, else None."""
        # keys are long random strings, so an indexed lookup by hash leaks nothing a timing attack could use
        if not isinstance(key, str) or not key.startswith(API_KEY_PREFIX) or len(key) > 256:
            return None
        # a Core connection and a prebuilt statement: every /v1 request runs this on the event loop
        with self._engine.connect() as c:
            return c.execute(_LIVE_KEY, {"key_hash": _sha256(key.encode())}).scalar()

    def has_api_keys(self) -> bool:
        """Whether any key was ever created, revoked or not: the HTTP API is open only before the first one."""
        with self._engine.connect() as c:
            return bool(c.execute(_ANY_KEY_EVER).scalar())
