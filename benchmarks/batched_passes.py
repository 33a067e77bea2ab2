"""Batched passes (issue 24): N due contexts consolidated one at a time against together (jobs/consolidate.py
`consolidate_many`, one batch through the model), on the shipped model.

Each context holds a held-out generated chat of about --tokens tokens, stored twice in one SQLite database: one
copy is consolidated one context after another (`consolidate`, as a worker with batch_contexts=1 does), the other in
batches of --batch (`consolidate_many`, as a worker with batch_contexts=--batch does). Whole passes are timed: reading
the messages, the model, anticipated answers (re-reading), publishing. `feed` times the model alone on a second
round of messages, starting from the states the first passes published (at different positions, so rows must line
up first): `engine.consume` per context against `engine.consume_many`.

    python benchmarks/batched_passes.py --contexts 1,8,64 --tokens 4096 --threads 2 --json docs/batched_passes.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from sleeptime.db import Store
from sleeptime.jobs.consolidate import consolidate, consolidate_many
from sleeptime.models.engine import MemoryEngine
from sleeptime.runtime import tune_process
from sleeptime.training.evaluate import draw


def store_history(store: Store, engine: MemoryEngine, context: str, messages: list[dict]) -> int:
    """Append the messages to the context; returns their UTF-8 bytes."""
    store.append_messages(
        context, [(m["role"], m["content"], len(engine.tokenizer.encode_message(m["role"], m["content"]))) for m in messages]
    )
    return sum(len(m["content"].encode()) for m in messages)


def measure(engine: MemoryEngine, contexts: int, tokens: int, batch: int, folder: Path) -> dict:
    histories = [list(draw("chat", i, "heldout", tokens).history) for i in range(contexts)]
    with Store(f"sqlite:///{folder / f'passes-{contexts}.db'}") as store:
        store.migrate()
        size = 0
        for i, history in enumerate(histories):
            size += store_history(store, engine, f"one-{i}", history)
            store_history(store, engine, f"many-{i}", history)

        started = time.perf_counter()
        alone = [consolidate(store, engine, f"one-{i}") for i in range(contexts)]
        one_seconds = time.perf_counter() - started
        started = time.perf_counter()
        together = []
        for first in range(0, contexts, batch):
            together += consolidate_many(store, engine, [f"many-{i}" for i in range(first, min(contexts, first + batch))])
        many_seconds = time.perf_counter() - started
        failed = [r for r in together if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        model_tokens = sum(r.tokens for r in alone)
        assert model_tokens == sum(r.tokens for r in together)

        # the model alone, on a second round of messages, from the heads just published
        states = [engine.decode_state(store.load_checkpoint(f"one-{i}").payload) for i in range(contexts)]
        more = [engine.tokenizer.encode_messages(draw("chat", 1000 + i, "heldout", tokens // 4).history) for i in range(contexts)]
        started = time.perf_counter()
        for state, ids in zip(states, more, strict=True):
            engine.consume(state, ids)
        feed_one = time.perf_counter() - started
        started = time.perf_counter()
        for first in range(0, contexts, batch):
            engine.consume_many(states[first : first + batch], more[first : first + batch])
        feed_many = time.perf_counter() - started
    feed_tokens = sum(len(ids) for ids in more)
    return {
        "contexts": contexts,
        "batch": batch,
        "tokens": model_tokens,
        "bytes": size,
        "one_s": round(one_seconds, 3),
        "together_s": round(many_seconds, 3),
        "one_contexts_per_s": round(contexts / one_seconds, 3),
        "together_contexts_per_s": round(contexts / many_seconds, 3),
        "one_bytes_per_s": round(size / one_seconds),
        "together_bytes_per_s": round(size / many_seconds),
        "speedup": round(one_seconds / many_seconds, 3),
        "feed_tokens": feed_tokens,
        "feed_one_tokens_per_s": round(feed_tokens / feed_one),
        "feed_together_tokens_per_s": round(feed_tokens / feed_many),
        "feed_speedup": round(feed_one / feed_many, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--contexts", default="1,8,64", help="comma-separated numbers of due contexts")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens of history per context (about)")
    parser.add_argument("--batch", type=int, default=64, help="contexts per batch (the daemon's batch_contexts)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: one per core)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="append one JSON line per row here")
    args = parser.parse_args()

    tune_process(args.threads)
    engine = MemoryEngine.load(args.model, args.device)
    machine = f"{platform.machine()} {os.cpu_count()} cpus, {torch.get_num_threads()} torch threads, {args.device}"
    print(f"{engine.model_id}; {machine}")
    print("| contexts | batch | bytes | one at a time: ctx/s | bytes/s | together: ctx/s | bytes/s | passes x | feed x |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for n in (int(x) for x in args.contexts.split(",")):
            row = measure(engine, n, args.tokens, min(args.batch, n), Path(folder))
            print(
                f"| {n} | {row['batch']} | {row['bytes']:,} | {row['one_contexts_per_s']:.2f} | {row['one_bytes_per_s']:,} "
                f"| {row['together_contexts_per_s']:.2f} | {row['together_bytes_per_s']:,} | {row['speedup']:.2f} "
                f"| {row['feed_speedup']:.2f} |",
                flush=True,
            )
            if args.json:
                row.update(model=engine.model_id, machine=machine, date=time.strftime("%Y-%m-%d"))
                with args.json.open("a") as out:
                    out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
