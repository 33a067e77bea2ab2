"""Recall against history length, through the daemon's own path: consolidate the history into a state with
`MemoryEngine.consume`, then answer the question with `MemoryEngine.answer` (no tail: everything is in the state).

A hit is a right answer by `scoring.right`: the expected value stated as a whole token and no other value of its
kind beside it (docs/model.md, "What right means"). Samples come from the held-out split.
Histories of one cell are consolidated together as one batch; rows shorter than the longest are left-padded with
PAD tokens (at most a few dozen tokens in front of histories of thousands).

`evaluate_rehearsal` measures rehearsal (the daemon writing its precomputed answers back into the memory) the same
way, with later conversation between the pass and the question.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from sleeptime.models import tokenizer
from sleeptime.models.engine import ConsumeStats, MemoryEngine
from sleeptime.models.titans import split_state
from sleeptime.models.tokenizer import BYTES, Tokenizer
from sleeptime.training.data import History, Sample, iter_history_ids, make_sample
from sleeptime.training.everyday import questions as everyday_questions
from sleeptime.training.scoring import right

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
    # which kind of held-out sample the cell drew ("novelty=attribute", "wording=PIN"; "" for plain held-out ones)
    variant: str = ""
    # the main question's attribute was restated with a new value (updated) or stated once: hits and counts apart
    updated: list[int] = field(default_factory=lambda: [0, 0])  # [hits, n]
    not_updated: list[int] = field(default_factory=lambda: [0, 0])  # [hits, n]
    # what the cell's histories held, summed: the model's tokens and the messages' UTF-8 bytes (`tokens` is the
    # generator's target, in byte-tokenizer ids)
    model_tokens: int = 0
    bytes: int = 0

    @property
    def accuracy(self) -> float:
        return self.hits / self.n if self.n else 0.0

    def score(self, index: int, sample: Sample, answer: str) -> None:
        """Count held-out sample `index`'s answer: a hit when it is right (`scoring.right`); a miss is kept whole."""
        hit = right(sample, answer)
        self.hits += hit
        main = sample.queries[0].attribute
        counts = self.updated if any(f.update for f in sample.facts if f.attribute == main) else self.not_updated
        counts[0] += hit
        counts[1] += 1
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
            "variant": self.variant, "updated": {"hits": self.updated[0], "n": self.updated[1]},
            "not_updated": {"hits": self.not_updated[0], "n": self.not_updated[1]},
            "model_tokens": self.model_tokens, "bytes": self.bytes,
        }


HELDOUT_SEED = 10_000  # evaluation draws held-out sample i with this seed + i


def variant_label(options: Mapping | None) -> str:
    return ",".join(f"{k}={v}" for k, v in (options or {}).items())


def cell_variants(task: str, novelties: Sequence[str] = (), wordings: Sequence[str] = ()) -> list[dict]:
    """The sample options of each cell a task gets: one per novelty (chat, passkey) and one per pass-key wording;
    a single plain held-out cell when none applies (recall, echo, everyday)."""
    variants = []
    if task in ("chat", "passkey"):
        variants += [{"novelty": novelty} for novelty in novelties]
    if task == "passkey":
        variants += [{"wording": wording} for wording in wordings]
    return variants or [{}]


def cell_size(task: str, n: int, first: int = 0) -> int:
    """n, except that the everyday chats hold only so many questions (none is asked twice)."""
    return max(0, min(n, len(everyday_questions()) - first)) if task == "everyday" else n


def draw(task: str, index: int, split: str, tokens: int, options: Mapping | None = None) -> Sample:
    """Held-out sample `index` of a cell; everyday sample i is the file's i-th question."""
    seed = index if task == "everyday" else HELDOUT_SEED + index
    return make_sample(task, seed, split=split, target_tokens=tokens, **(options or {}))


def encode_history(history: History, tokenizer: Tokenizer = BYTES) -> tuple[np.ndarray, int]:
    """A generated history's token ids (streamed from the generator in pieces and joined) and its UTF-8 bytes."""
    size = 0

    def counted():
        nonlocal size
        for message in history:
            size += len(message["content"].encode("utf-8"))
            yield message

    parts = [np.asarray(seg, dtype=np.int32) for seg in iter_history_ids(counted(), 65536, tokenizer)]
    return (np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)), size


def history_ids(history: History, tokenizer: Tokenizer = BYTES) -> np.ndarray:
    return encode_history(history, tokenizer)[0]


def replay_ids(history: np.ndarray, stats: ConsumeStats, top: int) -> np.ndarray:
    """Sleep replay: the ids of the `top` most surprising spans of a consumed history, in their original order, to
    be fed through the memory once more at the end of the pass."""
    parts = [history[offset : offset + length] for _, offset, length in stats.replay_spans(top)]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=history.dtype)


