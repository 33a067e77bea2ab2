"""Online answers generated out of the front end's process: a pool of generator processes.

Generation is a loop of small torch ops that holds the GIL; in the front end's own process it made precomputed
answers wait behind it (docs/benchmarks.md §5). Here each generator is a process of its own (spawned), with its own
model, database connection and state cache (frontend/query.py StateCache): the front end keeps the precomputed
lookups and the queueing.

  routing     a context always goes to the same generator (crc32 of its name), so its memory state stays warm there
  batching    a generator takes every question waiting for it, up to `batch`, and answers them together
              (MemoryEngine.reply_many: the span reader's windows in batches, generation decoded a token per step
              for the whole batch)
  transport   one duplex pipe per generator (multiprocessing.connection): the front end sends (id, context, question),
              a reader thread receives the answers and hands each to the request thread that waits for it
  failure     a generator that dies (killed, out of memory) closes its pipe: its questions in flight fail at once
              with GeneratorLost (HTTP 503), and a new process takes its place
  priority    generators run at nice GENERATOR_NICE: on a machine with fewer cores than busy processes, the front
              end's precomputed answers (about a millisecond of CPU each) get the CPU before a generation does
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
import time
import zlib
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from sleeptime import SleeptimeError
from sleeptime.db import ContextInfo

log = logging.getLogger(__name__)

GENERATOR_NICE = 10
# an answer slower than this is given up (the request gets a 503): a generator that hangs must not hold a client
ANSWER_TIMEOUT_S = 120.0


class GeneratorLost(SleeptimeError):
    """The generator answering the question stopped (killed, crashed) or did not answer in time; retry later."""

    retry_after = 1


@dataclass(frozen=True)
class Online:
    """A generator's answer: as QueryEngine's online answers are, plus how it was batched."""

    answer: str
    version: int | None
    confidence: float
    batch: int  # questions answered in the same batch
    waited_s: float  # from the front end's send to the start of its batch


@dataclass
class _Generator:
    index: int
    process: Any
    conn: Connection
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    # request id -> the future its request thread waits on
    pending: dict[int, Future] = field(default_factory=dict)


@dataclass(frozen=True)
class GeneratorConfig:
    """What a generator process needs to answer on its own (plain values: it is sent to a spawned process)."""

    db: str
    model: str
    device: str
    threads: int | None
    cache_bytes: int
    batch: int
    max_new_tokens: int


class GeneratorPool:
    """`processes` generator processes; `answer` blocks its calling thread until its answer comes back."""

    def __init__(self, config: GeneratorConfig, processes: int):
        if processes < 1:
            raise ValueError("a generator pool needs at least one process")
        self.config = config
        self._context = multiprocessing.get_context("spawn")  # fork would copy torch's threads and locks
        self._ids = itertools.count()
        self._lock = threading.Lock()  # guards the generator list and every pending map
        self._closed = False
        self.replaced = 0  # generators started again after one died
        # for /metrics: answers given, the batches they came in, and their summed wait for a generator
        self.answered = self.batches = 0
        self.waited_s = 0.0
        self._generators = [self._start(i) for i in range(processes)]
        self._wake_r, self._wake_w = self._context.Pipe(duplex=False)  # wakes the reader when the list changes
        self._reader = threading.Thread(target=self._read, name="generator-reader", daemon=True)
        self._reader.start()

    def _start(self, index: int) -> _Generator:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(self.config, theirs), name=f"sleeptime-generator-{index}", daemon=True
        )
        process.start()
        theirs.close()  # the child holds its end: when it dies, ours reads EOF
        return _Generator(index, process, ours)

    @property
    def size(self) -> int:
        return len(self._generators)

    def pids(self) -> list[int]:
        with self._lock:
            return [g.process.pid for g in self._generators]

    def in_flight(self) -> int:
        with self._lock:
            return sum(len(g.pending) for g in self._generators)

    def answer(self, ctx: ContextInfo, question: str, timeout: float = ANSWER_TIMEOUT_S) -> Online:
        """The online answer to `question` from the context's head (or an empty memory without one) and its tail.
        Raises GeneratorLost when its generator dies or does not answer within `timeout` seconds."""
        request = next(self._ids)
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise GeneratorLost("the generator pool is closed")
            generator = self._generators[zlib.crc32(ctx.name.encode()) % len(self._generators)]
            generator.pending[request] = future
        try:
            with generator.send_lock:
                generator.conn.send((request, ctx, question, time.time()))
        except (OSError, ValueError):
            self._forget(generator, request)
            raise GeneratorLost(f"generator {generator.index} is gone; try again") from None
        try:
            return future.result(timeout)
        except FutureTimeout:
            self._forget(generator, request)
            raise GeneratorLost(f"no answer from generator {generator.index} within {timeout:.0f} s") from None

    def _forget(self, generator: _Generator, request: int) -> None:
        with self._lock:
            generator.pending.pop(request, None)

    def _read(self) -> None:
        """Hand answers to their waiting threads; replace a generator whose pipe closed."""
        while True:
            with self._lock:
                if self._closed:
                    return
                by_conn = {g.conn: g for g in self._generators}
            ready = wait([*by_conn, self._wake_r], timeout=1.0)
            for conn in ready:
                if conn is self._wake_r:
                    self._wake_r.recv()
                    continue
                generator = by_conn[conn]
                try:
                    request, outcome = conn.recv()
                except (EOFError, OSError):
                    self._replace(generator)
                    continue
                with self._lock:
                    future = generator.pending.pop(request, None)
                    if isinstance(outcome, Online):
                        self.answered += 1
                        self.batches += 1 / outcome.batch  # a batch of n adds 1/n per answer: 1 when all are in
                        self.waited_s += outcome.waited_s
                if future is None:  # its request thread gave up waiting
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)

    def _replace(self, dead: _Generator) -> None:
        dead.process.join(timeout=5)
        with self._lock:
            if self._closed or self._generators[dead.index] is not dead:
                return
            lost, dead.pending = dead.pending, {}
            self._generators[dead.index] = self._start(dead.index)
            self.replaced += 1
        code = dead.process.exitcode
        log.warning(
            "generator %d (pid %s) stopped with exit code %s; %d questions lost, a new one started",
            dead.index, dead.process.pid, code, len(lost),
        )
        for future in lost.values():
            future.set_exception(GeneratorLost(f"generator {dead.index} stopped (exit code {code}); try again"))
        dead.conn.close()

    def close(self) -> None:
        """Stop every generator (their questions in flight fail with GeneratorLost) and the reader."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            generators = list(self._generators)
        self._wake_w.send(None)
        self._reader.join(timeout=5)
        for generator in generators:
            try:
                with generator.send_lock:
                    generator.conn.send(None)  # a clean stop
            except (OSError, ValueError):
                pass
        for generator in generators:
            generator.process.join(timeout=5)
            if generator.process.is_alive():
                generator.process.kill()
                generator.process.join()
            for future in generator.pending.values():
                future.set_exception(GeneratorLost("the generator pool closed"))
            generator.conn.close()


