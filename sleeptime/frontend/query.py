"""The query engine: answer a question about a context, from a precomputed answer when one fits, else online.

  precomputed  the head's answer to the same normalized question, looked up by (context, head version, question);
               used only while no message arrived after the head (the tail is empty), since a newer message may
               change the answer
  online       the head's memory state (LRU cache with a byte budget, one loader per key; a corrupt head falls
               back to the newest valid ancestor) + the tail (messages after that checkpoint's cursor, capped to
               the last TAIL_TOKENS tokens) + the question: the model's reply (pointed at in the tail by its span
               reader, or generated)

Either way the answer carries the model's own probability of it (`confidence`; None for a precomputed answer
written before it was kept). An answer less probable than `min_confidence` is withheld: the text says so
(ABSTAINED) and the model's answer is kept as the `guess`.

Every query is logged: the log feeds the next anticipation. The HTTP front end logs through a QueryLogWriter, a
background thread that batches the inserts, so an answer does not wait for a write transaction; without one (the
CLI) each query writes its row before it returns. Thread-safe: the HTTP app calls it from worker threads.
"""

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from sleeptime import SleeptimeError
from sleeptime.db import (
    ContextInfo,
    CorruptCheckpoint,
    InvalidInput,
    MessageRecord,
    Precomputed,
    Store,
    normalize_question,
)
from sleeptime.db.store import MAX_QUESTION_BYTES
from sleeptime.models.tokenizer import ANSWER_TOKENS, BYTES, Tokenizer

log = logging.getLogger(__name__)

TAIL_TOKENS = 4096
# read at most this many recent messages for the tail, so a long unconsolidated tail costs one bounded read
TAIL_MESSAGES = 256
# what is answered in place of an answer less probable than the threshold
ABSTAINED = "I don't know that yet."


@dataclass(frozen=True)
class Lookup:
    """What a query read first: its context and, when the question was anticipated, the head's answer."""

    question: str
    ctx: ContextInfo
    found: Precomputed | None
    started: float  # perf_counter() when the query began: latency counts from here


@dataclass(frozen=True)
class QueryResult:
    answer: str
    source: str  # "precomputed" or "online"
    checkpoint: int | None  # the version the answer came from; None: no checkpoint yet
    latency_ms: float
    sources: tuple[int, ...] = ()  # seqs of the messages a precomputed answer read (re-reading)
    # the model's own probability of its answer, in [0, 1]; None: a precomputed answer written before it was kept
    confidence: float | None = None
    abstained: bool = False  # the answer was less probable than the threshold: `answer` says so, `guess` holds it
    guess: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sources": list(self.sources)}


@dataclass(frozen=True)
class LoadedState:
    version: int
    cursor_seq: int
    state: Any
    nbytes: int


class StateCache:
    """An LRU of decoded memory states keyed by (context, version), bounded by payload bytes.

    `get_or_load` runs the loader once per key even when many threads miss together: each key has its own lock, so
    loads of different keys proceed in parallel.
    """

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.used = 0
        self._entries: OrderedDict[tuple[str, int], LoadedState] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}
        self.loads = 0

    def _get(self, key: tuple[str, int]) -> LoadedState | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def get_or_load(self, key: tuple[str, int], loader: Callable[[], LoadedState]) -> LoadedState:
        if (entry := self._get(key)) is not None:
            return entry
        with self._lock:
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            # a thread that waited on the lock finds the state its predecessor loaded
            if (entry := self._get(key)) is not None:
                return entry
            entry = loader()
            with self._lock:
                self.loads += 1
                self._put(key, entry)
                self._loading.pop(key, None)
            return entry

    def _put(self, key: tuple[str, int], entry: LoadedState) -> None:
        # a state larger than the whole budget is served but not kept
        if entry.nbytes > self.budget:
            return
        self._entries[key] = entry
        self.used += entry.nbytes
        while self.used > self.budget:
            _, evicted = self._entries.popitem(last=False)
            self.used -= evicted.nbytes

    def evict(self, context: str) -> None:
        """Drop every cached state of a context (it was forgotten)."""
        with self._lock:
            for key in [key for key in self._entries if key[0] == context]:
                self.used -= self._entries.pop(key).nbytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# a row of the query log: (context, question, source, latency_ms, checkpoint version)
LoggedQuery = tuple[str, str, str, float, int | None]
# markers in the writer's queue: write what came before now
_FLUSH, _STOP = object(), object()


