"""One consolidation pass over a context: head state + new messages -> next checkpoint, published atomically.

  1. read the head (version, cursor) and fix the range (cursor, last seq]: messages that arrive later wait for the
     next pass, so each message is consumed by exactly one published checkpoint
  2. load and verify the head state (or start fresh), refusing a state written by another model
  3. stream the range in bounded batches through the model (tokens fed in fixed-size pieces); with replay_spans,
     feed the pass's most surprising spans once more (sleep replay; off by default: it did not help the demo
     model's recall, docs/research/experiments.md)
  4. anticipate: gather the expected questions and answer them with the new state, each after re-reading the
     messages that hold its answer (jobs/anticipate.py; reread="fresh": the reading starts from an empty memory,
     "off": answers from the state alone); with rehearse, write each question and its answer into the state as one
     more exchange (rehearsal; the daemon's default: it kept the demo model's answers through later conversation,
     docs/research/experiments.md)
  5. publish checkpoint + head CAS + answers in one transaction; a lost CAS marks the run superseded

Nothing is written to the head before step 5, so a crash at any point leaves the head unchanged. The whole pass
holds the context's consolidation lock (db/locks.py): a second pass on the context, from any process, waits for it
and then finds nothing left to do. With `fresh`, step 2 starts from an empty state and step 3 reads every message:
the way out for a context whose head was written by another model.

With no new message but questions the head has no answer for (asked online or registered since the last pass),
the pass answers those from the head's state and adds the answers to the same head: no new version, since the
memory has learned nothing new (a version is a step of consolidation; an answers-only version would copy the
state and its payload for nothing). Such answers are not rehearsed into the state; the next pass over new messages
rehearses them with the rest.

`consolidate_many` runs passes over several contexts as one batch: steps 3 and 4 go through the model together
(MemoryEngine.consume_many, reply_many), steps 1, 2 and 5 stay each context's own.
"""

import logging
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from sleeptime import SleeptimeError
from sleeptime.db import CheckpointInfo, HeadConflict, Store
from sleeptime.jobs.anticipate import (
    Answer,
    Question,
    answer_many,
    extract_questions,
    gather_questions,
    reader_of,
)
from sleeptime.models.tokenizer import ANSWER_TOKENS

log = logging.getLogger(__name__)

BATCH_MESSAGES = 512
# tokens handed to the model per call: a multiple of the engine's segment, large enough to amortise the call
FEED_TOKENS = 8192
TOP_SPANS = 8
# questions extracted from one pass's messages, newest kept: a long history can state thousands of facts
MAX_EXTRACTED = 64

Progress = Callable[[int, int], None]
# where re-reading starts: the new state (a branch), an empty memory, or no re-reading (the memory alone)
REREAD = ("state", "fresh", "off")


class ModelMismatch(SleeptimeError):
    """The head checkpoint was written by a different model than the one loaded."""


class Aborted(SleeptimeError):
    """The pass was stopped before publishing; the head is untouched."""


@dataclass(frozen=True)
class Consolidation:
    """What a pass did: `checkpoint` is the new head when `published`, else the unchanged head (or None)."""

    context: str
    published: bool
    checkpoint: CheckpointInfo | None
    run_id: int | None
    tokens: int
    messages: int
    bytes: int = 0  # UTF-8 bytes of the messages' text (tokens count the model's tokens, role markers included)
    answered: int = 0  # answers added to the unchanged head by a pass over new questions alone


@dataclass
class _Fed:
    """A pass after its messages went through the model (and replay): what answering and publishing start from."""

    state: Any
    stats: Any
    messages: int
    replayed: int
    questions: list[Question]


