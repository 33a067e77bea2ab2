"""The composition root: `App(settings)` owns the Store, the model (loaded on first use) and the query engine, and
offers the operations the CLI, the daemon and the HTTP front end call. Nothing else builds these parts.

Commands that need no model (ingest, status, checkpoints, rollback, anticipate, precomputed answers) never import
torch: the MemoryEngine is loaded the first time `engine` is read.
"""

import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sleeptime import SleeptimeError
from sleeptime.db import CheckpointInfo, InvalidInput, RunInfo, Store, head_revision
from sleeptime.frontend.query import QueryEngine, QueryResult
from sleeptime.jobs import worker
from sleeptime.jobs.consolidate import Consolidation, Progress, consolidate, consolidate_many
from sleeptime.models.paths import resolve_model_path
from sleeptime.models.tokenizer import ROLES, Tokenizer, read_model_tokenizer
from sleeptime.settings import Settings, load_settings


@dataclass(frozen=True)
class ContextStatus:
    name: str
    head_version: int | None
    cursor_seq: int
    last_seq: int
    pending_messages: int
    pending_tokens: int
    last_activity_at: datetime
    last_run: RunInfo | None


def _check_message(i: int, message: object, max_bytes: int, tokenizer: Tokenizer) -> tuple[str, str, int]:
    """(role, content, n_tokens) of one message, n_tokens in the model's tokens, or InvalidInput naming message i
    (1-based)."""
    if not isinstance(message, Mapping):
        raise InvalidInput(f"message {i}: expected an object with \"role\" and \"content\"")
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise InvalidInput(f"message {i}: role {role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise InvalidInput(f"message {i}: \"content\" must be a string")
    if not content.strip():
        raise InvalidInput(f"message {i} is empty")
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"message {i} is not valid UTF-8 (lone surrogate)") from None
    if size > max_bytes:
        raise InvalidInput(f"message {i} is {size} bytes, over the limit of {max_bytes} (SLEEPTIME_MAX_MESSAGE_BYTES)")
    return role, content, len(tokenizer.encode_message(role, content))