class QueryLogWriter:
    """Writes the query log from a background thread, in batches (one write transaction per batch).

    The queue is bounded: when `max_pending` rows wait, `add` writes its row itself rather than drop it. A batch
    collects the rows that arrive within `linger` seconds of its first. `flush()` returns once every row added before
    it is written; `close()` writes the rest and stops the thread, so a clean stop loses no row. A row the database
    refuses (its context is gone) is logged and dropped: the answer it belongs to was already given.
    """

    def __init__(self, store: Store, *, max_pending: int = 4096, max_batch: int = 256, linger: float = 0.05):
        self.store = store
        self.max_batch, self.linger = max_batch, linger
        self._queue: queue.Queue[Any] = queue.Queue(max_pending)
        # makes "closed?" and the put one step, so no row slips in behind the stop marker
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="query-log", daemon=True)
        self._thread.start()

    def add(self, row: LoggedQuery) -> None:
        with self._lock:
            if not self._closed:
                try:
                    self._queue.put_nowait(row)
                    return
                except queue.Full:
                    pass
        self._write([row])

    def flush(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._queue.put(_FLUSH)
        self._queue.join()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.linger
            while len(batch) < self.max_batch and batch[-1] is not _FLUSH and batch[-1] is not _STOP:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                rows = [row for row in batch if row is not _FLUSH and row is not _STOP]
                if rows:
                    self._write(rows)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if batch[-1] is _STOP:
                return

    def _write(self, rows: list[LoggedQuery]) -> None:
        try:
            self.store.log_queries(rows)
            return
        except Exception:
            if len(rows) == 1:
                log.warning("query log: row for context %r dropped", rows[0][0], exc_info=True)
                return
        # one bad row fails its batch: write the rows one by one, so only that one is lost
        for row in rows:
            self._write([row])


def _check_question(question: object) -> str:
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput("the question is empty")
    try:
        size = len(question.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput("the question is not valid UTF-8") from None
    if size > MAX_QUESTION_BYTES:
        raise InvalidInput(f"the question is {size} bytes, over the limit of {MAX_QUESTION_BYTES}")
    if not normalize_question(question):
        raise InvalidInput(f"the question {question!r} has no words")
    return question


def _text_end(text: str, max_tokens: int, tokenizer: Tokenizer) -> str:
    """The longest end of `text` (whole characters) that encodes to at most max_tokens tokens."""
    # a suffix's token count grows with its length (a token covers at least one byte): binary search the start
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.encode_text(text[mid:])) <= max_tokens:
            hi = mid
        else:
            lo = mid + 1
    return text[lo:]


def cap_tail(messages: list[MessageRecord], max_tokens: int, tokenizer: Tokenizer = BYTES) -> list[dict[str, str]]:
    """The newest messages that fit in max_tokens of the model's tokens; a single newest message larger than that
    keeps its end."""
    tail: list[dict[str, str]] = []
    used = 0
    for message in reversed(messages):
        size = len(tokenizer.encode_message(message.role, message.content))
        if used + size > max_tokens:
            if not tail:
                # keep the end of the text: [ROLE] and [END] take two tokens
                end = _text_end(message.content, max(1, max_tokens - 2), tokenizer)
                tail.append({"role": message.role, "content": end})
            break
        tail.append({"role": message.role, "content": message.content})
        used += size
    return tail[::-1]


class Overloaded(SleeptimeError):
    """Too many online answers wait already; retry shortly (HTTP 503 with Retry-After)."""

    retry_after = 1


class QueryEngine:
    """Answers queries. `engine` is a callable returning the MemoryEngine, so precomputed answers never load it.

    Online answers are generated in this process, `max_generations` at a time, or by a pool of generator processes
    (`pool`, frontend/generators.py); either way at most `max_online` wait or run at once, and one more is refused
    with Overloaded rather than queued without bound.
    """

    def __init__(
        self,
        store: Store,
        engine: Callable[[], Any],
        cache_bytes: int,
        *,
        tail_tokens: int = TAIL_TOKENS,
        max_new_tokens: int = ANSWER_TOKENS,
        max_generations: int = 1,
        min_confidence: float = 0.0,
        max_online: int = 64,
        pool: Any = None,
    ):
        self.store = store
        self.pool = pool
        self.max_online = max_online
        self.online_now = 0  # online answers waiting or running
        self._online_lock = threading.Lock()
        # generation is a loop of small torch ops, Python-bound under the GIL: threads generating side by side
        # only trade the GIL (three times the CPU per answer was measured at 50 clients), so a few at a time
        self._generations = threading.BoundedSemaphore(max_generations)
        self._engine = engine
        self.cache = StateCache(cache_bytes)
        self.tail_tokens = tail_tokens
        self.max_new_tokens = max_new_tokens
        self.min_confidence = min_confidence
        # set by the HTTP front end while it serves; None: each query writes its log row before it returns
        self.log_writer: QueryLogWriter | None = None

    def query(self, context: str, question: str) -> QueryResult:
        """Answer `question` about `context`; raises UnknownContext, InvalidInput."""
        return self.answer(self.lookup(context, question))

    def lookup(self, context: str, question: str) -> Lookup:
        """A query's one read: the context and its head's precomputed answer to the question, if any."""
        _check_question(question)
        started = time.perf_counter()
        ctx, found = self.store.context_and_answer(context, normalize_question(question))
        return Lookup(question, ctx, found, started)

    def answer_precomputed(self, lookup: Lookup) -> QueryResult | None:
        """The precomputed answer when one fits (logged like any answer), else None: no further read, no model."""
        hit = self._precomputed(lookup.ctx, lookup.found)
        return None if hit is None else self._done(lookup, *hit)

    def answer(self, lookup: Lookup) -> QueryResult:
        """The precomputed answer when one fits, else one generated online from the looked-up head."""
        hit = self._precomputed(lookup.ctx, lookup.found)
        return self._done(lookup, *(hit or self._online(lookup.ctx, lookup.question)))

    def _done(
        self, lookup: Lookup, answer: str, source: str, version: int | None, sources: tuple[int, ...],
        confidence: float | None,
    ) -> QueryResult:
        context, question = lookup.ctx.name, lookup.question
        # an answer that never said how sure it was (written before confidence was kept) is given as it is
        abstained = confidence is not None and confidence < self.min_confidence
        latency_ms = round((time.perf_counter() - lookup.started) * 1000, 3)
        row = (context, question, source, latency_ms, version)
        writer = self.log_writer
        if writer is not None:
            writer.add(row)
        else:
            self.store.log_query(*row)
        if abstained:
            return QueryResult(ABSTAINED, source, version, latency_ms, sources, confidence, True, answer)
        return QueryResult(answer, source, version, latency_ms, sources, confidence)

    def flush_log(self) -> None:
        """Return once every query answered so far is in the query log."""
        if (writer := self.log_writer) is not None:
            writer.flush()

    def forget(self, context: str) -> None:
        """Drop what this engine holds of a forgotten context: its cached states."""
        self.cache.evict(context)

    def warm(self, context: str) -> bool:
        """Load the head state of `context` into the cache ahead of its first query (start-up warm-up).
        False when the context has no checkpoint; raises like `query` for a corrupt or foreign head."""
        ctx = self.store.get_context(context)
        if ctx.head_version is None:
            return False
        engine = self._engine()
        self.cache.get_or_load((ctx.name, ctx.head_version), lambda: self._load(ctx, engine))
        return True

    def _precomputed(
        self, ctx: ContextInfo, found: Precomputed | None
    ) -> tuple[str, str, int, tuple[int, ...], float | None] | None:
        if found is None or ctx.head_version is None or ctx.last_seq > ctx.cursor_seq:
            return None
        return found.answer, "precomputed", ctx.head_version, found.sources, found.confidence

    def _online(self, ctx: ContextInfo, question: str) -> tuple[str, str, int | None, tuple[int, ...], float]:
        with self._online_lock:
            if self.online_now >= self.max_online:
                raise Overloaded(f"{self.online_now} online answers are waiting already; try again shortly")
            self.online_now += 1
        try:
            if self.pool is not None:
                online = self.pool.answer(ctx, question)
                return online.answer, "online", online.version, (), online.confidence
            engine = self._engine()
            state, version, tail = self.prepare_online(ctx, engine)
            with self._generations:
                reply = engine.reply(state, question, tail=tail, max_new_tokens=self.max_new_tokens)
            return reply.text, "online", version, (), reply.confidence
        finally:
            with self._online_lock:
                self.online_now -= 1

    def prepare_online(self, ctx: ContextInfo, engine: Any) -> tuple[Any, int | None, list[dict[str, str]]]:
        """What an online answer starts from: the head's memory state (cached; an empty memory without a head), its
        version, and the tail of messages after its cursor."""
        if ctx.head_version is None:
            state, version, cursor = engine.new_state(), None, 0
        else:
            loaded = self.cache.get_or_load((ctx.name, ctx.head_version), lambda: self._load(ctx, engine))
            state, version, cursor = loaded.state, loaded.version, loaded.cursor_seq
        return state, version, self._tail(ctx, cursor, engine.tokenizer)

    def _load(self, ctx: ContextInfo, engine: Any) -> LoadedState:
        try:
            checkpoint = self.store.load_checkpoint(ctx.name, ctx.head_version)
        except CorruptCheckpoint as exc:
            log.warning("%s; falling back to the newest valid version", exc)
            checkpoint = self.store.load_checkpoint_with_fallback(ctx.name)
            if checkpoint is None:
                raise
        if checkpoint.model_id != engine.model_id:
            raise SleeptimeError(
                f"context {ctx.name!r}: checkpoint {checkpoint.version} was written by model {checkpoint.model_id}, "
                f"but the loaded model is {engine.model_id}"
            )
        try:
            state = engine.decode_state(checkpoint.payload)
        except ValueError as exc:
            message = f"context {ctx.name!r}: checkpoint {checkpoint.version} is unreadable: {exc}"
            raise SleeptimeError(message) from None
        return LoadedState(checkpoint.version, checkpoint.cursor_seq, state, len(checkpoint.payload))

    def _tail(self, ctx: ContextInfo, cursor: int, tokenizer: Tokenizer) -> list[dict[str, str]]:
        if ctx.last_seq <= cursor:
            # nothing arrived after the checkpoint: no read
            return []
        start = max(cursor, ctx.last_seq - TAIL_MESSAGES)
        messages = self.store.messages_after(ctx.name, start, limit=TAIL_MESSAGES)
        return cap_tail(messages, self.tail_tokens, tokenizer)
