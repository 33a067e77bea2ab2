"""The background daemon: an APScheduler trigger for the idle sweep and checkpoint GC, and worker threads that run
the queued jobs. On the procrastinate queue (SLEEPTIME_QUEUE=procrastinate) it is a procrastinate worker instead
(`sleeptime worker`; see jobs/pg_queue.py).

APScheduler only fires the sweep (an in-memory job store rebuilt from settings at every start): the durable record
of work is the job queue in the database, so a crash loses no trigger that matters.

Signals: the first SIGTERM (or SIGINT) stops claiming jobs, lets the running ones finish and exits 0; a second one
aborts the running jobs before they publish (the head stays untouched; the job is marked failed and the next sweep
queues it again) and exits 1.

Logs: one JSON object per line on stderr (`configure_logging`), with an "event" field on every daemon record.
"""

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler

from sleeptime.jobs.worker import GC_EVERY_SWEEPS

if TYPE_CHECKING:
    from sleeptime.app import App

log = logging.getLogger(__name__)

_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, then the record's `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({key: value for key, value in vars(record).items() if key not in _RECORD_FIELDS})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # APScheduler and procrastinate report every periodic run at INFO, Alembic every schema check: keep their
    # warnings and errors only (sleeptime logs its own job events)
    for chatty in ("apscheduler", "alembic", "procrastinate"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


class _Signals:
    """First SIGTERM/SIGINT: drain (set stop). Second: abort the running jobs (set abort)."""

    def __init__(self, stop: threading.Event, abort: threading.Event):
        self.stop, self.abort = stop, abort
        self.previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if not self.stop.is_set():
            log.info("draining", extra={"event": "daemon_draining", "signal": name})
            self.stop.set()
        else:
            log.warning("aborting running jobs", extra={"event": "daemon_aborting", "signal": name})
            self.abort.set()


def _queue_jobs(event: str, queue: Callable[[], list[str]], wake: threading.Event) -> None:
    """A periodic task: queue jobs (the idle sweep, or checkpoint GC) and wake the workers when any were queued."""
    try:
        queued = queue()
    except Exception:
        log.exception("%s failed", event, extra={"event": f"{event}_failed"})
        return
    if queued:
        log.info(event, extra={"event": event, "queued": queued})
        wake.set()


def _scheduler(app: "App", wake: threading.Event) -> BackgroundScheduler:
    # one thread: a slow sweep delays the next instead of overlapping it
    scheduler = BackgroundScheduler(
        executors={"default": {"type": "threadpool", "max_workers": 1}},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    every = app.settings.sweep_interval
    now = datetime.now(timezone.utc)
    scheduler.add_job(
        _queue_jobs, "interval", args=("sweep", app.sweep, wake), seconds=every, id="sweep", next_run_time=now
    )
    scheduler.add_job(
        _queue_jobs,
        "interval",
        args=("gc", app.collect_garbage, wake),
        seconds=every * GC_EVERY_SWEEPS,
        id="gc",
        next_run_time=now,
    )
    return scheduler


def _run_pg_worker(app: "App", stop: threading.Event, abort: threading.Event, workers: int, model_id: str) -> int:
    """The daemon on the procrastinate queue: procrastinate's periodic tasks replace APScheduler (deferred once
    per period however many workers run), and `workers` jobs run at once in this process."""
    queue = app.pg_queue
    log.info(
        "worker started",
        extra={"event": "daemon_started", "queue": "procrastinate", "workers": workers, "model": model_id},
    )
    asyncio.run(queue.run_worker(stop, abort, concurrency=workers))
    log.info("worker stopped", extra={"event": "daemon_stopped", "aborted_jobs": queue.aborted_jobs})
    return 1 if queue.aborted_jobs else 0


def run_daemon(
    app: "App",
    stop_event: threading.Event | None = None,
    *,
    workers: int = 1,
    abort_event: threading.Event | None = None,
    handle_signals: bool | None = None,
    poll_seconds: float = 1.0,
) -> int:
    """Run the sweep and `workers` worker threads until `stop_event` is set (or SIGTERM); returns the exit status:
    0 after a drain, 1 when a running job was aborted.

    Signal handlers are installed when called from the main thread (override with handle_signals); an embedding
    process (`sleeptime up`) sets stop_event, and abort_event to abandon the running jobs.
    """
    if workers < 1:
        raise ValueError("workers must be at least 1")
    stop, abort = stop_event or threading.Event(), abort_event or threading.Event()
    app.require_schema()
    # load the model before claiming anything: a bad model fails the start, not every job
    model_id = app.engine.model_id
    signals = _Signals(stop, abort)
    if handle_signals is None:
        handle_signals = threading.current_thread() is threading.main_thread()
    if handle_signals:
        signals.install()
    if app.settings.queue == "procrastinate":
        try:
            return _run_pg_worker(app, stop, abort, workers, model_id)
        finally:
            signals.restore()
    wake = threading.Event()
    host = f"{socket.gethostname()}:{os.getpid()}"
    pool = [
        app.new_worker(f"{host}:{i}", stop=stop, abort=abort, wake=wake, poll_seconds=poll_seconds)
        for i in range(workers)
    ]
    threads = [threading.Thread(target=w.run, name=f"worker-{i}") for i, w in enumerate(pool)]
    scheduler = _scheduler(app, wake)
    try:
        for thread in threads:
            thread.start()
        scheduler.start()
        every = {"idle_after": app.settings.idle_after, "sweep_interval": app.settings.sweep_interval}
        log.info("daemon started", extra={"event": "daemon_started", "workers": workers, "model": model_id, **every})
        # short waits: the main thread must come back to Python for the signal handlers to run
        while not stop.wait(0.2):
            pass
    finally:
        stop.set()
        if scheduler.running:
            scheduler.shutdown(wait=True)
        wake.set()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
        signals.restore()
    aborted = [job for w in pool for job in w.aborted_jobs]
    log.info("daemon stopped", extra={"event": "daemon_stopped", "aborted_jobs": aborted})
    return 1 if aborted else 0
