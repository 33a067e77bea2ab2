"""Which parts of a model read a value: the reading ceiling, teacher-forced, with one part's output zeroed.

Each held-out question is asked right after the one message that states its answer (as `evaluate_reading` does), and
the expected answer is fed after it; a sample counts when every byte of the value inside the answer is the model's
top prediction. That is scored with nothing removed, then with the output of one block's memory or attention set to
zero. A part whose removal takes the score to 0 is on the path that copies the value. (Teacher forcing scores the
split's own answer wording, which the model may not produce itself, so the score with nothing removed is below the
free-running reading ceiling: compare the rows with each other, not with `sleeptime eval --reading`.)

    python -m sleeptime.training.ablate --model demo --tasks passkey,chat --n 40

`--bytes` reports instead, for the same teacher-forced answers, how often each byte of the value after its first
is the top prediction, digits and letters apart: whether the model copies one alphabet and not the other; and the
same with the statement left out (the question alone), what the model guesses from the value's own first bytes
and its idea of what values look like: the part of a rate that is no copy.

    python -m sleeptime.training.ablate --model demo --tasks echo --n 80 --bytes
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from sleeptime.models.engine import MemoryEngine
from sleeptime.models.titans import TitansLM
from sleeptime.models.tokenizer import BYTES, Tokenizer
from sleeptime.training.data import Sample, encode_answer, make_sample
from sleeptime.training.evaluate import HELDOUT_SEED, answering_message


@dataclass
class Ablation:
    task: str
    removed: str  # "nothing", or "block B memory" / "block B attention"
    hits: int
    n: int


def parts(model: TitansLM) -> dict[str, nn.Module]:
    """The parts that can be removed, by name: each block's memory and attention, where it has them."""
    found = {}
    for b, block in enumerate(model.blocks):
        for attr, label in (("memory", "memory"), ("attn", "attention")):
            if hasattr(block, attr):
                found[f"block {b} {label}"] = getattr(block, attr)
    return found


@contextmanager
def removed(module: nn.Module | None) -> Iterator[None]:
    """Zero the module's output (its state still updates) for the duration."""
    if module is None:
        yield
        return
    handle = module.register_forward_hook(lambda _m, _args, out: (torch.zeros_like(out[0]), *out[1:]))
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def value_predictions(
    model: TitansLM, task: str, index: int, tokens: int = 1024, statement: bool = True, tokenizer: Tokenizer = BYTES
) -> list[tuple[int, bool]]:
    """Teacher-forced, right after the statement (or with no statement at all): each token (byte) of the answer's
    value, and whether it was the top prediction."""
    sample = make_sample(task, HELDOUT_SEED + index, split="heldout", target_tokens=tokens)
    stated = tokenizer.encode_messages([answering_message(sample)]) if statement else []
    return answer_value_predictions(model, stated + tokenizer.encode_prompt(sample.question), sample, tokenizer)


@torch.no_grad()
def answer_value_predictions(
    model: TitansLM, prompt: list[int], sample: Sample, tokenizer: Tokenizer = BYTES
) -> list[tuple[int, bool]]:
    """The sample's answer teacher-forced after `prompt` (token ids, from an empty state): each token of the answer
    that overlaps the value (each byte, with the byte tokenizer), and whether it was the top prediction."""
    answer = encode_answer(sample.answer_text, tokenizer)
    ids = torch.tensor([prompt + answer], device=next(model.parameters()).device)
    logits, _, _ = model(ids[:, :-1], model.initial_state(1))
    predicted = logits[0, len(prompt) - 1 :].argmax(-1).tolist()
    start = sample.answer_text.index(sample.answer_value)
    end = start + len(sample.answer_value)
    spans = tokenizer.char_spans(sample.answer_text)
    inside = [i for i, (a, b) in enumerate(spans) if a < end and b > start]
    return [(answer[i], predicted[i] == answer[i]) for i in inside]


def value_read(model: TitansLM, task: str, index: int, tokens: int = 1024, tokenizer: Tokenizer = BYTES) -> bool:
    """Are all of the value's tokens the top prediction?"""
    return all(hit for _, hit in value_predictions(model, task, index, tokens, tokenizer=tokenizer))


def byte_copies(
    model: TitansLM, task: str, n: int, tokens: int = 1024, statement: bool = True, tokenizer: Tokenizer = BYTES
) -> dict[str, tuple[int, int]]:
    """(bytes predicted, bytes) for the digits and the letters of the values after their first byte: the bytes
    that a copy gets from what preceded them in the statement, where the first must be found by the question."""
    counts = {"digit": [0, 0], "letter": [0, 0]}
    for i in range(n):
        for token, hit in value_predictions(model, task, i, tokens, statement, tokenizer)[1:]:
            text = tokenizer.decode([token])
            kind = "digit" if text.isdigit() else "letter" if text.isalpha() else None
            if kind:
                counts[kind][0] += hit
                counts[kind][1] += 1
    return {kind: (hits, total) for kind, (hits, total) in counts.items()}


def ablations(
    model: TitansLM, tasks: Sequence[str], n: int, tokens: int = 1024, tokenizer: Tokenizer = BYTES
) -> list[Ablation]:
    rows = []
    for task in tasks:
        for name, module in {"nothing": None, **parts(model)}.items():
            with removed(module):
                hits = sum(value_read(model, task, i, tokens, tokenizer) for i in range(n))
            rows.append(Ablation(task, name, hits, n))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="a shipped model's name or a .safetensors file")
    parser.add_argument("--tasks", default="passkey,chat")
    parser.add_argument("--n", type=int, default=40, help="held-out samples per task")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bytes", action="store_true", help="copy accuracy of digits and letters instead")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = MemoryEngine.load(args.model, "cpu")
    model, tokenizer = engine.model.eval(), engine.tokenizer
    if args.bytes:
        print("| task | digits predicted | letters predicted | without the statement: digits | letters |")
        print("|---|---|---|---|---|")
        for task in args.tasks.split(","):
            cells = [
                f"{hits} of {total}" + (f" ({hits / total:.2f})" if total else "")
                for statement in (True, False)
                for hits, total in byte_copies(model, task, args.n, statement=statement, tokenizer=tokenizer).values()
            ]
            print(f"| {task} | {' | '.join(cells)} |", flush=True)
        return
    print("| task | removed | value read |\n|---|---|---|")
    for row in ablations(model, args.tasks.split(","), args.n, tokenizer=tokenizer):
        print(f"| {row.task} | {row.removed} | {row.hits} of {row.n} |", flush=True)


if __name__ == "__main__":
    main()
