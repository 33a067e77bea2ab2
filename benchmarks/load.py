"""Load: concurrent HTTP clients querying while consolidations run (issue 7: 50 clients for 60 s, 0 errors).

The scale-out deployment on a fresh PostgreSQL schema: `sleeptime serve` (the front end alone) and --workers
`sleeptime worker` processes (SLEEPTIME_QUEUE=procrastinate), each with --threads torch threads and the shipped
demo model. The script
  1. seeds --contexts contexts over HTTP, each a held-out chat transcript of about --tokens tokens with its questions
     registered as anticipated, and has the workers consolidate each once (so precomputed answers exist);
  2. for --seconds, runs --clients threads, each with its own keep-alive http.client connection, asking in a loop:
       anticipated  a registered question: precomputed while the context's head has consumed every message, else
                    online (a message after the head may change the answer)
       new          a question nobody asked before (a unique suffix): always online; --online-fraction of the asks
     while --ingesters threads append two messages to a random context every --ingest-interval seconds (all of them
     together, at a fixed rate) and queue a consolidation for it (`POST .../consolidate`, 202), so the workers
     publish new heads under the query load;
  3. counts every non-2xx answer, connection error and timeout (--timeout) as an error, and reports requests,
     errors by kind (with samples), throughput, p50/p90/p99/max latency overall and per source, the consolidation
     runs and jobs of the window (read from the database), the processes' logged warnings and errors, the CPU
     seconds each process used, the machine and the load average; it prints a markdown table and writes the
     JSON report to --out.

Why consolidations are queued explicitly: a query counts as activity, so under this load no context stays idle for
SLEEPTIME_IDLE_AFTER and the idle sweep (set to 1 s here anyway) would rarely queue one; --no-trigger leaves the
sweep alone to do it.

    python benchmarks/load.py                                  # the recorded run: 50 clients, 60 s
    python benchmarks/load.py --seconds 10 --clients 10        # a quick check
    SLEEPTIME_TEST_POSTGRES_URL=postgresql+psycopg://USER@HOST/DB python benchmarks/load.py

The machine's load weighs on every number: on a small shared machine, the clients, the front end and the workers
compete for the same cores, so the latencies are those of the whole deployment on that machine.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# the sibling benchmark's machine() and resolve_model(), imported where used
sys.path.insert(0, str(ROOT / "benchmarks"))

DEFAULT_POSTGRES = os.environ.get("SLEEPTIME_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# the seed of context i's transcript; the ingest stream of context i uses INGEST_SEED + i
SEED, INGEST_SEED = 7000, 9000
ERROR_SAMPLES = 5
# how long a client whose question was shed (503, Retry-After: 1) waits before its next
SHED_WAIT_S = 1.0


# the database


class Schema:
    """A fresh schema in the PostgreSQL database: every connection of every process lands in it (search_path)."""

    def __init__(self, base_url: str):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.name = f"load_{uuid.uuid4().hex[:12]}"
        self.admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{self.name}"')
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={self.name}"})
        self.url = url.render_as_string(hide_password=False)

    def _rows(self, sql: str) -> list[tuple]:
        with self.admin.connect() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql.format(schema=f'"{self.name}"'))]

    def marks(self) -> dict[str, int]:
        """The highest row ids now: what the window adds comes after them."""
        [(runs, checkpoints, jobs)] = self._rows(
            "SELECT (SELECT coalesce(max(id), 0) FROM {schema}.consolidation_runs),"
            " (SELECT coalesce(max(id), 0) FROM {schema}.checkpoints),"
            " (SELECT coalesce(max(id), 0) FROM {schema}.procrastinate_jobs)"
        )
        return {"runs": runs, "checkpoints": checkpoints, "jobs": jobs}

    def consolidations(self, since: dict[str, int]) -> dict:
        """The consolidation runs and checkpoints created after the `since` marks, and the queue jobs created since
        that have not succeeded (the workers delete succeeded jobs: the job events are in the worker logs)."""
        runs = self._rows(
            f"SELECT status, started_at, finished_at FROM {{schema}}.consolidation_runs WHERE id > {int(since['runs'])}"
        )
        [(published,)] = self._rows(
            f"SELECT count(*) FROM {{schema}}.checkpoints WHERE id > {int(since['checkpoints'])}"
        )
        jobs = self._rows(
            "SELECT task_name, status::text, count(*) FROM {schema}.procrastinate_jobs"
            f" WHERE id > {int(since['jobs'])} GROUP BY 1, 2 ORDER BY 1, 2"
        )
        seconds = [(end - start).total_seconds() for status, start, end in runs if status == "published" and end]
        return {
            "runs": dict(sorted(Counter(status for status, _, _ in runs).items())),
            "checkpoints_published": published,
            "run_seconds": quantiles(seconds, ndigits=2),
            "jobs_left": {f"{task.removeprefix('sleeptime.')} {status}": count for task, status, count in jobs},
        }

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{self.name}" CASCADE')
        self.admin.dispose()


# the processes


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (all its threads; Linux /proc); this process when `pid` is None."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        # the fields after "(command)": utime and stime are the 14th and 15th of the line
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


def sleeptime_command() -> list[str]:
    # the console script next to this interpreter (the venv's), so the processes run the same code
    found = shutil.which("sleeptime", path=str(Path(sys.executable).parent)) or shutil.which("sleeptime")
    if found is None:
        raise SystemExit("the `sleeptime` command is not installed in this environment")
    return [found]


class Cluster:
    """`sleeptime serve` and the `sleeptime worker` processes, with their logs in `logdir`."""

    def __init__(self, db: str, model: str, args: argparse.Namespace, logdir: Path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.logdir = logdir
        self.env = os.environ | {
            "SLEEPTIME_DB": db,
            "SLEEPTIME_MODEL": model,
            "SLEEPTIME_DEVICE": "cpu",
            "SLEEPTIME_QUEUE": "procrastinate",
            "SLEEPTIME_THREADS": str(args.threads),
            "OMP_NUM_THREADS": str(args.threads),
            "SLEEPTIME_HOST": "127.0.0.1",
            "SLEEPTIME_PORT": str(self.port),
            "SLEEPTIME_IDLE_AFTER": str(args.idle_after),
            "SLEEPTIME_SWEEP_INTERVAL": str(args.sweep_interval),
            "SLEEPTIME_LOG_LEVEL": "INFO",
            "SLEEPTIME_GENERATORS": str(args.generators),
            "SLEEPTIME_GENERATOR_BATCH": str(args.generator_batch),
            "SLEEPTIME_MAX_ONLINE": str(args.max_online),
        }
        self.workers = args.workers
        self.worker_nice = args.worker_nice
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        """`sleeptime init` (both schemas), then the front end and the workers; close() stops whatever started."""
        command = sleeptime_command()
        init = subprocess.run([*command, "init"], env=self.env, capture_output=True, text=True, check=False)
        if init.returncode != 0:
            raise SystemExit(f"sleeptime init failed:\n{init.stderr}")
        self._start("serve", [*command, "serve"])
        for i in range(self.workers):
            # background work below the front end, as docs/deploy.md runs it (Nice=)
            nice = ["nice", "-n", str(self.worker_nice)] if self.worker_nice else []
            self._start(f"worker-{i}", [*nice, *command, "worker"])

    def _start(self, name: str, command: list[str]) -> None:
        # a session of their own: a Ctrl-C at the terminal reaches the benchmark only, which then stops them once
        with open(self.logdir / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far of each process, of the front end's generator processes (its children), and of this
        one (the load generator: clients and ingest)."""
        seconds = {name: cpu_seconds(proc.pid) for name, proc in self.procs.items()}
        if "serve" in self.procs:
            seconds["generators"] = sum(cpu_seconds(pid) for pid in children(self.procs["serve"].pid))
        return seconds | {"load generator": cpu_seconds()}

    def check(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with status {proc.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 20) -> str:
        return "\n".join((self.logdir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, timeout: float = 300) -> None:
        client = Client(self.port, timeout=10)
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            try:
                if client.request("GET", "/readyz")[0] == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the front end was not ready after {timeout:.0f} s:\n{self.tail('serve')}")
            time.sleep(0.2)
        client.close()

    def close(self) -> dict[str, int | None]:
        """SIGTERM every process (one signal: a drain, the running job finishes), then wait; exit statuses."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        statuses = {}
        for name, proc in self.procs.items():
            try:
                statuses[name] = proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                statuses[name] = proc.wait()
        return statuses

    def log_summary(self, start: datetime, end: datetime) -> dict:
        """Warnings and errors each process logged (JSON lines; anything else, a traceback, counts as `other`), and
        the events (job_started, job_done, job_failed, sweep, ...) it logged between `start` and `end`."""
        summary = {}
        for name in self.procs:
            levels: Counter[str] = Counter()
            events: Counter[str] = Counter()
            samples: list[str] = []
            for line in (self.logdir / f"{name}.log").read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                    level = record["level"]
                except (ValueError, KeyError, TypeError):
                    level, record = "other", {"msg": line}
                if "event" in record and start <= datetime.fromisoformat(record["ts"]) <= end:
                    events[record["event"]] += 1
                if level in ("warning", "error", "critical", "other"):
                    levels[level] += 1
                    if level != "warning" and len(samples) < ERROR_SAMPLES:
                        samples.append(str(record.get("error") or record.get("msg"))[:300])
            summary[name] = {"counts": dict(levels), "samples": samples, "window_events": dict(sorted(events.items()))}
        return summary


# HTTP


class Client:
    """One keep-alive connection; after a failed request the next one opens a new connection."""

    def __init__(self, port: int, timeout: float):
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        data = None if body is None else json.dumps(body).encode()
        headers = {"content-type": "application/json"} if data is not None else {}
        try:
            self.conn.request(method, path, body=data, headers=headers)
            response = self.conn.getresponse()
            raw = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        try:
            return response.status, json.loads(raw or b"null")
        except ValueError:
            return response.status, raw[:300].decode(errors="replace")

    def ok(self, method: str, path: str, body: object = None) -> object:
        status, payload = self.request(method, path, body)
        if status >= 300:
            raise SystemExit(f"{method} {path}: {status} {payload}")
        return payload

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@dataclass
class Record:
    kind: str  # anticipated | new | ingest | trigger
    ms: float
    status: int | None = None  # None: no HTTP answer (timeout, connection error)
    source: str | None = None  # precomputed | online, for a query answered
    server_ms: float | None = None
    error: str | None = None  # the error's kind, for the count by kind


@dataclass
class Errors:
    """Error samples shared by the threads (the counts come from the records)."""

    samples: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sample: dict) -> None:
        with self.lock:
            if len(self.samples) < ERROR_SAMPLES:
                self.samples.append(sample)


def timed(client: Client, kind: str, method: str, path: str, body: object, errors: Errors) -> Record:
    """One request, timed; a non-2xx answer, a timeout or a connection error becomes an error record."""
    started = time.perf_counter()
    try:
        status, payload = client.request(method, path, body)
    except TimeoutError:
        error, status, payload = "timeout", None, None
    except (OSError, http.client.HTTPException) as exc:
        error, status, payload = f"connection: {type(exc).__name__}", None, str(exc)
    else:
        error = None if 200 <= status < 300 else f"http {status}"
    record = Record(kind, (time.perf_counter() - started) * 1000, status, error=error)
    if status == 503 and kind in ("anticipated", "new") and _error_type(payload) == "overloaded":
        # shed by the bound on online answers in flight: an answer in itself (the client retries later), no error
        record.error, record.source = None, "shed"
        return record
    if error is not None:
        errors.add({"kind": kind, "path": path, "error": error, "ms": round(record.ms, 1), "detail": payload})
    elif kind in ("anticipated", "new"):
        record.source, record.server_ms = payload["source"], payload["latency_ms"]
    return record


def _error_type(payload: object) -> str | None:
    error = payload.get("error") if isinstance(payload, dict) else None
    return error.get("type") if isinstance(error, dict) else None


# the load


@dataclass
class Context:
    name: str
    anticipated: list[str]
    messages: int


def seed(client: Client, cluster: Cluster, args: argparse.Namespace) -> list[Context]:
    """Ingest a transcript and register its questions for each context, then have the workers consolidate them."""
    from sleeptime.frontend.schemas import MAX_BATCH_MESSAGES
    from sleeptime.training.data import make_sample

    contexts = []
    started = time.perf_counter()
    for i in range(args.contexts):
        sample = make_sample("chat", SEED + i, split="heldout", target_tokens=args.tokens)
        messages, name = list(sample.history), f"load-{i}"
        for j in range(0, len(messages), MAX_BATCH_MESSAGES):
            client.ok("POST", f"/v1/contexts/{name}/messages", {"messages": messages[j : j + MAX_BATCH_MESSAGES]})
        anticipated = list(dict.fromkeys(q.question for q in sample.queries))
        client.ok("POST", f"/v1/contexts/{name}/anticipated", {"questions": anticipated})
        client.ok("POST", f"/v1/contexts/{name}/consolidate")
        contexts.append(Context(name, anticipated, len(messages)))
    print(f"seeded {len(contexts)} contexts in {time.perf_counter() - started:.1f} s; consolidating", flush=True)
    wait_consolidated(client, cluster, [c.name for c in contexts], args.seed_timeout)
    print(f"consolidated in {time.perf_counter() - started:.1f} s", flush=True)
    return contexts


def wait_consolidated(client: Client, cluster: Cluster, names: list[str], timeout: float) -> None:
    """Until every context has a head that consumed all its messages."""

    def pending(name: str) -> bool:
        status = client.ok("GET", f"/v1/contexts/{name}")
        return status["head_version"] is None or status["pending_messages"] > 0

    deadline = time.monotonic() + timeout
    waiting = list(names)
    while waiting:
        cluster.check()
        waiting = [name for name in waiting if pending(name)]
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(waiting)} contexts not consolidated after {timeout:.0f} s: {waiting[:5]}")
        time.sleep(0.5)


def warm_up(client: Client, contexts: list[Context]) -> None:
    """One question of each kind per context: the front end loads each head state into its cache. Not counted."""
    for ctx in contexts:
        client.ok("POST", f"/v1/contexts/{ctx.name}/query", {"question": ctx.anticipated[0]})
        client.ok("POST", f"/v1/contexts/{ctx.name}/query", {"question": f"{ctx.anticipated[0]} (warm-up)"})


def ask(port: int, index: int, contexts: list[Context], args, stop: threading.Event, errors: Errors) -> list[Record]:
    """One client: questions in a loop on one keep-alive connection until `stop`."""
    rng = random.Random(f"client:{index}")
    client, records = Client(port, args.timeout), []
    for n in itertools.count():
        if stop.is_set():
            break
        ctx = rng.choice(contexts)
        question = rng.choice(ctx.anticipated)
        kind = "new" if rng.random() < args.online_fraction else "anticipated"
        if kind == "new":
            # unique: a question asked before may be precomputed by the next pass (the query log feeds it)
            question = f"{question} (client {index}, ask {n})"
        records.append(timed(client, kind, "POST", f"/v1/contexts/{ctx.name}/query", {"question": question}, errors))
        if records[-1].source == "shed":
            stop.wait(SHED_WAIT_S)  # as Retry-After asks
    client.close()
    return records


def ingest(port: int, index: int, contexts: list[Context], args, stop: threading.Event, errors: Errors) -> list[Record]:
    """One of the --ingesters threads: two more messages for a random context of its share, then a queued
    consolidation; together they append every --ingest-interval seconds."""
    from sleeptime.training.data import iter_samples

    rng = random.Random(f"ingest:{index}")
    # a share of the contexts per thread, each with its own endless stream of held-out chat messages
    streams = {
        c.name: (
            m for s in iter_samples("chat", INGEST_SEED + i, split="heldout", target_tokens=512) for m in s.history
        )
        for i, c in enumerate(contexts)
        if i % args.ingesters == index
    }
    names = list(streams)
    client, records = Client(port, args.timeout), []
    # a fixed rate, however long the requests take (a slow server gets the next append at once, not a backlog);
    # the threads start staggered
    every = args.ingest_interval * args.ingesters
    next_at = time.monotonic() + args.ingest_interval * (index + 1)
    while names and not stop.wait(max(0.0, next_at - time.monotonic())):
        next_at = max(next_at + every, time.monotonic())
        name = rng.choice(names)
        body = {"messages": [next(streams[name]), next(streams[name])]}
        records.append(timed(client, "ingest", "POST", f"/v1/contexts/{name}/messages", body, errors))
        if not args.no_trigger:
            records.append(timed(client, "trigger", "POST", f"/v1/contexts/{name}/consolidate", None, errors))
    client.close()
    return records


class Collector(threading.Thread):
    """A thread that keeps its target's return value, or its exception (a bug in this script, not a request
    error: those are records)."""

    def __init__(self, name: str, target, *args):
        super().__init__(name=name, daemon=True)
        self.work, self.work_args, self.result, self.error = target, args, [], None

    def run(self) -> None:
        try:
            self.result = self.work(*self.work_args)
        except Exception as exc:  # noqa: BLE001
            self.error = exc


def run_window(
    port: int, contexts: list[Context], args: argparse.Namespace
) -> tuple[list[Record], list[Record], float, list]:
    stop, errors = threading.Event(), Errors()
    clients = [Collector(f"client-{i}", ask, port, i, contexts, args, stop, errors) for i in range(args.clients)]
    feeders = [Collector(f"ingest-{i}", ingest, port, i, contexts, args, stop, errors) for i in range(args.ingesters)]
    started = time.perf_counter()
    for thread in [*clients, *feeders]:
        thread.start()
    try:
        stop.wait(args.seconds)
    finally:
        stop.set()
        # the clients finish their request in flight: at most --timeout
        for thread in [*clients, *feeders]:
            thread.join()
    elapsed = time.perf_counter() - started
    for thread in [*clients, *feeders]:
        if thread.error is not None:
            raise RuntimeError(f"thread {thread.name} failed; its records are lost") from thread.error
    queries = [r for thread in clients for r in thread.result]
    return queries, [r for thread in feeders for r in thread.result], elapsed, errors.samples


# the report


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def quantiles(values: list[float], ndigits: int = 1) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), ndigits),
        "p90": round(percentile(values, 90), ndigits),
        "p99": round(percentile(values, 99), ndigits),
        "max": round(max(values), ndigits),
    }


def latency_rows(queries: list[Record], elapsed: float) -> dict:
    """Requests, errors, req/s and client-side latency (ms) for all queries and by source; the server's own
    latency_ms in `server`."""
    groups = {"all": queries}
    for source in ("precomputed", "online", "shed"):
        groups[source] = [r for r in queries if r.source == source]
    groups["errors"] = [r for r in queries if r.error is not None]
    return {
        name: {
            "requests": len(rows),
            "errors": sum(r.error is not None for r in rows),
            "req_per_s": round(len(rows) / elapsed, 1),
            "ms": quantiles([r.ms for r in rows]),
            "server_ms": quantiles([r.server_ms for r in rows if r.server_ms is not None], ndigits=2),
        }
        for name, rows in groups.items()
    }


def table(report: dict) -> str:
    lines = [
        "| queries | requests | errors | req/s | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | server p50 (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in report["queries"].items():
        ms, server = row["ms"], row["server_ms"]
        if not ms["n"]:
            continue
        lines.append(
            f"| {name} | {row['requests']:,} | {row['errors']:,} | {row['req_per_s']:,} | {ms['p50']:,} "
            f"| {ms['p90']:,} | {ms['p99']:,} | {ms['max']:,} | {server.get('p50', '-')} |"
        )
    c, meta = report["consolidations"], report["meta"]
    runs = ", ".join(f"{n} {status}" for status, n in c["runs"].items()) or "none"
    errors = ", ".join(f"{n} {kind}" for kind, n in report["errors"]["by_kind"].items()) or "none"
    ingest, events = report["ingest"], c["worker_events"]
    logged = Counter()
    for log in report["process_logs"].values():
        logged.update(log["counts"])
    cpu = ", ".join(f"{name} {seconds}" for name, seconds in report["cpu_s"].items())
    busy = sum(report["cpu_s"].values()) / meta["elapsed_s"]
    lines += [
        "",
        f"- Errors: {report['errors']['count']} ({errors}); target 0.",
        (
            f"- Consolidations in the window: {c['checkpoints_published']} checkpoints published; runs: {runs}; "
            f"published run p50 {c['run_seconds'].get('p50', '-')} s; worker jobs done {events.get('job_done', 0)}, "
            f"failed {events.get('job_failed', 0)}, superseded {events.get('job_superseded', 0)}. "
            f"Ingest: {ingest['requests']} appends, {ingest['triggers']} queued consolidations, "
            f"{ingest['errors']} errors."
        ),
        (
            f"- Logged by the processes: {logged.get('error', 0)} errors, {logged.get('warning', 0)} warnings, "
            f"{logged.get('other', 0)} other lines; exit statuses {report['exit_statuses']}."
        ),
        (
            f"- Anticipated questions answered precomputed: {report['anticipated_precomputed_share']:.0%} "
            "(the rest found messages after the head and went online)."
        ),
        (
            f"- {meta['clients']} clients, {meta['seconds']} s, {meta['contexts']} contexts of "
            f"~{meta['tokens']:,} tokens, {meta['workers']} workers, {meta['threads']} torch thread(s) per process, "
            f"online fraction {meta['online_fraction']}; model {meta['model']}."
        ),
        f"- CPU seconds in the {meta['elapsed_s']} s window: {cpu} ({busy:.2f} cores busy with them).",
        (
            f"- Machine: {meta['machine']}; load average (1 min) {report['loadavg_1m'][0]} before, "
            f"{report['loadavg_1m'][1]} after."
        ),
        f"- `{meta['command']}`, {meta['date']}.",
    ]
    return "\n".join(lines)


def build_report(
    args, queries, feed, elapsed, samples, consolidations, logs, statuses, load, cpu, model, command
) -> dict:
    from query_latency import machine

    errors = [r for r in queries + feed if r.error is not None]
    anticipated = [r for r in queries if r.kind == "anticipated" and r.source is not None]
    return {
        "meta": {
            "command": command,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(),
            "model": model,
            "clients": args.clients,
            "seconds": args.seconds,
            "elapsed_s": round(elapsed, 2),
            "contexts": args.contexts,
            "tokens": args.tokens,
            "workers": args.workers,
            "threads": args.threads,
            "worker_nice": args.worker_nice,
            "generators": args.generators,
            "generator_batch": args.generator_batch,
            "max_online": args.max_online,
            "online_fraction": args.online_fraction,
            "ingest_interval": args.ingest_interval,
            "ingesters": args.ingesters,
            "trigger": not args.no_trigger,
            "timeout_s": args.timeout,
            "idle_after": args.idle_after,
            "sweep_interval": args.sweep_interval,
        },
        "queries": latency_rows(queries, elapsed),
        "by_kind": {kind: quantiles([r.ms for r in queries if r.kind == kind]) for kind in ("anticipated", "new")},
        "anticipated_precomputed_share": sum(r.source == "precomputed" for r in anticipated) / max(1, len(anticipated)),
        "errors": {
            "count": len(errors),
            "by_kind": dict(Counter(f"{r.kind}: {r.error}" for r in errors).most_common()),
            "samples": samples,
        },
        "ingest": {
            "requests": sum(r.kind == "ingest" for r in feed),
            "triggers": sum(r.kind == "trigger" for r in feed),
            "errors": sum(r.error is not None for r in feed),
            "ms": quantiles([r.ms for r in feed if r.kind == "ingest"]),
            "trigger_ms": quantiles([r.ms for r in feed if r.kind == "trigger"]),
        },
        "consolidations": consolidations
        | {"worker_events": dict(sum((Counter(log["window_events"]) for log in logs.values()), Counter()))},
        "process_logs": logs,
        "exit_statuses": statuses,
        "loadavg_1m": load,
        # CPU seconds each process used in the window: where the machine's cores went
        "cpu_s": cpu,
    }


def interrupt(signum, frame) -> None:
    # a SIGTERM ends the run like a Ctrl-C: the processes are stopped and the schema dropped
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50, help="concurrent query clients")
    parser.add_argument("--seconds", type=float, default=60, help="length of the timed window")
    parser.add_argument("--contexts", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=2048, help="tokens of each seeded transcript")
    parser.add_argument("--workers", type=int, default=2, help="`sleeptime worker` processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (SLEEPTIME_THREADS)")
    parser.add_argument("--worker-nice", type=int, default=0, help="run the workers under `nice -n` this")
    parser.add_argument("--generators", type=int, default=0, help="SLEEPTIME_GENERATORS: generator processes")
    parser.add_argument("--generator-batch", type=int, default=8, help="SLEEPTIME_GENERATOR_BATCH")
    parser.add_argument("--max-online", type=int, default=64, help="SLEEPTIME_MAX_ONLINE: online answers in flight")
    parser.add_argument("--online-fraction", type=float, default=0.1, help="share of new (never asked) questions")
    parser.add_argument("--ingest-interval", type=float, default=0.5, help="seconds between two appends (a fixed rate)")
    parser.add_argument("--ingesters", type=int, default=2, help="threads appending (each its share of contexts)")
    parser.add_argument("--no-trigger", action="store_true", help="append only; the idle sweep queues the passes")
    parser.add_argument("--idle-after", type=float, default=1.0, help="SLEEPTIME_IDLE_AFTER")
    parser.add_argument("--sweep-interval", type=float, default=1.0, help="SLEEPTIME_SWEEP_INTERVAL")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as an error")
    parser.add_argument("--seed-timeout", type=float, default=900.0, help="seconds the seeding consolidations may take")
    parser.add_argument("--model", default="demo", help="shipped model name or model file")
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="database URL (a schema is made in it)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "research" / "logs" / "load.json"), help="the JSON report")
    parser.add_argument("--keep", action="store_true", help="keep the schema and the process logs")
    args = parser.parse_args()
    command = "python benchmarks/load.py " + shlex.join(sys.argv[1:])

    signal.signal(signal.SIGTERM, interrupt)
    from query_latency import resolve_model

    logdir = Path(tempfile.mkdtemp(prefix="sleeptime-load-"))
    model, note = resolve_model(args.model, logdir)
    schema = Schema(args.postgres)
    cluster = Cluster(schema.url, model, args, logdir)
    try:
        cluster.start()
        cluster.wait_ready()
        setup = Client(cluster.port, timeout=600)
        contexts = seed(setup, cluster, args)
        warm_up(setup, contexts)
        marks = schema.marks()
        load_before, cpu_before = os.getloadavg()[0], cluster.cpu()
        print(f"{args.clients} clients for {args.seconds:g} s", flush=True)
        window = datetime.now(timezone.utc)
        queries, feed, elapsed, samples = run_window(cluster.port, contexts, args)
        window_end = datetime.now(timezone.utc)
        load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        cpu = {name: round(seconds - cpu_before[name], 1) for name, seconds in cluster.cpu().items()}
        consolidations = schema.consolidations(marks)
        setup.close()
        cluster.check()
        statuses, logs = cluster.close(), cluster.log_summary(window, window_end)
        report = build_report(
            args, queries, feed, elapsed, samples, consolidations, logs, statuses, load, cpu, note, command
        )
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(table(report))
        print(f"wrote {out}")
    finally:
        # a no-op after a clean run: every process has exited
        cluster.close()
        if args.keep:
            print(f"kept schema {schema.name} and the logs in {logdir}", file=sys.stderr)
        else:
            schema.drop()
            shutil.rmtree(logdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        # the processes are stopped and the schema dropped by then (main's finally)
        sys.exit("interrupted: no report written")
