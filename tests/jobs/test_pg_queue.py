"""The procrastinate queue on the real PostgreSQL: deferring in-process, then fleets of real `sleeptime worker`
processes under ingest, SIGKILL and killed database connections.

The invariants every fleet test checks, per context: its checkpoints form one chain (versions 1..n, each the child
of the one before, cursors rising); the published runs tile the messages (each seq consumed by exactly one
checkpoint, all of them by the end); no two runs overlap in time.
"""

import itertools
import json
import random
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, text

from sleeptime.app import App
from sleeptime.settings import SettingsError, load_settings

pytestmark = pytest.mark.postgres

WORDS = ["alpha", "beta", "gamma", "delta", "cat", "blue", "the", "river", "runs", "north", "seven", "apples"]
# fast periods so a test sees sweeps, heartbeats and stalled-job recovery within seconds
WORKER_ENV = {
    "SLEEPTIME_QUEUE": "procrastinate",
    "SLEEPTIME_IDLE_AFTER": "0.3",
    "SLEEPTIME_SWEEP_INTERVAL": "1",
    "SLEEPTIME_HEARTBEAT_SECONDS": "1",
    "SLEEPTIME_STALLED_AFTER": "4",
    "SLEEPTIME_KEEP_CHECKPOINTS": "100000",
    "SLEEPTIME_THREADS": "1",
}


def messages(n: int, words: int = 12, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": " ".join(rng.choices(WORDS, k=words))}
        for i in range(n)
    ]


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


@pytest.fixture
def pg_app(pg_url, tiny_engine, tiny_model_path):
    """An initialised App on the procrastinate queue (sleeptime's and procrastinate's schemas applied)."""
    settings = load_settings(
        db=pg_url, model=str(tiny_model_path), device="cpu", queue="procrastinate", keep_checkpoints=100000
    )
    app = App(settings, engine=tiny_engine)
    app.init()
    yield app
    app.close()


class WorkerProcess:
    """`sleeptime worker` with its JSON log lines collected as they come."""

    def __init__(self, cli):
        env = WORKER_ENV
        self.proc = cli.popen("worker", env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stderr.readline, "")))
        self.reader.start()

    def events(self, **fields) -> list[dict]:
        found = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if fields.items() <= event.items():
                found.append(event)
        return found

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self.reader.join(10)
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def workers(make_cli, pg_app):
    """start(n): n worker processes on pg_app's database; all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(n: int) -> list[WorkerProcess]:
        cli = make_cli(pg_app.settings.db)
        new = [WorkerProcess(cli) for _ in range(n)]
        started.extend(new)
        return new

    yield start
    for worker in started:
        worker.stop()


class Ingest(threading.Thread):
    """Appends a few messages to a random context every few milliseconds until stopped."""

    def __init__(self, app: App, names: list[str], seed: int = 0):
        super().__init__(daemon=True)
        self.app, self.names, self.rng = app, names, random.Random(seed)
        self.halt = threading.Event()
        self.count = 0

    def run(self) -> None:
        while not self.halt.wait(0.02):
            name = self.rng.choice(self.names)
            self.count += len(self.app.ingest(name, messages(self.rng.randint(1, 3), seed=self.rng.random())))

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


def drained(app: App, names: list[str]) -> bool:
    return all(s.pending_messages == 0 for s in app.status()) and not queued_consolidations(app)


def queued_consolidations(app: App) -> list:
    jobs = app.pg_queue.list_jobs(task="sleeptime.consolidate")
    return [job for job in jobs if job.status in ("todo", "doing")]


def check_invariants(app: App, names: list[str]) -> dict[str, int]:
    """The module docstring's invariants; returns the number of checkpoints per context."""
    store, counts = app.store, {}
    for name in names:
        ctx = store.get_context(name)
        assert ctx.cursor_seq == ctx.last_seq, f"{name}: messages left unconsumed"
        chain = sorted(store.list_checkpoints(name), key=lambda c: c.version)
        assert [c.version for c in chain] == list(range(1, len(chain) + 1)), name
        assert [c.parent_version for c in chain] == [None, *range(1, len(chain))], name
        runs = store.list_runs(name)
        assert all(r.status in ("published", "abandoned", "failed") for r in runs), (name, runs)
        published = sorted((r for r in runs if r.status == "published"), key=lambda r: r.published_version)
        assert [r.published_version for r in published] == [c.version for c in chain], name
        # the published ranges tile (0, last seq]: every message consumed exactly once
        assert [r.from_seq for r in published] == [0, *(r.to_seq for r in published[:-1])], name
        assert [c.cursor_seq for c in chain] == [r.to_seq for r in published] and chain[-1].cursor_seq == ctx.last_seq
        spans = sorted((r.started_at, r.finished_at) for r in runs)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start, f"{name}: two runs overlap in time"
        counts[name] = len(chain)
    return counts