class _Pass:
    """The state of one pass; `run()` drives it. Split out so each step reads as one short method."""

    def __init__(
        self,
        store: Store,
        engine: Any,
        context: str,
        progress: Progress | None,
        abort: Any,
        replay_spans: int = 0,
        rehearse: bool = False,
        fresh: bool = False,
        reread: str = "state",
    ):
        if reread not in REREAD:
            raise SleeptimeError(f"reread must be one of {', '.join(REREAD)}, not {reread!r}")
        self.store, self.engine, self.context = store, engine, context
        self.fresh = fresh
        self.progress, self.abort = progress, abort
        self.replay_spans, self.rehearse, self.reread = replay_spans, rehearse, reread
        # the pass's tokens, kept only for replay (2 bytes each while the vocabulary fits in 16 bits)
        self.history = array("H" if engine.tokenizer.vocab_size <= 1 << 16 else "I")
        self.started = time.monotonic()
        self.done_tokens = 0
        self.total_tokens = 0
        self.bytes = 0
        # question -> seq of the newest message it was read from; a fact stated again moves to the newest end
        self.extracted: dict[str, int] = {}
        # token offset (within this pass) where each consumed message starts, to map surprising spans to seqs
        self.offsets, self.seqs = array("q"), array("q")
        self.messages = 0
        # set by prepare(): the head's state, its version and cursor, the range's end, the run record
        self.state: Any = None
        self.parent: int | None = None
        self.cursor = self.to_seq = 0
        self.run_id: int | None = None

    def check(self) -> None:
        if self.abort is not None and self.abort.is_set():
            raise Aborted(f"consolidation of {self.context!r} aborted before publishing; the head is unchanged")

    def load_head(self) -> tuple[Any, int | None, int]:
        head = self.store.head_checkpoint_meta(self.context)
        if head is None:
            return self.engine.new_state(), None, 0
        if self.fresh:
            # a new memory over the whole transcript, published on top of the head (which stays in the history)
            return self.engine.new_state(), head.version, 0
        if head.model_id != self.engine.model_id:
            raise ModelMismatch(
                f"context {self.context!r}: head checkpoint {head.version} was written by model {head.model_id}, "
                f"but the loaded model is {self.engine.model_id}; use that model (--model), roll back, or rebuild "
                f"the memory with this model: sleeptime consolidate {self.context} --fresh"
            )
        # by version, not "the head": the cursor and the state must come from the same checkpoint
        checkpoint = self.store.load_checkpoint(self.context, head.version)
        try:
            state = self.engine.decode_state(checkpoint.payload)
        except ValueError as exc:
            message = f"context {self.context!r}: head checkpoint {head.version} is unreadable: {exc}"
            raise SleeptimeError(message) from None
        return state, head.version, head.cursor_seq

    def on_segment(self, n: int) -> None:
        self.count_tokens(n)
        # inside the model loop: a second SIGTERM stops within one segment
        self.check()

    def count_tokens(self, n: int) -> None:
        self.done_tokens += n
        if self.progress is not None:
            self.progress(min(self.done_tokens, self.total_tokens), self.total_tokens)

    def feed(self, state: Any, stats: Any, tokens: list[int]) -> tuple[Any, Any]:
        return self.engine.consume(
            state, tokens, progress=self.on_segment, stats=stats, keep_spans=max(TOP_SPANS, self.replay_spans)
        )

    def replay(self, state: Any, stats: Any) -> tuple[Any, int]:
        """Feed the replay_spans most surprising spans once more, in their order in the pass; returns (state,
        tokens replayed)."""
        chosen = stats.replay_spans(self.replay_spans)
        tokens = [t for _, start, length in chosen for t in self.history[start : start + length]]
        if tokens:
            state, _ = self.engine.consume(state, tokens)
        return state, len(tokens)

    def consume(self, state: Any, cursor: int, to_seq: int) -> tuple[Any, Any, int]:
        """Stream messages (cursor, to_seq] through the model; returns (state, stats, messages consumed)."""
        stats = None
        for tokens in self.pieces(cursor, to_seq):
            state, stats = self.feed(state, stats, tokens)
        self.report_done()
        return state, stats, self.messages

    def pieces(self, cursor: int, to_seq: int) -> Iterator[list[int]]:
        """The tokens of messages (cursor, to_seq], read in bounded batches, as pieces of FEED_TOKENS (the last one
        shorter); counts the messages into self.messages."""
        buffer: list[int] = []
        seq, offset = cursor, 0
        while seq < to_seq:
            batch = [m for m in self.store.messages_after(self.context, seq, limit=BATCH_MESSAGES) if m.seq <= to_seq]
            if not batch:
                raise SleeptimeError(f"context {self.context!r}: messages up to {to_seq} are missing")
            for message in batch:
                tokens = self.engine.tokenizer.encode_message(message.role, message.content)
                self.bytes += len(message.content.encode("utf-8"))
                self.offsets.append(offset)
                self.seqs.append(message.seq)
                offset += len(tokens)
                buffer.extend(tokens)
                if self.replay_spans:
                    self.history.extend(tokens)
                if message.role == "user":
                    self.note_questions(extract_questions(message.content), message.seq)
            seq, self.messages = batch[-1].seq, self.messages + len(batch)
            while len(buffer) >= FEED_TOKENS:
                yield buffer[:FEED_TOKENS]
                del buffer[:FEED_TOKENS]
        if buffer:
            yield buffer

    def report_done(self) -> None:
        if self.progress is not None:
            # the total was read a moment after the range was fixed and may include a newer message
            self.progress(self.done_tokens, self.done_tokens)

    def note_questions(self, questions: list[str], seq: int) -> None:
        for question in questions:
            self.extracted.pop(question, None)
            self.extracted[question] = seq
        while len(self.extracted) > MAX_EXTRACTED:
            del self.extracted[next(iter(self.extracted))]

    def span_seq(self, offset: int) -> int:
        return self.seqs[max(0, bisect_right(self.offsets, offset) - 1)]

    def meta(
        self, stats: Any, messages: int, cursor: int, to_seq: int, questions: int, replayed: int, rehearsed: int
    ) -> dict[str, Any]:
        spans = [
            {"surprise": round(loss, 4), "offset": start, "tokens": length, "seq": self.span_seq(start)}
            for loss, start, length in stats.spans[:TOP_SPANS]
        ]
        return {
            "tokens": stats.tokens,
            "bytes": self.bytes,
            "messages": messages,
            "from_seq": cursor,
            "to_seq": to_seq,
            "mean_surprise": round(stats.mean_surprise, 6),
            "top_spans": spans,
            "questions": questions,
            "replayed_tokens": replayed,
            "rehearsed_tokens": rehearsed,
            "model_id": self.engine.model_id,
            "seconds": round(time.monotonic() - self.started, 3),
        }

    def answer(self, state: Any, questions: list[Question], to_seq: int) -> list[Answer]:
        return answer_many(self.engine, [self.asking(state, questions, to_seq)], ANSWER_TOKENS, check=self.check)[0]

    def asking(self, state: Any, questions: list[Question], to_seq: int) -> tuple[Any, list[Question], Any]:
        """What answer_many needs for this pass: the state the answers start from, the questions, the re-reading."""
        if self.reread == "off":
            return state, questions, None
        start = self.engine.new_state() if self.reread == "fresh" else state
        return start, questions, reader_of(self.store, self.context, to_seq, self.engine)

    def answer_new_questions(self, state: Any, head: int, cursor: int) -> Consolidation:
        """No new message: answer the questions the head has no answer for, and add them to the same head."""
        info = self.store.head_checkpoint_meta(self.context)
        have = {p.normalized_question for p in self.store.list_precomputed(self.context, head)}
        questions = [q for q in gather_questions(self.store, self.context) if q.normalized not in have]
        if not questions:
            return Consolidation(self.context, False, info, None, 0, 0)
        run_id = self.store.start_run(self.context, head, cursor, cursor)
        try:
            answers = self.answer(state, questions, cursor)
            self.check()
            added = self.store.add_answers(self.context, head, [a.row() for a in answers], run_id=run_id)
        except HeadConflict as exc:
            self.store.finish_run(run_id, "superseded", error=str(exc))
            raise
        except BaseException as exc:
            self.store.finish_run(run_id, "failed", error=str(exc) or type(exc).__name__)
            raise
        log.info("answered", extra={"context": self.context, "version": head, "answers": added})
        return Consolidation(self.context, False, info, run_id, 0, 0, answered=added)

    def run(self) -> Consolidation:
        done = self.prepare()
        if done is not None:
            return done
        return self.settle(lambda: self.publish(*self.consume(self.state, self.cursor, self.to_seq)))

    def prepare(self) -> Consolidation | None:
        """Load the head and fix the range of new messages, and start the run record. With no new message the pass
        is done here (it answers any new questions for the head) and its Consolidation is returned."""
        self.state, self.parent, self.cursor = self.load_head()
        self.to_seq = self.store.get_context(self.context).last_seq
        if self.to_seq <= self.cursor:
            if self.parent is None:
                return Consolidation(self.context, False, None, None, 0, 0)
            return self.answer_new_questions(self.state, self.parent, self.cursor)
        self.total_tokens = self.store.pending(self.context, after=self.cursor).tokens
        self.run_id = self.store.start_run(self.context, self.parent, self.cursor, self.to_seq)
        return None

    def settle(self, step: Callable[[], Consolidation]) -> Consolidation:
        """Run the rest of a started pass; a failure closes its run record with how it ended, and is raised."""
        try:
            return step()
        except HeadConflict as exc:
            self.close_run(self.run_id, "superseded", str(exc))
            raise
        except BaseException as exc:
            # KeyboardInterrupt too: the run record says how it ended (a SIGKILL leaves it "running" until the next
            # pass or status finds the lock free and closes it as abandoned)
            self.close_run(self.run_id, "failed", str(exc) or type(exc).__name__)
            raise

    def close_run(self, run_id: int, status: str, error: str) -> None:
        try:
            self.store.finish_run(run_id, status, error=error)
        except SleeptimeError as exc:
            # the context was forgotten meanwhile, its runs with it: the error that ended the pass is the one to raise
            log.info("run %d not closed: %s", run_id, exc)

    def publish(self, state: Any, stats: Any, messages: int) -> Consolidation:
        """Replay, answer, rehearse and publish, after the new messages went into `state`."""
        fed = self.replay_and_ask(state, stats, messages)
        return self.publish_answers(fed, self.answer(fed.state, fed.questions, self.to_seq))

    def replay_and_ask(self, state: Any, stats: Any, messages: int) -> _Fed:
        """Sleep replay, if on, then the questions this pass answers."""
        replayed = 0
        if self.replay_spans:
            state, replayed = self.replay(state, stats)
        questions = gather_questions(
            self.store, self.context, list(self.extracted), extracted_seqs=list(self.extracted.values())
        )
        return _Fed(state, stats, messages, replayed, questions)

    def publish_answers(self, fed: _Fed, answers: list[Answer]) -> Consolidation:
        """Rehearse the answers, if on, and publish the checkpoint with them."""
        run_id, parent, cursor, to_seq = self.run_id, self.parent, self.cursor, self.to_seq
        state, stats, messages, replayed = fed.state, fed.stats, fed.messages, fed.replayed
        rehearsed = 0
        if self.rehearse:
            state, rehearsed = self.engine.rehearse(state, [(answer.question, answer.text) for answer in answers])
        payload = self.engine.encode_state(state)
        meta = self.meta(stats, messages, cursor, to_seq, len(answers), replayed, rehearsed)
        if self.fresh:
            meta["fresh"] = True
        self.check()
        info = self.store.publish_checkpoint(
            self.context, parent, to_seq, self.engine.model_id, payload, meta, [a.row() for a in answers], run_id=run_id
        )
        fields = {
            "context": self.context, "version": info.version, "tokens": stats.tokens, "bytes": self.bytes,
            "seconds": meta["seconds"],
        }
        log.info("published", extra=fields)
        return Consolidation(self.context, True, info, run_id, stats.tokens, messages, self.bytes)