def parse_transcript(data: bytes) -> list[dict[str, Any]]:
    """Messages from raw input: JSONL ({"role", "content"} per line) when the first non-blank character is `{`,
    else the whole text as one user message. Raises InvalidInput for bad UTF-8, bad JSON or no content."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"input is not valid UTF-8: byte 0x{data[exc.start]:02x} on line {line}") from None
    # a byte-order mark (Windows editors write one) is not content: without this the JSONL would read as plain text
    text = text.removeprefix("\ufeff")
    if not text.lstrip().startswith("{"):
        if not text.strip():
            raise InvalidInput("input is empty: no message to ingest")
        return [{"role": "user", "content": text.strip()}]
    messages = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            message = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"line {number} is not valid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise InvalidInput(f"line {number}: expected an object with \"role\" and \"content\"")
        messages.append(message)
    return messages


class App:
    """sleeptime's operations over one database and one model."""

    def __init__(self, settings: Settings | None = None, *, store: Store | None = None, engine: Any = None):
        self.settings = settings or load_settings()
        self.store = store or Store(self.settings.db)
        self._engine = engine
        self._engine_lock = threading.Lock()
        self._tokenizer: Tokenizer | None = None
        self._pg_queue: Any = None
        self.queries = QueryEngine(
            self.store, lambda: self.engine, self.settings.cache_bytes, max_generations=self.settings.generations,
            min_confidence=self.settings.min_confidence, max_online=self.settings.max_online,
        )

    @property
    def engine(self) -> Any:
        """The MemoryEngine, loaded once (thread-safe) from settings.model on settings.device."""
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    self._engine = self._load_engine()
        return self._engine

    def _load_engine(self) -> Any:
        from sleeptime.models.engine import MemoryEngine
        from sleeptime.runtime import tune_process

        tune_process(self.settings.threads)
        try:
            return MemoryEngine.load(self.settings.model, self.settings.device)
        except (OSError, ValueError) as exc:
            raise SleeptimeError(f"cannot load model {self.settings.model!r}: {exc}") from None

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer, read from the model file without loading the model (nor torch): message token
        counts are in the tokens of the model that will consume them."""
        if self._engine is not None:
            return self._engine.tokenizer
        if self._tokenizer is None:
            try:
                self._tokenizer = read_model_tokenizer(resolve_model_path(self.settings.model))
            except (OSError, ValueError) as exc:
                raise SleeptimeError(f"cannot load model {self.settings.model!r}: {exc}") from None
        return self._tokenizer

    def close(self) -> None:
        if self._pg_queue is not None:
            self._pg_queue.close()
        self.store.close()

    def __enter__(self) -> "App":  # noqa: PYI034 Self needs Python 3.11
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the database

    def init(self) -> str:
        """Create or upgrade the schema (and procrastinate's, on that queue); returns sleeptime's revision."""
        self.store.migrate()
        if self.settings.queue == "procrastinate":
            self.pg_queue.apply_schema()
        return head_revision()

    def require_schema(self) -> None:
        self.store.require_schema()

    # data

    def ingest(self, context: str, messages: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append messages ({"role", "content"}); all are checked first, so one bad message stores nothing.
        Returns their seqs."""
        limit = self.settings.max_message_bytes
        if not messages:
            raise InvalidInput("no messages to ingest")
        tokenizer = self.tokenizer
        checked = [_check_message(i, message, limit, tokenizer) for i, message in enumerate(messages, 1)]
        return self.store.append_messages(context, checked, max_message_bytes=limit)

    def anticipate(self, context: str, questions: Iterable[str]) -> int:
        """Register standing questions; the next consolidation precomputes their answers. Returns how many were new."""
        questions = list(questions)
        if not questions:
            raise InvalidInput("no questions to register")
        return self.store.add_anticipated(context, questions, source="registered")

    def consolidate(
        self, context: str, progress: Progress | None = None, abort: Any = None, fresh: bool = False
    ) -> Consolidation:
        """One consolidation pass now (see jobs/consolidate.py), after any pass in progress on the context. `fresh`
        rebuilds the memory from every message with the loaded model (a head written by another model)."""
        # the questions answered so far feed this pass's anticipation: write any the front end still holds
        self.queries.flush_log()
        if not fresh and self.store.pending(context).messages == 0 and not self.store.questions_due(context):
            # nothing to do: answer without loading the model
            return Consolidation(context, False, self.store.head_checkpoint_meta(context), None, 0, 0)
        return consolidate(
            self.store, self.engine, context, progress=progress, abort=abort,
            replay_spans=self.settings.replay_spans, rehearse=self.settings.rehearse, fresh=fresh,
            reread=self.settings.reread,
        )

    def consolidate_many(
        self, contexts: Sequence[str], aborts: Sequence[Any] | None = None
    ) -> list[Consolidation | BaseException]:
        """A pass over each context, their new messages through the model as one batch (jobs/consolidate.py
        consolidate_many); per context, its Consolidation or the exception that ended its pass."""
        self.queries.flush_log()
        aborts = list(aborts) if aborts is not None else [None] * len(contexts)
        results: dict[str, Consolidation | BaseException] = {}
        due, due_aborts = [], []
        for context, abort in zip(contexts, aborts, strict=True):
            try:
                idle = self.store.pending(context).messages == 0 and not self.store.questions_due(context)
                if idle:
                    results[context] = Consolidation(context, False, self.store.head_checkpoint_meta(context), None, 0, 0)
            except Exception as exc:  # noqa: BLE001 an unknown context is its own result, as in consolidate_many
                results[context] = exc
                continue
            if not idle:
                due.append(context)
                due_aborts.append(abort)
        if due:
            passes = consolidate_many(
                self.store, self.engine, due, aborts=due_aborts, replay_spans=self.settings.replay_spans,
                rehearse=self.settings.rehearse, reread=self.settings.reread,
            )
            results.update(zip(due, passes, strict=True))
        return [results[context] for context in contexts]

    def query(self, context: str, question: str) -> QueryResult:
        return self.queries.query(context, question)

    # inspection and history

    def status(self, context: str | None = None) -> list[ContextStatus]:
        contexts = [self.store.get_context(context)] if context is not None else self.store.list_contexts()
        rows = []
        for ctx in contexts:
            pending = self.store.pending(ctx.name)
            last_run = self.store.last_run(ctx.name)
            if last_run is not None and last_run.status == "running" and self.store.reap_runs(ctx.name):
                # its process is gone (killed): say so rather than "running" forever
                last_run = self.store.last_run(ctx.name)
            rows.append(
                ContextStatus(
                    ctx.name, ctx.head_version, ctx.cursor_seq, ctx.last_seq, pending.messages, pending.tokens,
                    ctx.last_activity_at, last_run,
                )
            )
        return rows

    def checkpoints(self, context: str) -> list[CheckpointInfo]:
        return self.store.list_checkpoints(context)

    def rollback(self, context: str, version: int) -> CheckpointInfo:
        """Move the head back to an existing valid version (a consolidation in flight then loses its CAS)."""
        return self.store.rollback(context, version)

    def forget(self, context: str) -> dict[str, int]:
        """Delete everything held about a context: its rows (and, on SQLite, every byte of them in the database
        files), its queued jobs, its cached memory states. A pass running on it cannot publish. The name can be
        used again, for a new, empty context. Returns the rows deleted per table."""
        # questions answered a moment ago are written first, so that they are deleted too
        self.queries.flush_log()
        deleted = self.store.forget(context)
        self.queries.forget(context)
        if self.settings.queue == "procrastinate":
            deleted["queue_jobs"] = self.pg_queue.forget(context)
        return deleted

    def prune(self, context: str) -> list[int]:
        """Delete old versions beyond keep_checkpoints (the head always stays); returns the deleted versions."""
        return self.store.prune_checkpoints(context, self.settings.keep_checkpoints)

    # the job queue

    @property
    def pg_queue(self) -> Any:
        """The procrastinate queue (SLEEPTIME_QUEUE=procrastinate), built on first use."""
        if self._pg_queue is None:
            try:
                from sleeptime.jobs.pg_queue import PgQueue
            except ImportError as exc:
                message = f"the procrastinate queue needs `pip install 'sleeptime[postgres]'` ({exc})"
                raise SleeptimeError(message) from None
            self._pg_queue = PgQueue(self)
        return self._pg_queue

    def enqueue(self, kind: str, context: str, payload: dict[str, Any] | None = None) -> int:
        """Queue a consolidate or prune job on the configured queue; a job of the same kind already waiting for the
        context is returned instead of a new one."""
        if self.settings.queue == "procrastinate":
            return self.pg_queue.enqueue(kind, context, payload)
        return self.store.enqueue(kind, context, payload)

    # what the daemon runs

    def sweep(self) -> list[str]:
        return worker.sweep(self)

    def queue_prunes(self) -> list[str]:
        return worker.queue_prunes(self)

    def collect_garbage(self) -> list[str]:
        return worker.collect_garbage(self)

    def new_worker(self, worker_id: str, **kwargs: Any) -> "worker.Worker":
        return worker.Worker(self, worker_id, **kwargs)