# in-process: the settings, the schema and deferring


def test_the_procrastinate_queue_needs_postgresql(tmp_path):
    with pytest.raises(SettingsError, match="SLEEPTIME_QUEUE: the procrastinate queue needs PostgreSQL"):
        load_settings(db=f"sqlite:///{tmp_path / 'db.sqlite'}", queue="procrastinate")


def test_init_applies_the_queue_schema_once(pg_app):
    assert pg_app.pg_queue.schema_applied()
    assert pg_app.pg_queue.apply_schema() is False
    assert pg_app.init() == pg_app.init()


def test_a_burst_of_triggers_leaves_one_waiting_job(pg_app):
    pg_app.ingest("c", messages(2))
    ids = {pg_app.enqueue("consolidate", "c", {"reason": "http"}) for _ in range(5)}
    assert len(ids) == 1
    [job] = queued_consolidations(pg_app)
    assert (job.id, job.lock, job.queueing_lock, job.task_kwargs) == (
        ids.pop(),
        "context:c",
        "consolidate:c",
        {"context": "c", "reason": "http"},
    )
    # a prune is its own job under the same per-context lock
    prune = pg_app.enqueue("prune", "c")
    [job] = pg_app.pg_queue.list_jobs(id=prune)
    assert (job.lock, job.queueing_lock) == ("context:c", "prune:c")


def test_forget_deletes_the_contexts_queued_jobs(pg_app):
    pg_app.ingest("c", messages(2))
    pg_app.ingest("d", messages(2))
    pg_app.enqueue("consolidate", "c")
    pg_app.enqueue("prune", "c")
    kept = pg_app.enqueue("consolidate", "d")
    deleted = pg_app.forget("c")
    assert deleted["queue_jobs"] == 2 and deleted["messages"] == 2
    assert [job.id for job in pg_app.pg_queue.list_jobs()] == [kept]
    # the name is free again, and so is its queueing lock
    pg_app.ingest("c", messages(1))
    assert pg_app.enqueue("consolidate", "c") != kept


def test_bad_jobs_are_refused_and_queue_nothing(pg_app):
    from sleeptime import SleeptimeError
    from sleeptime.db import UnknownContext

    with pytest.raises(UnknownContext):
        pg_app.enqueue("consolidate", "nobody")
    with pytest.raises(SleeptimeError, match="unknown job kind"):
        pg_app.enqueue("replay", "nobody")
    assert queued_consolidations(pg_app) == []


# real worker processes


def test_three_workers_serve_a_hundred_contexts_under_ingest(pg_app, workers):
    names = [f"ctx{i:03d}" for i in range(100)]
    for i, name in enumerate(names):
        pg_app.ingest(name, messages(2, seed=i))
    fleet = workers(3)
    wait_until(lambda: all(w.events(event="daemon_started") for w in fleet), 120, "three workers")
    ingest = Ingest(pg_app, names)
    ingest.start()
    time.sleep(8)
    ingest.stop()
    wait_until(lambda: drained(pg_app, names), 180, "every context consolidated")

    counts = check_invariants(pg_app, names)
    assert sum(counts.values()) > len(names), "ingest during the run should have caused second passes"
    # the sweep ran once per period across the three workers
    stamps = [event["timestamp"] for worker in fleet for event in worker.events(event="sweep")]
    assert len(stamps) >= 5 and len(stamps) == len(set(stamps))
    done = [len(w.events(event="job_done", kind="consolidate")) for w in fleet]
    assert sum(done) == sum(counts.values()) and all(done), f"the work was not shared: {done}"
    assert ingest.count > 100


def test_a_job_of_a_sigkilled_worker_is_retried_by_another(pg_app, workers):
    names = [f"small{i}" for i in range(10)]
    for i, name in enumerate(names):
        pg_app.ingest(name, messages(2, seed=i))
    # long enough that the kill lands in the middle of the pass
    pg_app.ingest("big", messages(600, words=60, seed=99))
    fleet = workers(2)

    def runner_of_big():
        return next((w for w in fleet if w.events(event="job_started", context="big")), None)

    victim = wait_until(runner_of_big, 120, "a worker running the big pass")
    time.sleep(0.5)
    assert pg_app.store.last_run("big").status == "running"
    killed_at = datetime.now(timezone.utc)
    victim.kill()
    [survivor] = [w for w in fleet if w is not victim]
    ingest = Ingest(pg_app, names)
    ingest.start()
    time.sleep(2)
    ingest.stop()

    wait_until(lambda: survivor.events(event="job_done", context="big"), 180, "the big pass done by the survivor")
    wait_until(lambda: drained(pg_app, [*names, "big"]), 120, "every context consolidated")
    check_invariants(pg_app, [*names, "big"])
    runs = sorted(pg_app.store.list_runs("big"), key=lambda r: r.started_at)
    assert [r.status for r in runs] == ["abandoned", "published"]
    assert runs[0].started_at < killed_at <= runs[1].started_at
    assert survivor.events(event="jobs_recovered"), "the survivor's recover task should have retried the job"
    assert survivor.stop() == 0


