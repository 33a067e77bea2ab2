"""Fit a span reader (models/reader.py) to a frozen model, and measure it on the held-out split.

    python -m sleeptime.training.reader --model demo --steps 1500
    python -m sleeptime.training.reader --model checkpoints/lineage/model.safetensors --measure-only

A training window is a short generated history read whole (chat facts among chit-chat, pass keys, multi-query
recall), then one of its questions; the label is the value of the latest statement that answers it, as the
positions of its first and last token. In a share of windows every statement of the asked fact is taken out: their
label is the null slot, so the reader learns to say when what it read does not hold the answer. The model is frozen:
only the head learns, and the model's id, its states and its generations stay what they were.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sleeptime.models.engine import MemoryEngine
from sleeptime.models.paths import resolve_model_path
from sleeptime.models.reader import ReaderConfig, ReadWindow, SpanReader, best_span, collate, reader_path, save_reader
from sleeptime.training.data import Sample, make_sample
from sleeptime.training.scoring import _pattern, is_right, rivals

TASKS = {"chat": 0.6, "passkey": 0.2, "recall": 0.2}
OPTIONS = {"chat": {"novel_values": 0.3}, "passkey": {}, "recall": {}}
# generated history sizes (the generator's units): a few statements and the chit-chat between them, as a pass
# re-reads a few messages
SIZES = (256, 512, 768, 1024)
NULL_SHARE = 0.15
# windows that are a few messages of the history (what a pass re-reads), not the whole of it
EXCERPT_SHARE = 0.5
# Windows with a mention of the asked attribute that states no value: the full-text search ranks such a message as
# high as the statement, and "my {attr} is" before a word that is no value must not be pointed at. The reader's own
# phrasings: none of the generator's chit-chat (its held-out split has such a mention, which stays unseen here).
MENTIONS = (
    "My {attr} is a mystery to me, to be honest.",
    "My {attr} is written down somewhere at home.",
    "My {attr} is on a sticky note that I lost.",
    "My {attr} is the one thing I always mix up.",
    "What was my {attr} again? I forget.",
    "I need to look up my {attr} later.",
    "Is my {attr} still the same? No idea.",
    "My {attr} is not something I talk about much.",
)
MENTION_SHARE = 0.3
MENTION_TASKS = ("chat", "passkey")


@dataclass
class Example:
    window: ReadWindow
    start: int  # token position, or -1 for the null slot
    end: int
    value: str
    rivals: tuple[str, ...]


def excerpt(rng: random.Random, messages: list[dict], stating: Sequence[int]) -> list[dict]:
    """A few messages in order, as a pass re-reads them: every statement of the asked fact (an update and the value
    it replaced) and one to six others, which stand for the full-text matches that share words with the question
    (other facts, mentions of the attribute, chit-chat)."""
    stated = set(stating)
    others = [i for i in range(len(messages)) if i not in stated]
    keep = stated | set(rng.sample(others, min(len(others), rng.randint(1, 6))))
    return [messages[i] for i in sorted(keep)]


def example(
    sample: Sample, query_index: int, tokenizer, drop_answer: bool, rng: random.Random | None = None,
    mention: tuple[str, float] | None = None,
) -> Example | None:
    """One window from a sample's history (whole, or with `rng` an excerpt of it) and one of its questions; None
    when the generator's value cannot be found as a whole token of any message (it then has no span to point at).
    `mention`: (a MENTIONS template, where in the window from 0 to 1) adds a user message that names the asked
    attribute without a value; the label stays the latest statement's value, or the null slot."""
    query = sample.queries[query_index]
    messages = sample.history.messages()
    pattern = _pattern(query.answer_value)
    values = [f.value for f in sample.facts if f.attribute == query.attribute] or [query.answer_value]
    patterns = [_pattern(v) for v in values]
    stating = [i for i, m in enumerate(messages) if any(p.search(m["content"]) for p in patterns)]
    if rng is not None:
        messages = excerpt(rng, messages, stating)
    if mention is not None:
        template, where = mention
        at = round(where * len(messages))
        messages = [*messages[:at], {"role": "user", "content": template.format(attr=query.attribute)}, *messages[at:]]
    if drop_answer:
        # every statement of the asked fact, old values included: nothing left to point at
        messages = [m for m in messages if not any(p.search(m["content"]) for p in patterns)]
        window = ReadWindow.build(tokenizer, messages, query.question)
        return Example(window, -1, -1, query.answer_value, rivals(sample))
    holding = [i for i, m in enumerate(messages) if pattern.search(m["content"])]
    if not holding:
        return None
    latest = holding[-1]
    match = pattern.search(messages[latest]["content"])
    window = ReadWindow.build(tokenizer, messages, query.question)
    inside = [
        t for t, (m, (a, b)) in enumerate(zip(window.message, window.spans))
        if m == latest and b > match.start() and a < match.end()
    ]
    if not inside:
        return None
    return Example(window, inside[0], inside[-1], query.answer_value, rivals(sample))