def _serve(config: GeneratorConfig, conn: Connection) -> None:
    """A generator process: answer the questions that come down `conn`, as many at a time as are waiting (up to
    config.batch), until None comes or the front end's end closes."""
    from sleeptime.db import Store
    from sleeptime.frontend.query import QueryEngine
    from sleeptime.models.engine import MemoryEngine
    from sleeptime.runtime import tune_process

    # a Ctrl-C at the terminal reaches the whole process group: the front end decides when its generators stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(GENERATOR_NICE)
    tune_process(config.threads)
    engine = MemoryEngine.load(config.model, config.device)
    with Store(config.db) as store:
        queries = QueryEngine(store, lambda: engine, config.cache_bytes, max_new_tokens=config.max_new_tokens)
        while True:
            try:
                first = conn.recv()
            except EOFError:  # the front end is gone
                return
            if first is None:
                return
            batch = [first]
            while len(batch) < config.batch and conn.poll():
                item = conn.recv()
                if item is None:
                    _answer(queries, engine, batch, conn)
                    return
                batch.append(item)
            _answer(queries, engine, batch, conn)


def _answer(queries: Any, engine: Any, batch: list[tuple], conn: Connection) -> None:
    started = time.time()
    asks, ready = [], []
    for request, ctx, question, sent in batch:
        try:
            state, version, tail = queries.prepare_online(ctx, engine)
        except Exception as exc:  # noqa: BLE001 this question's failure (a corrupt head, ...) is its answer
            conn.send((request, exc if isinstance(exc, SleeptimeError) else SleeptimeError(str(exc))))
            continue
        asks.append((state, question, tail))
        ready.append((request, version, sent))
    if not asks:
        return
    try:
        replies = engine.reply_many(asks, queries.max_new_tokens)
    except Exception as exc:  # the batch failed: every question of it hears why
        log.exception("generation failed")
        for request, _, _ in ready:
            conn.send((request, SleeptimeError(f"generation failed: {exc}")))
        return
    for (request, version, sent), reply in zip(ready, replies, strict=True):
        online = Online(reply.text, version, reply.confidence, len(asks), max(0.0, started - sent))
        conn.send((request, online))
