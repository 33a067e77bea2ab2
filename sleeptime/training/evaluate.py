"""Recall against history length, through the daemon's own path: consolidate the history into a state with
`MemoryEngine.consume`, then answer the question with `MemoryEngine.answer` (no tail: everything is in the state).

A hit is an exact match of the expected value inside the generated answer. Samples come from the held-out split.
Histories of one cell are consolidated together as one batch; rows shorter than the longest are left-padded with
PAD tokens (at most a few dozen tokens in front of histories of thousands).

`evaluate_rehearsal` measures rehearsal (the daemon writing its precomputed answers back into the memory) the same
way, with later conversation between the pass and the question.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from sleeptime.models import tokenizer
from sleeptime.models.engine import ConsumeStats, MemoryEngine
from sleeptime.models.titans import split_state
from sleeptime.training.data import History, Sample, iter_history_ids, make_sample

DEFAULT_LENGTHS = (4096, 32768, 262144, 1048576, 2097152)


@dataclass
class Cell:
    task: str
    tokens: int
    n: int
    first: int = 0  # index of the first held-out sample: cells with disjoint ranges can be pooled
    hits: int = 0
    split: str = "heldout"  # the reading ceiling can also be taken on training samples (an overfitting check)
    seconds: float = 0.0
    examples: list[tuple[str, str]] = field(default_factory=list)  # (expected, answered), a few for the report
    # every wrong answer: held-out sample index, planned depth of the statement asked about, expected, answered
    misses: list[dict] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.hits / self.n if self.n else 0.0

    def score(self, index: int, sample: Sample, answer: str) -> None:
        """Count held-out sample `index`'s answer: a hit when the value is inside it; a miss is kept whole."""
        hit = sample.answer_value in answer
        self.hits += hit
        self.examples.append((sample.answer_value, answer))
        if not hit:
            self.misses.append(
                {"sample": index, "depth": round(sample.depth, 3), "expected": sample.answer_value, "answered": answer}
            )

    def to_dict(self) -> dict:
        return {
            "task": self.task, "tokens": self.tokens, "n": self.n, "hits": self.hits,
            "accuracy": round(self.accuracy, 3), "seconds": round(self.seconds, 1), "first": self.first,
            "examples": self.examples[:3], "misses": self.misses, "split": self.split,
        }


HELDOUT_SEED = 10_000  # evaluation draws held-out sample i with this seed + i


