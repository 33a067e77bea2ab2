"""Which stored fact a memory head reads when a question asks for one: the key probe, per layer and head.

A delta-rule memory stores a value along the key written with it; reading with query q returns the stored values
weighted by q . k. For held-out chat transcripts (several facts, some updated) this feeds history, question and the
split's answer in one forward, and at the answer token just before the value (where the model must fetch it) ranks
every planted statement by write strength x (query . key) at the first token of its value: the key that would
return that value. Per layer and head it reports how often the strongest one is a statement of the attribute asked
for ("attribute"), and how often it is the attribute's latest statement ("latest"), with facts that were updated
and facts that were not apart; "chance" is one over the number of statements. Keys that see only the few tokens
before a value ("is ") score near chance: every fact is stored under the same key, and an update cannot overwrite.

    python -m sleeptime.training.keys --model checkpoints/lineage/model.safetensors --tokens 1024 --n 40
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from sleeptime.models.engine import MemoryEngine
from sleeptime.models.memory import NeuralMemory
from sleeptime.models.titans import TitansLM
from sleeptime.models.tokenizer import Tokenizer
from sleeptime.training.data import Sample, make_sample
from sleeptime.training.evaluate import HELDOUT_SEED


@dataclass
class HeadKeys:
    layer: int
    head: int
    n: int = 0
    attribute: int = 0  # strongest statement is one of the asked attribute's
    latest: int = 0  # strongest statement is the asked attribute's latest
    updated_n: int = 0  # samples whose asked attribute was stated more than once
    updated_latest: int = 0
    chance: float = 0.0  # mean of 1 / statements

    def row(self) -> dict:
        return asdict(self)


def token_index(tokenizer: Tokenizer, text: str, char: int) -> int:
    """The index, among `tokenizer.encode_text(text)`, of the first token that holds character `char` of `text`."""
    return next(i for i, (start, end) in enumerate(tokenizer.char_spans(text)) if start <= char < end)


def statement_positions(sample: Sample, tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """Token positions of the first token of every planted value in the history, in order, and the index of the
    fact each one states (into sample.facts)."""
    positions, facts, at = [], [], 0
    messages = list(sample.history)
    for message in messages:
        ids = tokenizer.encode_message(message["role"], message["content"])
        for f, fact in enumerate(sample.facts):
            char = message["content"].find(fact.value) if message["role"] == "user" else -1
            if char >= 0 and f not in facts:
                positions.append(at + 1 + token_index(tokenizer, message["content"], char))  # 1: the role token
                facts.append(f)
        at += len(ids)
    return positions, facts


def read_position(sample: Sample, tokenizer: Tokenizer, prompt_start: int) -> int:
    """The position, in history + prompt + answer, of the token after which the answer's value begins."""
    char = sample.answer_text.find(sample.answer_value)
    return prompt_start + token_index(tokenizer, sample.answer_text, char) - 1


@torch.no_grad()
def probe_keys(model: TitansLM, tokenizer: Tokenizer, samples: Sequence[Sample]) -> list[HeadKeys]:
    memories = [m for m in model.modules() if isinstance(m, NeuralMemory)]
    heads = [HeadKeys(layer, h) for layer, m in enumerate(memories) for h in range(m.cfg.heads)]
    for sample in samples:
        positions, facts = statement_positions(sample, tokenizer)
        asked = [i for i in facts if sample.facts[i].attribute == sample.queries[0].attribute]
        if not asked:
            continue
        latest = max(asked, key=lambda i: facts.index(i))
        history = tokenizer.encode_messages(sample.history)
        prompt = tokenizer.encode_prompt(sample.question)
        answer = tokenizer.encode_text(sample.answer_text)
        ids = torch.tensor([history + prompt + answer])
        read = read_position(sample, tokenizer, len(history) + len(prompt))
        captured: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

        def capture(memory: NeuralMemory, args: tuple, captured: list = captured) -> None:
            q, k, _, _ = memory.project(args[0], None)
            captured.append((q[0], k[0], memory.gate_values(args[0])["beta"][0]))  # [H, T, D] x2, [H, T]

        handles = [m.register_forward_pre_hook(capture) for m in memories]
        try:
            model(ids)
        finally:
            for handle in handles:
                handle.remove()
        pos = torch.tensor(positions)
        updated = sum(1 for i in facts if sample.facts[i].attribute == sample.queries[0].attribute) > 1
        head_rows = iter(heads)
        for q, k, beta in captured:
            scores = beta[:, pos] * (k[:, pos] @ q[:, read].unsqueeze(-1)).squeeze(-1)  # [H, statements]
            for h in range(q.shape[0]):
                row = next(head_rows)
                strongest = facts[int(scores[h].argmax())]
                row.n += 1
                row.chance += 1 / len(facts)
                row.attribute += strongest in asked
                row.latest += strongest == latest
                row.updated_n += updated
                row.updated_latest += updated and strongest == latest
    for row in heads:
        row.chance = round(row.chance / max(1, row.n), 3)
    return heads


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="a shipped model's name or a .safetensors file")
    parser.add_argument("--tokens", type=int, default=1024, help="history length (generator units: bytes)")
    parser.add_argument("--n", type=int, default=40, help="held-out chat samples")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="one JSON object per layer and head")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    engine = MemoryEngine.load(args.model, "cpu")
    samples = [
        make_sample("chat", HELDOUT_SEED + i, split="heldout", target_tokens=args.tokens) for i in range(args.n)
    ]
    rows = probe_keys(engine.model, engine.tokenizer, samples)
    if args.json:
        for row in rows:
            print(json.dumps(row.row()))
        return
    print("| layer | head | attribute | latest | latest, updated facts | chance of latest |\n|---|---|---|---|---|---|")
    for r in rows:
        updated = f"{r.updated_latest} of {r.updated_n}" if r.updated_n else "-"
        print(f"| {r.layer} | {r.head} | {r.attribute} of {r.n} | {r.latest} of {r.n} | {updated} | {r.chance:.2f} |")


if __name__ == "__main__":
    main()