def draw_examples(
    rng: random.Random, n: int, split: str, tokenizer, null_share: float = NULL_SHARE,
    mention_share: float = MENTION_SHARE,
) -> list[Example]:
    tasks, weights = zip(*TASKS.items())
    out: list[Example] = []
    while len(out) < n:
        task = rng.choices(tasks, weights)[0]
        sample = make_sample(task, rng.getrandbits(63), split=split, target_tokens=rng.choice(SIZES), **OPTIONS[task])
        short = rng if rng.random() < EXCERPT_SHARE else None
        mention = (rng.choice(MENTIONS), rng.random()) if task in MENTION_TASKS and rng.random() < mention_share else None
        found = example(sample, rng.randrange(len(sample.queries)), tokenizer, rng.random() < null_share, short, mention)
        if found is not None:
            out.append(found)
    return out


def featurize(
    engine: MemoryEngine, windows: Sequence[ReadWindow], every_layer: bool = True, batch: int = 16
) -> list[torch.Tensor]:
    """Each window's hidden states [T, C] (fp16, to keep a pool of thousands in memory), read from an empty memory
    by the frozen model: computed once, then the head trains over them for many steps."""
    out: list[torch.Tensor] = []
    for i in range(0, len(windows), batch):
        chunk = windows[i : i + batch]
        ids = collate(chunk, engine.tokenizer.pad, engine.device)["ids"]
        with torch.no_grad():
            hidden, _ = engine.model.features(ids, every_layer=every_layer)
        out += [h[: len(w.ids)].to(torch.float16).cpu() for h, w in zip(hidden, chunk)]
    return out


def head_logits(reader: SpanReader, hiddens: Sequence[torch.Tensor], windows: Sequence[ReadWindow]):
    """The reader's start and end log-probabilities over precomputed hidden states, right-padded to one length."""
    batch = collate(windows, 0)
    T = batch["ids"].shape[1]
    hidden = torch.stack([F.pad(h.float(), (0, 0, 0, T - h.shape[0])) for h in hiddens])
    return reader(hidden, batch["candidate"], batch["place"], batch["ask_at"])


def loss_of(start, end, examples: Sequence[Example]):
    T = start.shape[1] - 1
    targets_start = torch.tensor([e.start if e.start >= 0 else T for e in examples])
    targets_end = torch.tensor([e.end if e.end >= 0 else T for e in examples])
    return F.nll_loss(start, targets_start) + F.nll_loss(end, targets_end)


