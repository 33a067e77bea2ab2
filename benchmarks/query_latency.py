"""Query latency over HTTP on loopback against the length of the consolidated history (ARCHITECTURE §6, invariant 7).

For each history length N the script generates a held-out chat transcript of about N tokens, ingests it over HTTP,
registers the sample's questions as anticipated, consolidates (`POST .../consolidate?wait=true`), then times
  precomputed  the anticipated questions: a lookup of the head's precomputed answer
  online       questions nobody anticipated: the cached memory state + the question, a greedy answer of at most
               --max-new-tokens bytes (32: the "<= 32 bytes" target)
  no sleep     the baseline without consolidation: at query time, run the newest min(N, --baseline-cap) tokens of the
               history through a fresh model state, then answer (in-process, no HTTP: it is seconds, not ms)
The server is a separate process (`--serve`: create_app over an App with the answer cap), with --threads torch
threads; the client times each request with a keep-alive http.client connection.

All lengths of a run are consolidated first, then queried in interleaved rounds (the load of the shared machine then
weighs on every length alike). Results accumulate in docs/query_latency.json (one entry per length, with its run and
load); each run rewrites
docs/query_latency.md and docs/query_latency.png from all entries, so long lengths can be added by a later run:

    python benchmarks/query_latency.py --tokens 1024,65536
    python benchmarks/query_latency.py --tokens 1048576,2097152      # minutes per length: consolidation
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = {"precomputed_p50_ms": 2.0, "online_p50_ms": 50.0, "flat_ratio": 1.2}
SEEDS = {1024: 11, 65536: 12, 1048576: 13, 2097152: 14}


def resolve_model(name: str, workdir: Path) -> tuple[str, str]:
    """(model path or name, note). A missing shipped "demo" falls back to random weights in the demo architecture:
    the same compute per token as the trained model, so latencies carry over (answers are gibberish)."""
    from sleeptime.models.engine import resolve_model_path

    try:
        return str(resolve_model_path(name)), f"`{name}`"
    except FileNotFoundError:
        if name != "demo":
            raise
    import torch

    from sleeptime.models import checkpoint
    from sleeptime.models.titans import TitansLM
    from sleeptime.training.train import preset

    torch.manual_seed(0)
    path = workdir / "demo-architecture-random.safetensors"
    checkpoint.save_model(TitansLM(preset("demo").model), path)
    note = (
        "**random weights in the demo architecture** (the shipped `demo` file was missing): the same compute per "
        "token as the trained model, so the latencies carry over; the answers themselves are noise"
    )
    return str(path), note


def engine_class(full_length: bool):
    """MemoryEngine, or a subclass whose online replies are generated and exactly max_new_tokens bytes long.

    A model's END comes at a state-dependent moment (a random model may stop after 1 byte or run to the cap), which
    makes online latency a function of the answer's length rather than of the history's; full-length answers are
    the worst case of the target (answers of at most 32 bytes) and the same work at every history length.
    """
    from sleeptime.models.engine import MemoryEngine, Reply

    class FullLengthAnswers(MemoryEngine):
        def reply(self, state, question, tail=(), max_new_tokens=64):
            prompt = self.tokenizer.encode_messages(tail) + self.tokenizer.encode_prompt(question)
            # the best text token, never END: MemoryEngine.reply's own generation without its early stop
            tokens, logp = self._generate(state, prompt, max_new_tokens, stop=False)
            return Reply(self.tokenizer.decode(tokens), math.exp(logp))

    return FullLengthAnswers if full_length else MemoryEngine


# the server process


def serve(args: argparse.Namespace) -> None:
    import torch
    import uvicorn

    from sleeptime.app import App
    from sleeptime.frontend.app import create_app
    from sleeptime.settings import load_settings

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    settings = load_settings(db=args.db, model=args.model, device="cpu", cache_bytes=1 << 30)
    app = App(settings, engine=engine_class(not args.natural_length).load(args.model, "cpu"))
    app.init()
    # online answers of at most --max-new-tokens bytes (the QueryEngine's public knob; the App has no setting)
    app.queries.max_new_tokens = args.max_new_tokens
    uvicorn.run(create_app(settings, app=app), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


class Server:
    def __init__(self, db: str, model: str, threads: int, max_new_tokens: int, natural_length: bool):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        command = [
            sys.executable, __file__, "--serve", "--db", db, "--model", model, "--port", str(self.port),
            "--threads", str(threads), "--max-new-tokens", str(max_new_tokens),
        ] + (["--natural-length"] if natural_length else [])  # fmt: skip
        env = os.environ | {"OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(command, env=env)
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=3600)
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("the benchmark server exited during startup")
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    break
            except OSError:
                self.conn.close()
            if time.monotonic() > deadline:
                raise SystemExit("the benchmark server did not become ready")
            time.sleep(0.2)

    def request(self, method: str, path: str, body: object = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read() or b"null")

    def ok(self, method: str, path: str, body: object = None) -> dict:
        status, payload = self.request(method, path, body)
        if status >= 300:
            raise SystemExit(f"{method} {path}: {status} {payload}")
        return payload

    def close(self) -> None:
        self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# measurements


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summarize(client_ms: list[float], server_ms: list[float]) -> dict:
    return {
        "n": len(client_ms),
        "p50_ms": round(statistics.median(client_ms), 3),
        "p99_ms": round(percentile(client_ms, 99), 3),
        "server_p50_ms": round(statistics.median(server_ms), 3),
    }


def no_sleep_baseline(engine, tokens: list[int], question: str, reps: int, max_new_tokens: int) -> dict:
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        state, _ = engine.consume(engine.new_state(), tokens)
        engine.answer(state, question, max_new_tokens=max_new_tokens)
        times.append((time.perf_counter() - started) * 1000)
    return {"tokens": len(tokens), "reps": reps, "p50_ms": round(statistics.median(times), 1)}


class History:
    """One consolidated context of about n tokens, and the latencies measured on it."""

    def __init__(self, server: Server, n: int, baseline_cap: int, tokenizer):
        from sleeptime.training.data import make_sample

        self.server, self.n = server, n
        sample = make_sample("chat", SEEDS.get(n, n), split="heldout", target_tokens=n)
        messages = list(sample.history)
        self.context = f"history-{n}"
        path = f"/v1/contexts/{self.context}"
        started = time.perf_counter()
        for i in range(0, len(messages), 1000):
            server.ok("POST", f"{path}/messages", {"messages": messages[i : i + 1000]})
        self.ingest_s = time.perf_counter() - started
        self.anticipated = [q.question for q in sample.queries]
        server.ok("POST", f"{path}/anticipated", {"questions": self.anticipated})
        started = time.perf_counter()
        self.done = server.ok("POST", f"{path}/consolidate?wait=true")
        self.consolidate_s = time.perf_counter() - started
        # nobody anticipated these: "(case i)" makes each a different normalized question
        self.online = [f"{q} (case {i})" for i, q in enumerate(self.anticipated * 8)]
        self.question, self.messages = sample.question, len(messages)
        self.tail_tokens = tokenizer.encode_messages(messages[-baseline_cap:])
        self.tail_tokens = self.tail_tokens[-baseline_cap:]
        self.times = {"precomputed": ([], []), "online": ([], [])}
        self.answer_chars: list[int] = []
        print(f"{n} tokens: ingested in {self.ingest_s:.1f} s, consolidated in {self.consolidate_s:.1f} s", flush=True)

    def ask(self, source: str, count: int, offset: int) -> None:
        questions = self.anticipated if source == "precomputed" else self.online
        client_ms, server_ms = self.times[source]
        for i in range(offset, offset + count):
            started = time.perf_counter()
            answer = self.server.ok(
                "POST", f"/v1/contexts/{self.context}/query", {"question": questions[i % len(questions)]}
            )
            client_ms.append((time.perf_counter() - started) * 1000)
            server_ms.append(answer["latency_ms"])
            if source == "online":
                self.answer_chars.append(len(answer["answer"]))
            if answer["source"] != source:
                raise SystemExit(f"expected a {source} answer, got {answer}")

    def online_chars(self) -> float:
        # only the timed online answers: a random model's answer length (it may emit END early) drives its latency
        return round(statistics.mean(self.answer_chars), 1)

    def result(self, baseline: dict, load: list[float], run: str, model: str) -> dict:
        return {
            "tokens": self.done["tokens"],
            "target_tokens": self.n,
            "messages": self.messages,
            "ingest_s": round(self.ingest_s, 2),
            "consolidate_s": round(self.consolidate_s, 2),
            "consolidate_tokens_per_s": round(self.done["tokens"] / self.consolidate_s),
            "precomputed": summarize(*self.times["precomputed"]),
            "online": summarize(*self.times["online"]) | {"answer_chars_mean": self.online_chars()},
            "no_sleep": baseline,
            "model": model,
            "loadavg_1m": load,
            "run": run,
        }


def measure(server: Server, engine, lengths: list[int], args: argparse.Namespace) -> list[dict]:
    """Consolidate every length first, then time the queries in interleaved rounds, so that the machine's load
    (shared cores) weighs on every length alike and the flatness ratio compares like with like."""
    histories = [History(server, n, args.baseline_cap, engine.tokenizer) for n in lengths]
    load_before = os.getloadavg()[0]
    for h in histories:
        # warm-up: the first online answer loads the state into the cache; the first calls warm the code paths
        h.ask("precomputed", 5, 0)
        h.ask("online", 5, 0)
        h.times = {"precomputed": ([], []), "online": ([], [])}
        h.answer_chars = []
    rounds = 20
    for r in range(rounds):
        for h in histories:
            h.ask("precomputed", args.precomputed_queries // rounds, r)
            h.ask("online", max(1, args.online_queries // rounds), r)
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    run = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results = []
    for h in histories:
        baseline = no_sleep_baseline(engine, h.tail_tokens, h.question, args.baseline_reps, args.max_new_tokens)
        results.append(h.result(baseline, load, run, engine.model_id))
        print(json.dumps(results[-1]), flush=True)
    return results


# the report


def machine() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}"


NOTES_MARK = "## Notes"


def render(report: dict, out: Path) -> None:
    """Rewrite the .md and .png from all results; hand-written text under NOTES_MARK is kept."""
    md = out / "query_latency.md"
    old = md.read_text() if md.exists() else ""
    notes = old.split(NOTES_MARK, 1)[1].lstrip("\n") if NOTES_MARK in old else "(none yet)\n"
    rows = sorted(report["lengths"].values(), key=lambda r: r["target_tokens"])
    lines = [
        (
            "| history tokens | precomputed p50 / p99 (ms) [server] | online p50 / p99 (ms) [server] "
            "| no sleep p50 (ms) [tokens run] | consolidation (s, tokens/s) | load 1m | model | run |"
        ),
        "|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        p, o, b = r["precomputed"], r["online"], r["no_sleep"]
        lines.append(
            f"| {r['tokens']:,} | {p['p50_ms']:.2f} / {p['p99_ms']:.2f} [{p['server_p50_ms']:.2f}] "
            f"| {o['p50_ms']:.1f} / {o['p99_ms']:.1f} [{o['server_p50_ms']:.1f}] | {b['p50_ms']:,.0f} [{b['tokens']:,}] "
            f"| {r['consolidate_s']:.1f} s, {r['consolidate_tokens_per_s']:,} | {r['loadavg_1m'][0]} / "
            f"{r['loadavg_1m'][1]} | {r['model']} | {r['run']} |"
        )
    checks = []
    for r in rows:
        ok_p = r["precomputed"]["p50_ms"] <= TARGETS["precomputed_p50_ms"]
        ok_o = r["online"]["p50_ms"] <= TARGETS["online_p50_ms"]
        checks.append(
            f"- {r['tokens']:,} tokens: precomputed p50 {r['precomputed']['p50_ms']:.2f} ms "
            f"({'meets' if ok_p else 'misses'} <= 2 ms); online p50 {r['online']['p50_ms']:.1f} ms "
            f"({'meets' if ok_o else 'misses'} <= 50 ms)"
        )
    # the flatness ratio compares rows of one run only: their queries were interleaved under the same load
    runs: dict[str, list[dict]] = {}
    for r in rows:
        runs.setdefault(r["run"], []).append(r)
    for run, group in runs.items():
        first, last = group[0], group[-1]
        if first is last:
            continue
        for kind in ("precomputed", "online"):
            ratio = last[kind]["p50_ms"] / first[kind]["p50_ms"]
            verdict = "meets" if ratio <= TARGETS["flat_ratio"] else "misses"
            checks.append(
                f"- {kind} p50 at {last['tokens']:,} / at {first['tokens']:,} tokens (run {run}): {ratio:.2f} "
                f"({verdict} <= 1.2{'' if last['target_tokens'] >= 2097152 else '; the 2M row is not in this run'})"
            )
    meta = report["meta"]
    cap = meta["max_new_tokens"]
    answers = (
        f"stop at the model's END, at most {cap} bytes"
        if meta.get("natural_length")
        else f"are exactly {cap} bytes, END ignored: the worst case of the <= 32-byte target, and the same work at "
        "every length (a model's own stop would make latency follow the answer's length)"
    )
    # the no-sleep cost grows with the history: past the cap, extrapolate it linearly from the capped run
    capped = [r for r in rows if r["no_sleep"]["tokens"] < r["tokens"]]
    extrapolated = "".join(
        f" Uncapped, at {r['tokens']:,} tokens it would be about "
        f"{r['no_sleep']['p50_ms'] * r['tokens'] / r['no_sleep']['tokens'] / 1000:,.0f} s (linear in the tokens run)."
        for r in capped[-1:]
    )
    text = f"""# Query latency against history length