def evaluate_cell(
    engine: MemoryEngine, task: str, tokens: int, n: int, first: int = 0, batch: int = 8,
    max_answer_tokens: int = tokenizer.ANSWER_TOKENS, progress: Callable[[int], None] | None = None, replay: int = 0,
    options: Mapping | None = None,
) -> Cell:
    """replay > 0: after each history, its `replay` most surprising 256-token spans are fed again (one history at
    a time: the spans are per history)."""
    start = time.monotonic()
    n = cell_size(task, n, first)
    cell = Cell(task, tokens, n, first, variant=variant_label(options))
    if replay:
        batch = 1
    for row in range(0, n, batch):
        rows = range(row, min(n, row + batch))
        samples = [draw(task, first + i, "heldout", tokens, options) for i in rows]
        encoded = [encode_history(s.history, engine.tokenizer) for s in samples]
        histories = [h for h, _ in encoded]
        cell.model_tokens += sum(len(h) for h in histories)
        cell.bytes += sum(size for _, size in encoded)
        length = max(len(h) for h in histories)
        ids = np.full((len(samples), length), engine.tokenizer.pad, dtype=np.int64)
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
    split: str = "heldout", options: Mapping | None = None,
) -> Cell:
    """The reading ceiling of a cell: each held-out question asked right after the one message that states its
    answer, from an empty memory, so that nothing has to be recalled. A model that misses most questions here will
    not recall them through its memory either: its gap is in reading a statement, not in keeping it. (A lone message
    is not the context its history gives it, so a single sample can go either way.) With split="train" the
    samples come from the training split instead: a model that reads those and not the held-out ones overfits."""
    start = time.monotonic()
    n = cell_size(task, n, first)
    cell = Cell(task, tokens, n, first, split=split, variant=variant_label(options))
    for i in range(n):
        sample = draw(task, first + i, split, tokens, options)
        answer = engine.answer(
            engine.new_state(), sample.question, tail=[answering_message(sample)], max_new_tokens=max_answer_tokens
        )
        cell.score(first + i, sample, answer)
    cell.seconds = time.monotonic() - start
    return cell


def evaluate(
    engine: MemoryEngine, tasks: Sequence[str] = ("passkey", "chat"), lengths: Sequence[int] = DEFAULT_LENGTHS,
    n: int = 20, batch: int = 8, on_cell: Callable[[Cell], None] | None = None, replay: int = 0, first: int = 0,
    reading: bool = False, split: str = "heldout", novelties: Sequence[str] = (), wordings: Sequence[str] = (),
) -> list[Cell]:
    """reading: measure each cell's reading ceiling (`evaluate_reading`, on `split`) instead of its recall.
    novelties, wordings: cells of those kinds of held-out sample instead of the plain ones (`cell_variants`)."""
    if split != "heldout" and not reading:
        raise ValueError("recall is measured on the held-out split only; split applies to the reading ceiling")
    cells = []
    if split != "heldout" and (novelties or wordings):
        raise ValueError("novelties and wordings are kinds of held-out sample: they need split='heldout'")
    for task in tasks:
        for options in cell_variants(task, novelties, wordings):
            for tokens in lengths:
                if reading:
                    cell = evaluate_reading(engine, task, tokens, n, first, split=split, options=options)
                else:
                    cell = evaluate_cell(engine, task, tokens, n, first, batch=batch, replay=replay, options=options)
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
    for i in range(cell_size(task, n, first)):
        sample = draw(task, first + i, "heldout", tokens)
        state = engine.model.initial_state(1)
        state, _ = engine.consume(state, torch.from_numpy(history_ids(sample.history, engine.tokenizer)[None, :]))
        precomputed = engine.answer(state, sample.question, max_new_tokens=max_answer_tokens)
        later = torch.from_numpy(history_ids(later_history(sample, after), engine.tokenizer)[None, :])
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
            hits[name] += right(sample, answer)
        examples.append((sample.answer_value, answers["precomputed"], answers["plain"], answers["rehearsed"]))
    return RehearsalCell(task, tokens, after, n, **hits, seconds=time.monotonic() - start, examples=examples)


def pooled(cells: Sequence[dict]) -> dict[tuple[str, int], tuple[int, int]]:
    """(task, tokens) -> (hits, n) summed over cells: the parts of a cell split across processes (`first`) are one.
    A cell of a variant counts under "task[variant]"."""
    totals: dict[tuple[str, int], tuple[int, int]] = {}
    for c in cells:
        task = f"{c['task']}[{c['variant']}]" if c.get("variant") else c["task"]
        hits, n = totals.get((task, c["tokens"]), (0, 0))
        totals[task, c["tokens"]] = (hits + c["hits"], n + c["n"])
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