def measure(reader: SpanReader, hiddens: Sequence[torch.Tensor], examples: Sequence[Example], batch: int = 64) -> dict:
    """Held-out: answered right (the scoring rule, on the copied text), wrong, or left to generation (null), for the
    windows that hold the answer; and how often the null slot is picked where the answer was taken out."""
    right = wrong = declined = nulls_kept = nulls = 0
    with torch.no_grad():
        for i in range(0, len(examples), batch):
            chunk = examples[i : i + batch]
            start, end = head_logits(reader, hiddens[i : i + batch], [e.window for e in chunk])
            for row, e in enumerate(chunk):
                span = best_span(start[row], end[row], e.window, reader.cfg.max_span)
                if e.start < 0:
                    nulls += 1
                    nulls_kept += span is None
                elif span is None:
                    declined += 1
                elif is_right(e.value, e.window.text_of(span.first, span.last), e.rivals):
                    right += 1
                else:
                    wrong += 1
    return {
        "answerable": right + wrong + declined, "right": right, "wrong": wrong, "declined": declined,
        "null_windows": nulls, "null_picked": nulls_kept,
    }


def fit(
    engine: MemoryEngine, examples: Sequence[Example], steps: int, batch: int = 32, lr: float = 3e-3, seed: int = 0,
    log=print, heldout: Sequence[Example] = (), every: int = 500, every_layer: bool = True,
) -> SpanReader:
    """A reader trained for `steps` minibatches drawn from `examples` (featurized once)."""
    rng = random.Random(f"reader:{seed}")
    torch.manual_seed(seed)
    started = time.monotonic()
    pool = len(examples)
    cfg = ReaderConfig(dim=engine.config.dim * (engine.config.layers if every_layer else 1), every_layer=every_layer)
    hiddens = featurize(engine, [e.window for e in examples], every_layer)
    held = featurize(engine, [e.window for e in heldout], every_layer) if heldout else []
    log(json.dumps({"pool": pool, "heldout": len(heldout), "featurized_seconds": round(time.monotonic() - started, 1)}))
    reader = SpanReader(cfg)
    opt = torch.optim.AdamW(reader.parameters(), lr=lr, weight_decay=0.01)
    for step in range(1, steps + 1):
        rows = rng.sample(range(pool), min(batch, pool))
        start, end = head_logits(reader, [hiddens[r] for r in rows], [examples[r].window for r in rows])
        loss = loss_of(start, end, [examples[r] for r in rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:  # cosine to a tenth
            group["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        opt.step()
        if step % 100 == 0:
            log(json.dumps({"step": step, "loss": round(loss.item(), 4), "seconds": round(time.monotonic() - started, 1)}))
        if heldout and (step % every == 0 or step == steps):
            reader.eval()
            log(json.dumps({"step": step, "heldout": measure(reader, held, heldout)}))
            reader.train()
    return reader.eval().to(engine.device)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="shipped model name or model file")
    parser.add_argument("--out", help="reader file (default: beside the model)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--pool", type=int, default=3000, help="generated training windows, featurized once")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--heldout", type=int, default=200, help="held-out windows measured during and after")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--last-layer", action="store_true", help="read only the last block's output")
    parser.add_argument("--measure-only", action="store_true", help="measure the model's own reader; fit nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = resolve_model_path(args.model)
    engine = MemoryEngine.load(str(path), device="cpu")
    heldout = draw_examples(random.Random("reader:heldout"), args.heldout, "heldout", engine.tokenizer)
    if args.measure_only:
        if engine.reader is None:
            raise SystemExit(f"{path} has no reader beside it ({reader_path(path)})")
        hiddens = featurize(engine, [e.window for e in heldout], engine.reader.cfg.every_layer)
        print(json.dumps({"model": engine.model_id, "heldout": measure(engine.reader, hiddens, heldout)}))
        return
    examples = draw_examples(random.Random("reader:train"), args.pool, "train", engine.tokenizer)
    reader = fit(engine, examples, args.steps, args.batch, args.lr, heldout=heldout, every_layer=not args.last_layer)
    from sleeptime.models.checkpoint import model_digest

    out = Path(args.out) if args.out else reader_path(path)
    save_reader(reader, out, model_digest(path), extra={"steps": str(args.steps)})
    print(f"reader written to {out}")


if __name__ == "__main__":
    main()