def consolidate(
    store: Store,
    engine: Any,
    context: str,
    *,
    progress: Progress | None = None,
    abort: Any = None,
    replay_spans: int = 0,
    rehearse: bool = False,
    fresh: bool = False,
    reread: str = "state",
) -> Consolidation:
    """Run one pass under the context's consolidation lock, waiting for a pass in progress first (a pass with no new
    message answers new questions for the head, see above). `progress(done_tokens, total_tokens)` is called per
    model segment; setting the `abort` event (anything with `is_set()`) stops the pass, or the wait, before it
    publishes (Aborted). `fresh` rebuilds the memory from every message with this engine's model. Raises
    HeadConflict when a rollback moved the head first, ModelMismatch for a head from another model, UnknownContext
    (also for a context forgotten during the pass)."""
    with store.pass_lock(context, stop=abort) as abandoned:
        if abandoned is None:
            raise Aborted(f"consolidation of {context!r} aborted while waiting for the pass in progress")
        if abandoned:
            log.warning("context %r: runs %s of a dead process closed as abandoned", context, abandoned)
        return _Pass(store, engine, context, progress, abort, replay_spans, rehearse, fresh, reread).run()


def consolidate_many(
    store: Store,
    engine: Any,
    contexts: Sequence[str],
    *,
    aborts: Sequence[Any] | None = None,
    replay_spans: int = 0,
    rehearse: bool = False,
    reread: str = "state",
) -> list[Consolidation | BaseException]:
    """One pass over each of several contexts, their new messages fed through the model together
    (engine.consume_many: one forward pass for every context whose state lines up). Each pass then answers and
    publishes on its own, exactly as `consolidate` does, and holds its context's lock throughout; the locks are
    taken in name order, so two batches never wait for each other in a cycle.

    aborts[i] stops the pass over contexts[i] before it publishes. Returns, per context, its Consolidation or the
    exception that ended its pass: one context's failure (a missing message, a head from another model, a rollback)
    leaves the others to finish.
    """
    if len(set(contexts)) != len(contexts):
        raise SleeptimeError("consolidate_many: each context once")
    aborts = list(aborts) if aborts is not None else [None] * len(contexts)
    results: dict[str, Consolidation | BaseException] = {}
    with ExitStack() as locks:
        passes = []
        for context, abort in sorted(zip(contexts, aborts), key=lambda pair: pair[0]):
            abandoned = locks.enter_context(store.pass_lock(context, stop=abort))
            if abandoned is None:
                results[context] = Aborted(f"consolidation of {context!r} aborted while waiting for the pass in progress")
                continue
            if abandoned:
                log.warning("context %r: runs %s of a dead process closed as abandoned", context, abandoned)
            one = _Pass(store, engine, context, None, abort, replay_spans, rehearse, False, reread)
            try:
                done = one.prepare()
            except Exception as exc:  # noqa: BLE001 this context's failure is its result; the others go on
                results[context] = exc
                continue
            if done is not None:
                results[context] = done
            else:
                passes.append(one)
        fed: list[tuple[_Pass, _Fed]] = []
        for one, outcome in zip(passes, _feed_together(engine, passes), strict=True):
            if isinstance(outcome, BaseException):
                results[one.context] = outcome
                continue
            try:
                fed.append((one, one.settle(lambda one=one, outcome=outcome: one.replay_and_ask(*outcome))))
            except Exception as exc:  # noqa: BLE001 as above
                results[one.context] = exc
        answered = _answer_together(engine, fed)
        for (one, state), answers in zip(fed, answered, strict=True):
            try:
                results[one.context] = one.settle(lambda one=one, state=state, answers=answers: _publish(one, state, answers))
            except Exception as exc:  # noqa: BLE001 as above
                results[one.context] = exc
    return [results[context] for context in contexts]


