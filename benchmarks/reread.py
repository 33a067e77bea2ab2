"""Re-reading against recall (issue 22): held-out chat transcripts consolidated through the daemon's own path, each
question answered four ways, by the shipped model (with its span reader, where it has one: models/reader.py):

  online     asked after the pass (nobody anticipated it): the front end's QueryEngine, from the head's memory state
             (the tail is empty: the pass consumed every message)
  memory     the precomputed answer as passes made it before re-reading: `answer_questions` from the state alone
  reread     the precomputed answer the next pass makes for the question asked online: with no new message the pass
             answers it for the same head after re-reading its provenance and full-text matches (jobs/anticipate.py);
             the question is then served precomputed (counted in `served`); `pointed`: the span reader copied it
             (`pointed_alone`: the surer pointing was the one from an empty memory rather than from the state)
  fresh      the same reading as `reread`, pointing and generating both from an empty memory (not what the pass
             does: it shows how much of a gap to the ceiling comes from the state the reading starts from)
  reading    the reading ceiling (training/evaluate.py `evaluate_reading`): the question right after the one message
             that states its answer, from an empty memory, generated; `reading_reply`: the same through `engine.reply`
             (pointed at by the span reader where it finds the value)

A hit is a right answer by `training/scoring.right` (the value as a whole token, no rival value beside it). `extra_ms` is the re-read answer's time minus the memory-only
answer's, per question (search, reading, the longer prefill). One SQLite database per sample, in a temp folder.

    python benchmarks/reread.py --lengths 4096,32768 --n 40 --out docs/reread/chat.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from sleeptime.db import Store
from sleeptime.frontend.query import QueryEngine
from sleeptime.jobs.anticipate import answer_questions, gather_questions, reader_of
from sleeptime.jobs.consolidate import consolidate
from sleeptime.models.engine import MemoryEngine
from sleeptime.models.tokenizer import ANSWER_TOKENS
from sleeptime.training.evaluate import answering_message, draw
from sleeptime.training.scoring import right


def run_sample(engine: MemoryEngine, task: str, index: int, tokens: int, folder: Path) -> dict:
    sample = draw(task, index, "heldout", tokens)
    value = sample.answer_value
    with Store(f"sqlite:///{folder / f'{task}-{tokens}-{index}.db'}") as store:
        store.migrate()
        batch = []
        for message in sample.history:
            batch.append((message["role"], message["content"], len(engine.tokenizer.encode_message(**message))))
            if len(batch) == 1024:
                store.append_messages("c", batch)
                batch = []
        if batch:
            store.append_messages("c", batch)
        started = time.monotonic()
        consolidate(store, engine, "c", reread="off")
        pass_seconds = time.monotonic() - started
        queries = QueryEngine(store, lambda: engine, cache_bytes=1 << 30)
        online = queries.query("c", sample.question)
        # the next pass: the question asked online is enough for one, and it re-reads
        answered = consolidate(store, engine, "c").answered
        served = queries.query("c", sample.question)
        # the same question from the same state, memory alone and re-read, timed apart
        state = engine.decode_state(store.load_checkpoint("c").payload)
        [question] = [q for q in gather_questions(store, "c") if q.text == sample.question]
        cursor = store.get_context("c").last_seq
        t0 = time.perf_counter()
        [memory] = answer_questions(engine, state, [question], ANSWER_TOKENS)
        t1 = time.perf_counter()
        read = reader_of(store, "c", cursor, engine)
        [reread] = answer_questions(engine, state, [question], ANSWER_TOKENS, read=read)
        t2 = time.perf_counter()
        [fresh] = answer_questions(engine, engine.new_state(), [question], ANSWER_TOKENS, read=read)
        read_messages = [{"role": m.role, "content": m.content} for m in read(question)]
        # the pass points from the state and from an empty memory, and keeps the surer (engine.reply)
        from_state = engine.point(state, question.text, read_messages)
        alone = engine.point(engine.new_state(), question.text, read_messages)
        pointed_alone = alone is not None and (from_state is None or alone.confidence > from_state.confidence)
        reading = engine.answer(engine.new_state(), sample.question, tail=[answering_message(sample)])
        reading_reply = engine.reply(engine.new_state(), sample.question, tail=[answering_message(sample)])
        stating = {i + 1 for i, m in enumerate(sample.history) if value in m["content"]}
    return {
        "task": task, "tokens": tokens, "sample": index, "expected": value,
        "online": right(sample, online.answer), "memory": right(sample, memory.text), "reread": right(sample, reread.text),
        "fresh": right(sample, fresh.text),
        "served": right(sample, served.answer) and served.source == "precomputed" and answered == 1,
        "reading": right(sample, reading), "reading_reply": right(sample, reading_reply.text),
        "sources": list(reread.sources), "read_stating": bool(stating & set(reread.sources)),
        "pointed": from_state is not None or alone is not None, "pointed_alone": pointed_alone,
        "extra_ms": round((t2 - t1 - (t1 - t0)) * 1000, 2), "pass_seconds": round(pass_seconds, 2),
        "answers": {
            "online": online.answer, "memory": memory.text, "reread": reread.text, "fresh": fresh.text, "reading": reading,
            "reading_reply": reading_reply.text,
        },
        "confidences": {
            "online": online.confidence, "memory": memory.confidence, "reread": reread.confidence,
            "fresh": fresh.confidence, "reading_reply": reading_reply.confidence,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--task", default="chat")
    parser.add_argument("--lengths", default="4096,32768,262144,1048576")
    parser.add_argument("--n", default="40", help="samples per length: one number, or one per length")
    parser.add_argument("--first", type=int, default=0, help="index of the first held-out sample (to extend a run)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="a JSONL file: one row per sample, then one summary per length")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    engine = MemoryEngine.load(args.model, "cpu")
    lengths = [int(x) for x in args.lengths.split(",")]
    ns = [int(x) for x in args.n.split(",")]
    ns = ns * len(lengths) if len(ns) == 1 else ns
    with open(args.out, "a") as out, tempfile.TemporaryDirectory() as tmp:
        for tokens, n in zip(lengths, ns, strict=True):
            rows = []
            for index in range(args.first, args.first + n):
                rows.append(run_sample(engine, args.task, index, tokens, Path(tmp)))
                out.write(json.dumps(rows[-1]) + "\n")
                out.flush()
            summary = {
                "summary": True, "task": args.task, "tokens": tokens, "n": n, "first": args.first,
                "model": engine.model_id,
            }
            for key in (
                "online", "memory", "reread", "served", "fresh", "reading", "reading_reply", "read_stating", "pointed",
                "pointed_alone",
            ):
                summary[key] = sum(r[key] for r in rows)
            summary["extra_ms_median"] = statistics.median(r["extra_ms"] for r in rows)
            summary["pass_seconds_mean"] = round(statistics.mean(r["pass_seconds"] for r in rows), 2)
            out.write(json.dumps(summary) + "\n")
            out.flush()
            print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
