"""Batched passes (issue 24): N due contexts consolidated one at a time against together (jobs/consolidate.py
`consolidate_many`, one batch through the model), on the shipped model.

Each context holds a held-out generated chat of about --tokens tokens, stored in one SQLite database once per timed
round and way (--repeat rounds, the two ways alternating; medians reported): one copy is consolidated one context
after another (`consolidate`, as a worker with batch_contexts=1 does), the other in
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
import statistics
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


def measure(engine: MemoryEngine, contexts: int, tokens: int, batch: int, repeat: int, folder: Path) -> dict:
    histories = [list(draw("chat", i, "heldout", tokens).history) for i in range(contexts)]
    one_times, many_times, feed_one, feed_many = [], [], [], []
    with Store(f"sqlite:///{folder / f'passes-{contexts}.db'}") as store:
        store.migrate()
        size = 0
        for i, history in enumerate(histories):
            size += store_history(store, engine, f"one-0-{i}", history)
            for r in range(repeat):
                for mode in ("one", "many"):
                    if (mode, r) != ("one", 0):
                        store_history(store, engine, f"{mode}-{r}-{i}", history)
        # one pass first, untimed: the first pass of a process pays for lazy set-up (imports, allocator, caches)
        store_history(store, engine, "warm-up", histories[0])
        consolidate_many(store, engine, ["warm-up"])
        for r in range(repeat):  # the two ways alternate, so that a slow spell of the machine hits both
            started = time.perf_counter()
            alone = [consolidate(store, engine, f"one-{r}-{i}") for i in range(contexts)]
            one_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            together = []
            for first in range(0, contexts, batch):
                names = [f"many-{r}-{i}" for i in range(first, min(contexts, first + batch))]
                together += consolidate_many(store, engine, names)
            many_times.append(time.perf_counter() - started)
            failed = [result for result in together if isinstance(result, BaseException)]
            if failed:
                raise failed[0]
        model_tokens = sum(result.tokens for result in alone)
        assert model_tokens == sum(result.tokens for result in together)

        # the model alone, on a second round of messages, from the heads just published
        states = [engine.decode_state(store.load_checkpoint(f"one-0-{i}").payload) for i in range(contexts)]
        more = [engine.tokenizer.encode_messages(draw("chat", 1000 + i, "heldout", tokens // 4).history) for i in range(contexts)]
        for _ in range(repeat):
            started = time.perf_counter()
            for state, ids in zip(states, more, strict=True):
                engine.consume(state, ids)
            feed_one.append(time.perf_counter() - started)
            started = time.perf_counter()
            for first in range(0, contexts, batch):
                engine.consume_many(states[first : first + batch], more[first : first + batch])
            feed_many.append(time.perf_counter() - started)
    one, many = statistics.median(one_times), statistics.median(many_times)
    feed_tokens = sum(len(ids) for ids in more)
    return {
        "contexts": contexts,
        "batch": batch,
        "repeat": repeat,
        "tokens": model_tokens,
        "bytes": size,
        "one_s": [round(t, 3) for t in one_times],
        "together_s": [round(t, 3) for t in many_times],
        "one_contexts_per_s": round(contexts / one, 3),
        "together_contexts_per_s": round(contexts / many, 3),
        "one_bytes_per_s": round(size / one),
        "together_bytes_per_s": round(size / many),
        "speedup": round(one / many, 3),
        "feed_tokens": feed_tokens,
        "feed_one_tokens_per_s": round(feed_tokens / statistics.median(feed_one)),
        "feed_together_tokens_per_s": round(feed_tokens / statistics.median(feed_many)),
        "feed_speedup": round(statistics.median(feed_one) / statistics.median(feed_many), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--contexts", default="1,8,64", help="comma-separated numbers of due contexts")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens of history per context (about)")
    parser.add_argument("--batch", type=int, default=64, help="contexts per batch (the daemon's batch_contexts)")
    parser.add_argument("--repeat", type=int, default=3, help="timed rounds of each way, alternating; medians")
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
            row = measure(engine, n, args.tokens, min(args.batch, n), args.repeat, Path(folder))
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
