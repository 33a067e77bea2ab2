"""Which parts of a model read a value: the reading ceiling, teacher-forced, with one part's output zeroed.

Each held-out question is asked right after the one message that states its answer (as `evaluate_reading` does), and
the expected answer is fed after it; a sample counts when every byte of the value inside the answer is the model's
top prediction. That is scored with nothing removed, then with the output of one block's memory or attention set to
zero. A part whose removal takes the score to 0 is on the path that copies the value. (Teacher forcing scores the
split's own answer wording, which the model may not produce itself, so the score with nothing removed is below the
free-running reading ceiling: compare the rows with each other, not with `sleeptime eval --reading`.)

    python -m sleeptime.training.ablate --model demo --tasks passkey,chat --n 40
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from sleeptime.models import tokenizer
from sleeptime.models.engine import MemoryEngine
from sleeptime.models.titans import TitansLM
from sleeptime.training.data import encode_answer, make_sample
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
def value_read(model: TitansLM, task: str, index: int, tokens: int = 1024, split: str = "heldout") -> bool:
    """Teacher-forced: are all of the value's bytes the top prediction, right after the statement?"""
    sample = make_sample(task, HELDOUT_SEED + index, split=split, target_tokens=tokens)
    prompt = tokenizer.encode_messages([answering_message(sample)]) + tokenizer.encode_prompt(sample.question)
    answer = encode_answer(sample.answer_text)
    ids = torch.tensor([prompt + answer], device=next(model.parameters()).device)
    logits, _, _ = model(ids, model.initial_state(1))
    predicted = logits[0, len(prompt) - 1 : -1].argmax(-1).tolist()
    start = sample.answer_text.encode("utf-8").index(sample.answer_value.encode("utf-8"))
    value = range(start, start + len(sample.answer_value.encode("utf-8")))
    return all(predicted[i] == answer[i] for i in value)


def ablations(model: TitansLM, tasks: Sequence[str], n: int, tokens: int = 1024) -> list[Ablation]:
    rows = []
    for task in tasks:
        for name, module in {"nothing": None, **parts(model)}.items():
            with removed(module):
                hits = sum(value_read(model, task, i, tokens) for i in range(n))
            rows.append(Ablation(task, name, hits, n))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="a shipped model's name or a .safetensors file")
    parser.add_argument("--tasks", default="passkey,chat")
    parser.add_argument("--n", type=int, default=40, help="held-out samples per task")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = MemoryEngine.load(args.model, "cpu").model.eval()
    print("| task | removed | value read |\n|---|---|---|")
    for row in ablations(model, args.tasks.split(","), args.n):
        print(f"| {row.task} | {row.removed} | {row.hits} of {row.n} |", flush=True)


if __name__ == "__main__":
    main()