def history_ids(history: History) -> np.ndarray:
    """A generated history's token ids, streamed from the generator in pieces and joined."""
    parts = [np.asarray(seg, dtype=np.int32) for seg in iter_history_ids(history, 65536)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


def replay_ids(history: np.ndarray, stats: ConsumeStats, top: int) -> np.ndarray:
    """Sleep replay: the ids of the `top` most surprising spans of a consumed history, in their original order, to
    be fed through the memory once more at the end of the pass."""
    parts = [history[offset : offset + length] for _, offset, length in stats.replay_spans(top)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=history.dtype)


def evaluate_cell(
    engine: MemoryEngine, task: str, tokens: int, n: int, first: int = 0, batch: int = 8,
    max_answer_tokens: int = tokenizer.ANSWER_TOKENS, progress: Callable[[int], None] | None = None, replay: int = 0,
) -> Cell:
    """replay > 0: after each history, its `replay` most surprising 256-token spans are fed again (one history at
    a time: the spans are per history)."""
    start = time.monotonic()
    cell = Cell(task, tokens, n, first)
    if replay:
        batch = 1
    for row in range(0, n, batch):
        rows = range(row, min(n, row + batch))
        samples = [make_sample(task, HELDOUT_SEED + first + i, split="heldout", target_tokens=tokens) for i in rows]
        histories = [history_ids(s.history) for s in samples]
        length = max(len(h) for h in histories)
        ids = np.full((len(samples), length), tokenizer.PAD, dtype=np.int64)
        for r, h in enumerate(histories):
            ids[r, length - len(h) :] = h
        state = engine.model.initial_state(len(samples))
        state, stats = engine.consume(state, torch.from_numpy(ids), progress=progress, keep_spans=max(8, replay))
        if replay:
            again = replay_ids(ids[0], stats, replay)
            state, _ = engine.consume(state, torch.from_numpy(again[None, :]))
        for i, sample, row_state in zip(rows, samples, split_state(state), strict=True):
            cell.score(first + i, sample, engine.answer(row_state, sample.question, max_new_tokens=max_answer_tokens))
    cell.seconds = time.monotonic() - start
    return cell


def answering_message(sample: Sample) -> dict[str, str]:
    """The latest message of a sample's history that holds the value its question asks for."""
    last = None
    for turn in sample.history.iter_turns():
        if sample.answer_value in turn.content:
            last = turn
    if last is None:
        raise ValueError("no message of the history holds the answer")
    return {"role": last.role, "content": last.content}


def evaluate_reading(
    engine: MemoryEngine, task: str, tokens: int, n: int, first: int = 0, max_answer_tokens: int = tokenizer.ANSWER_TOKENS,
    split: str = "heldout",
) -> Cell:
    """The reading ceiling of a cell: each held-out question asked right after the one message that states its
    answer, from an empty memory, so that nothing has to be recalled. A model that misses most questions here will
    not recall them through its memory either: its gap is in reading a statement, not in keeping it. (A lone message
    is not the context its history gives it, so a single sample can go either way.) With split="train" the
    samples come from the training split instead: a model that reads those and not the held-out ones overfits."""
    start = time.monotonic()
    cell = Cell(task, tokens, n, first, split=split)
    for i in range(n):
        sample = make_sample(task, HELDOUT_SEED + first + i, split=split, target_tokens=tokens)
        answer = engine.answer(
            engine.new_state(), sample.question, tail=[answering_message(sample)], max_new_tokens=max_answer_tokens
        )
        cell.score(first + i, sample, answer)
    cell.seconds = time.monotonic() - start
    return cell


def evaluate(
    engine: MemoryEngine, tasks: Sequence[str] = ("passkey", "chat"), lengths: Sequence[int] = DEFAULT_LENGTHS,
    n: int = 20, batch: int = 8, on_cell: Callable[[Cell], None] | None = None, replay: int = 0, first: int = 0,
    reading: bool = False, split: str = "heldout",
) -> list[Cell]:
    """reading: measure each cell's reading ceiling (`evaluate_reading`, on `split`) instead of its recall."""
    if split != "heldout" and not reading:
        raise ValueError("recall is measured on the held-out split only; split applies to the reading ceiling")
    cells = []
    for task in tasks:
        for tokens in lengths:
            if reading:
                cell = evaluate_reading(engine, task, tokens, n, first, split=split)
            else:
                cell = evaluate_cell(engine, task, tokens, n, first, batch=batch, replay=replay)
            cells.append(cell)
            if on_cell:
                on_cell(cell)
    return cells


@dataclass
class RehearsalCell:
    """Recall of one question asked `after` tokens of later conversation past the pass, with and without
    rehearsal; `precomputed` counts the hits of the pass's own answer (asked right after the history)."""

    task: str
    tokens: int
    after: int
    n: int
    precomputed: int
    plain: int
    rehearsed: int
    seconds: float
    examples: list[tuple[str, str, str, str]]  # (expected, precomputed, plain, rehearsed)

    def to_dict(self) -> dict:
        return {
            "task": self.task, "tokens": self.tokens, "after": self.after, "n": self.n,
            "precomputed": round(self.precomputed / self.n, 3), "plain": round(self.plain / self.n, 3),
            "rehearsed": round(self.rehearsed / self.n, 3), "hits": [self.precomputed, self.plain, self.rehearsed],
            "seconds": round(self.seconds, 1), "examples": self.examples[:3],
        }


def later_history(sample, tokens: int) -> History:
    """`tokens` of conversation after the sample's history: its own kind of distractors (passkey filler, chat
    chit-chat), drawn from another seed, which never hold the sample's values (nor another pass key)."""
    return History((), sample.history.distractors, f"{sample.history.seed}:later", tokens, tokens)


def evaluate_rehearsal(
    engine: MemoryEngine, task: str, tokens: int, after: int, n: int, first: int = 0,
    max_answer_tokens: int = tokenizer.ANSWER_TOKENS,
) -> RehearsalCell:
    """For each held-out sample: consolidate its history, answer its question (the precomputed answer), then
    consume `after` tokens of later conversation and ask again, once from the plain state and once from the state
    that rehearsed the question with its precomputed answer as a user/assistant exchange, as the daemon's pass
    does. One sample at a time; answers run to tokenizer.ANSWER_TOKENS, as the daemon's do."""
    start = time.monotonic()
    hits = {"precomputed": 0, "plain": 0, "rehearsed": 0}
    examples = []
    for i in range(n):
        sample = make_sample(task, HELDOUT_SEED + first + i, split="heldout", target_tokens=tokens)
        state = engine.model.initial_state(1)
        state, _ = engine.consume(state, torch.from_numpy(history_ids(sample.history)[None, :]))
        precomputed = engine.answer(state, sample.question, max_new_tokens=max_answer_tokens)
        later = torch.from_numpy(history_ids(later_history(sample, after))[None, :])
        rehearsed_state, _ = engine.rehearse(state, [(sample.question, precomputed)])
        # consume returns a new state and leaves its input as it was, so both branches start from `state`
        plain_state, _ = engine.consume(state, later)
        rehearsed_state, _ = engine.consume(rehearsed_state, later)
        answers = {
            "precomputed": precomputed,
            "plain": engine.answer(plain_state, sample.question, max_new_tokens=max_answer_tokens),
            "rehearsed": engine.answer(rehearsed_state, sample.question, max_new_tokens=max_answer_tokens),
        }
        for name, answer in answers.items():
            hits[name] += sample.answer_value in answer
        examples.append((sample.answer_value, answers["precomputed"], answers["plain"], answers["rehearsed"]))
    return RehearsalCell(task, tokens, after, n, **hits, seconds=time.monotonic() - start, examples=examples)


def pooled(cells: Sequence[dict]) -> dict[tuple[str, int], tuple[int, int]]:
    """(task, tokens) -> (hits, n) summed over cells: the parts of a cell split across processes (`first`) are one."""
    totals: dict[tuple[str, int], tuple[int, int]] = {}
    for c in cells:
        hits, n = totals.get((c["task"], c["tokens"]), (0, 0))
        totals[c["task"], c["tokens"]] = (hits + c["hits"], n + c["n"])
    return totals


def plot(results: dict[str, list[dict]], path: str) -> None:
    """results: label -> list of cell dicts; one line per (label, task), accuracy against log history length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, cells in results.items():
        totals = pooled(cells)
        for task in sorted({task for task, _ in totals}):
            rows = sorted((tokens, hits / n) for (t, tokens), (hits, n) in totals.items() if t == task and n)
            ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o", label=f"{label} · {task}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("history length (tokens = bytes)")
    ax.set_ylabel("exact-match recall (held-out)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