Generated by `benchmarks/query_latency.py`; the targets are ARCHITECTURE §6: precomputed p50 <= 2 ms over HTTP
loopback, online answer (<= 32 bytes) p50 <= 50 ms, p50 at 2M tokens / p50 at 1K <= 1.2. The part above "Notes" is
rewritten from `docs/query_latency.json` by every run; each row names the run it comes from.

- Command(s): {"; ".join(f"`{c}`" for c in meta["commands"])}
- Machine: {meta["machine"]}
- Model: {meta["model_note"]}
- Server: a separate process (`create_app` under uvicorn), {meta["threads"]} torch thread(s), SQLite (WAL) in a
  temp dir. Online answers {answers}.
- Client: one keep-alive `http.client` connection, sequential requests. Latency is the client's round trip; in
  brackets, the server's own `latency_ms` (the QueryEngine's lookup or generation, without HTTP, API-key check
  and query log).
- Queries per row: {meta["precomputed_queries"]} precomputed, {meta["online_queries"]} online, after 5 warm-up
  calls each. Precomputed: the sample's anticipated questions; online: the same questions made distinct. All
  lengths of a run are consolidated first, then queried in 20 interleaved rounds, so the machine's load weighs on
  every length alike; the flatness ratio is taken within one run.
- No sleep: at query time, the newest min(N, {meta["baseline_cap"]:,}) tokens of the history run through a fresh
  state, then the question is answered (in-process, no HTTP).{extrapolated}
