"""Teacher-forced recall through the whole history: the value's first byte and its other bytes apart.

Each held-out sample (the ones `sleeptime eval` draws) is fed whole, history, question and the split's own answer,
in one forward from an empty state; a byte of the value counts when it is the model's top prediction. The first
byte must be found by the question (which fact is asked for); the bytes after it can be copied from what followed
the first in the statement, so a model that has learned to copy but not to look a fact up scores high on "rest"
and low on "first". Chat options narrow the task (one fact, or the evaluation's four to eight with updates).

    python -m sleeptime.training.probe --model demo --tasks chat,passkey --tokens 1024 --n 40
    python -m sleeptime.training.probe --model demo --tasks chat --facts 1 --answer-style restate --by-context

prints one row per task; `--by-context` adds the first byte split by how many bytes just before the value the
answer shares with a message of the history that holds it (what a copy keyed on the last few bytes sees again).

Teacher forcing scores the split's answer wording, which may not be the model's own, so compare rows with each
other, not with `sleeptime eval`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from sleeptime.models.engine import MemoryEngine
from sleeptime.models.titans import TitansLM
from sleeptime.models.tokenizer import BYTES, Tokenizer
from sleeptime.training.ablate import answer_value_predictions
from sleeptime.training.data import Sample, make_sample
from sleeptime.training.evaluate import HELDOUT_SEED


@dataclass
class Probe:
    task: str
    n: int = 0
    exact: int = 0  # samples whose every value byte was predicted
    first: int = 0  # samples whose first value byte was predicted
    rest: int = 0  # value bytes after the first that were predicted
    rest_total: int = 0
    # first-byte (hits, samples) by how many bytes before the value the answer shares with a message that states it
    by_shared: dict[str, list[int]] = field(default_factory=dict)


SHARED_BUCKETS = ((4, "4 or more"), (1, "1 to 3"), (0, "none"))


def shared_context(sample: Sample) -> int:
    """The most bytes that end the answer's text before the value and also end, in some message of the history
    that holds the value, the text before it: how much of the context a copy keyed on recent bytes sees again."""
    value = sample.answer_value.encode("utf-8")
    before = sample.answer_text.encode("utf-8").split(value, 1)[0]
    best = 0
    for message in sample.history:
        text = message["content"].encode("utf-8")
        at = text.find(value)
        while at >= 0:
            best = max(best, len(os.path.commonprefix([text[:at][::-1], before[::-1]])))
            at = text.find(value, at + 1)
    return best


def value_hits(model: TitansLM, sample: Sample, tokenizer: Tokenizer = BYTES) -> list[bool]:
    """Teacher-forced through the sample's whole history: for each token (byte) of the value, was it the top
    prediction?"""
    prompt = tokenizer.encode_messages(sample.history) + tokenizer.encode_prompt(sample.question)
    return [hit for _, hit in answer_value_predictions(model, prompt, sample, tokenizer)]


def probe(
    model: TitansLM, task: str, n: int, tokens: int, first: int = 0, tokenizer: Tokenizer = BYTES, **options
) -> Probe:
    """`options` go to the task's generator (e.g. n_facts, update_prob, answer_style for chat)."""
    result = Probe(task)
    for i in range(first, first + n):
        sample = make_sample(task, HELDOUT_SEED + i, split="heldout", target_tokens=tokens, **options)
        hits = value_hits(model, sample, tokenizer)
        result.n += 1
        result.exact += all(hits)
        result.first += hits[0]
        result.rest += sum(hits[1:])
        result.rest_total += len(hits) - 1
        shared = shared_context(sample)
        bucket = next(name for low, name in SHARED_BUCKETS if shared >= low)
        counts = result.by_shared.setdefault(bucket, [0, 0])
        counts[0] += hits[0]
        counts[1] += 1
    return result


def _facts(text: str) -> int | tuple[int, int]:
    low, _, high = text.partition("-")
    return (int(low), int(high)) if high else int(low)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="a shipped model's name or a .safetensors file")
    parser.add_argument("--tasks", default="chat,passkey")
    parser.add_argument("--tokens", type=int, default=1024, help="history length")
    parser.add_argument("--n", type=int, default=40, help="held-out samples per task")
    parser.add_argument("--facts", type=_facts, help="chat: facts per transcript, N or LOW-HIGH (default 4-8)")
    parser.add_argument("--answer-style", choices=("any", "restate"), help="chat: the answers' wording")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--by-context", action="store_true",
        help="the first byte by how many bytes before the value the answer shares with a message that states it",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = MemoryEngine.load(args.model, "cpu")
    model = engine.model.eval()
    chat = {"answer_style": args.answer_style} if args.answer_style else {}
    if args.facts is not None:
        chat |= {"n_facts": args.facts} | ({"update_prob": 0.0} if args.facts == 1 else {})
    rows = []
    print("| task | value exact | first byte | later bytes |\n|---|---|---|---|")
    for task in args.tasks.split(","):
        row = probe(model, task, args.n, args.tokens, tokenizer=engine.tokenizer, **(chat if task == "chat" else {}))
        rows.append(row)
        rest = f"{row.rest / row.rest_total:.2f}" if row.rest_total else "-"
        print(f"| {task} | {row.exact} of {row.n} | {row.first} of {row.n} | {rest} |", flush=True)
    if args.by_context:
        print("\n| task | bytes before the value shared with a statement | first byte |\n|---|---|---|")
        for row in rows:
            for _, name in SHARED_BUCKETS:
                if name in row.by_shared:
                    hits, n = row.by_shared[name]
                    print(f"| {row.task} | {name} | {hits} of {n} |")


if __name__ == "__main__":
    main()