def _publish(one: _Pass, fed: _Fed, answers: list[Answer] | BaseException) -> Consolidation:
    if isinstance(answers, BaseException):
        raise answers
    return one.publish_answers(fed, answers)


def _answer_together(engine: Any, fed: list[tuple[_Pass, _Fed]]) -> list[list[Answer] | BaseException]:
    """Every pass's questions answered in one engine.reply_many (the span reader's readings batched across the
    passes); a pass stopped meanwhile gets Aborted, and a failure of the batch is every pass's failure."""
    asking, outcome = [], []
    for one, state in fed:
        try:
            one.check()
        except Aborted as exc:
            outcome.append(exc)
            continue
        outcome.append(None)
        asking.append(one.asking(state.state, state.questions, one.to_seq))
    try:
        answers = iter(answer_many(engine, asking, ANSWER_TOKENS))
    except Exception as exc:  # noqa: BLE001 reported per pass
        return [exc] * len(fed)
    return [next(answers) if result is None else result for result in outcome]


def _feed_together(engine: Any, passes: list[_Pass]) -> list[tuple[Any, Any, int] | BaseException]:
    """Each pass's new messages through the model, all passes in one batch, FEED_TOKENS per pass per round; returns
    per pass (state, stats, messages) or the exception that ended it (its run record closed)."""
    outcome: list[Any] = [None] * len(passes)
    sources = [one.pieces(one.cursor, one.to_seq) for one in passes]
    states = [one.state for one in passes]
    stats: list[Any] = [None] * len(passes)  # each pass's ConsumeStats, from its first round on
    live = set(range(len(passes)))

    def end(i: int, exc: BaseException) -> None:
        passes[i].close_run(passes[i].run_id, "failed", str(exc) or type(exc).__name__)
        outcome[i] = exc
        live.discard(i)

    while live:
        rows, pieces = [], []
        for i in sorted(live):
            try:
                passes[i].check()
                piece = next(sources[i], None)
            except Exception as exc:  # noqa: BLE001 an abort or a missing message ends this pass only
                end(i, exc)
                continue
            if piece is None:
                passes[i].report_done()
                outcome[i] = (states[i], stats[i], passes[i].messages)
                live.discard(i)
            else:
                rows.append(i)
                pieces.append(piece)
        if rows:
            fed = engine.consume_many(
                [states[i] for i in rows], pieces, progress=[passes[i].count_tokens for i in rows],
                stats=[stats[i] for i in rows], keep_spans=max(TOP_SPANS, *(passes[i].replay_spans for i in rows)),
            )
            for i, (state, row_stats) in zip(rows, fed, strict=True):
                states[i], stats[i] = state, row_stats
    return outcome