def test_a_worker_whose_connections_are_killed_recovers_and_loses_nothing(pg_app, workers, pg_url):
    pg_app.ingest("big", messages(600, words=60, seed=7))
    [worker] = workers(1)
    wait_until(lambda: worker.events(event="job_started", context="big"), 120, "the big pass")
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    kill = text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name LIKE :name")
    killed = 0
    try:
        # several rounds, so some land on connections in the middle of a query
        for _ in range(6):
            with admin.connect() as conn:
                killed += conn.execute(kill, {"name": f"%:{worker.proc.pid}"}).scalar_one()
            time.sleep(0.3)
    finally:
        admin.dispose()
    assert killed >= 2, "the worker's sleeptime and queue connections should have been killed"

    wait_until(lambda: drained(pg_app, ["big"]), 180, "the big pass, once more if it failed")
    # the worker is alive and still takes new work
    pg_app.ingest("after", messages(3))
    wait_until(lambda: drained(pg_app, ["big", "after"]), 120, "a pass after the kills")
    assert worker.proc.poll() is None, worker.lines[-20:]
    check_invariants(pg_app, ["big", "after"])
    assert worker.stop() == 0


def test_sigterm_drains_a_worker_and_a_second_one_gives_the_job_back(pg_app, workers):
    pg_app.ingest("big", messages(600, words=60, seed=3))
    [worker] = workers(1)
    wait_until(lambda: worker.events(event="job_started", context="big"), 120, "the big pass")
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: worker.events(event="daemon_draining"), 30, "the drain")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.stop() == 1, worker.lines[-20:]
    assert pg_app.store.get_context("big").head_version is None
    assert pg_app.store.last_run("big").status == "failed"
    # the job went back to the queue: the next worker picks it up and publishes
    [job] = queued_consolidations(pg_app)
    assert (job.status, job.task_kwargs["context"]) == ("todo", "big")
    [successor] = workers(1)
    wait_until(lambda: drained(pg_app, ["big"]), 180, "the pass on the next worker")
    check_invariants(pg_app, ["big"])
    assert successor.stop() == 0


def test_concurrent_triggers_from_many_threads_all_queue(pg_app):
    """The front end defers from its threadpool: one shared connection pool, opened once, not per call."""
    from concurrent.futures import ThreadPoolExecutor

    names = [f"c{i}" for i in range(16)]
    for name in names:
        pg_app.ingest(name, messages(1))
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda name: pg_app.enqueue("consolidate", name), names * 3))
    assert len(set(ids)) == len(names)
    assert sorted(job.task_kwargs["context"] for job in queued_consolidations(pg_app)) == sorted(names)


def test_the_gc_deletes_procrastinates_old_finished_jobs(pg_app, pg_url):
    import asyncio

    import procrastinate

    from sleeptime.jobs.pg_queue import conninfo

    for name in ("old", "recent", "waiting"):
        pg_app.ingest(name, messages(1))
    ids = {name: pg_app.enqueue("consolidate", name) for name in ("old", "recent", "waiting")}
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        finished = "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id IN (:a, :b)"
        conn.execute(text(finished), {"a": ids["old"], "b": ids["recent"]})
        # past keep_history_days (30 by default)
        aged = "UPDATE procrastinate_events SET at = now() - interval '31 days' WHERE job_id = :a"
        conn.execute(text(aged), {"a": ids["old"]})
    engine.dispose()

    async def trim() -> None:
        connector = procrastinate.PsycopgConnector(conninfo=conninfo(pg_app.settings.db))
        async with procrastinate.App(connector=connector).open_async() as app:
            await pg_app.pg_queue.trim_jobs(app.job_manager)

    asyncio.run(trim())
    left = {job.id: job.status for job in pg_app.pg_queue.list_jobs()}
    assert left == {ids["recent"]: "succeeded", ids["waiting"]: "todo"}