- Load: 2 shared cores with other engineers' jobs and a background training run; the load column is the 1-minute
  load average before / after the timed rounds. p99 moves most with it; a quiet machine gives lower numbers.

{chr(10).join(lines)}

Against the targets:

{chr(10).join(checks)}

![query latency against history length](query_latency.png)

{NOTES_MARK}
{notes}"""
    md.write_text(text)
    plot(rows, out / "query_latency.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["tokens"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for kind, color, label in (
        ("precomputed", "tab:green", "precomputed (HTTP)"),
        ("online", "tab:blue", "online <= 32 bytes (HTTP)"),
        ("no_sleep", "tab:red", "no sleep: history through the model at query time"),
    ):
        p50 = [r[kind]["p50_ms"] for r in rows]
        ax.plot(x, p50, "o-", color=color, label=f"{label}, p50")
        if "p99_ms" in rows[0][kind]:
            ax.plot(x, [r[kind]["p99_ms"] for r in rows], "o--", color=color, alpha=0.5, label=f"{label}, p99")
    ax.axhline(TARGETS["precomputed_p50_ms"], color="tab:green", linestyle=":", linewidth=1)
    ax.axhline(TARGETS["online_p50_ms"], color="tab:blue", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("consolidated history (tokens)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("sleeptime query latency against history length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="shipped model name or model file")
    parser.add_argument("--tokens", default="1024,65536,1048576,2097152", help="comma-separated history lengths")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (server and baseline)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="answer cap in bytes")
    parser.add_argument(
        "--natural-length", action="store_true", help="stop answers at the model's END (default: always the full cap)"
    )
    parser.add_argument("--precomputed-queries", type=int, default=400)
    parser.add_argument("--online-queries", type=int, default=60)
    parser.add_argument("--baseline-cap", type=int, default=65536, help="tokens the no-sleep baseline runs at most")
    parser.add_argument("--baseline-reps", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "docs"), help="folder for the .md, .png and .json")
    parser.add_argument("--fresh", action="store_true", help="drop earlier results instead of adding to them")
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md and .png from the .json")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args)

    import torch

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = out / "query_latency.json"
    report = {"meta": {}, "lengths": {}} if args.fresh or not store.exists() else json.loads(store.read_text())
    if args.render_only:
        return render(report, out)
    with tempfile.TemporaryDirectory(prefix="sleeptime-bench-") as tmp:
        model, note = resolve_model(args.model, Path(tmp))
        command = "python benchmarks/query_latency.py " + shlex.join(sys.argv[1:])
        commands = [c for c in report["meta"].get("commands", []) if c != command] + [command]
        report["meta"] = {
            "commands": commands, "machine": machine(), "model_note": note, "threads": args.threads,
            "max_new_tokens": args.max_new_tokens, "natural_length": args.natural_length,
            "precomputed_queries": args.precomputed_queries,
            "online_queries": args.online_queries, "baseline_cap": args.baseline_cap,
        }  # fmt: skip
        engine = engine_class(not args.natural_length).load(model, "cpu")
        db = f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        server = Server(db, model, args.threads, args.max_new_tokens, args.natural_length)
        try:
            results = measure(server, engine, [int(t) for t in args.tokens.split(",") if t], args)
        finally:
            server.close()
        for result in results:
            report["lengths"][str(result["target_tokens"])] = result
        store.write_text(json.dumps(report, indent=1))
        render(report, out)
    print(f"wrote {out / 'query_latency.md'} and {out / 'query_latency.png'}")


if __name__ == "__main__":
    main()
