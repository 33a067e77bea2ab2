"""The PostgreSQL job queue, for many workers on many machines: procrastinate over the database sleeptime already
uses (SLEEPTIME_QUEUE=procrastinate; `sleeptime worker` runs one worker process, one per GPU).

Tasks and the guarantees the queue gives them:
  consolidate  lock "context:<name>": two jobs of one context never run at once (a prune shares the lock);
               queueing lock "consolidate:<name>": a burst of triggers leaves one job waiting
  prune        drops old checkpoint versions; same lock, queueing lock "prune:<name>"
  sweep        periodic (every sweep_interval): queue a consolidation for each idle context with new messages;
               procrastinate defers a periodic job once per period, however many workers run
  gc           periodic: queue prunes for contexts over keep_checkpoints
  recover      periodic: the jobs of workers whose heartbeat stopped for stalled_after seconds (SIGKILL, a lost
               machine) go back to the queue; their consolidation runs are recorded as abandoned

Delivery is at least once, as in the embedded queue: a pass publishes by compare-and-swap on the head, so a retried
job never publishes twice. Failed jobs retry with exponential backoff, except for known conditions (a head written
by another model, a context that does not exist), which a retry cannot fix.
"""

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued
from procrastinate.jobs import Job, Status
from sqlalchemy.engine import URL

from sleeptime import SleeptimeError
from sleeptime.db import HeadConflict
from sleeptime.db.engine import normalize_url, process_label
from sleeptime.jobs.consolidate import Aborted
from sleeptime.jobs.host import Host
from sleeptime.jobs.worker import GC_EVERY_SWEEPS

log = logging.getLogger(__name__)

QUEUE = "sleeptime"
CONSOLIDATE, PRUNE = "sleeptime.consolidate", "sleeptime.prune"
MAX_ATTEMPTS = 5


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def conninfo(url: str | URL) -> str:
    """A libpq URI for procrastinate from sleeptime's SQLAlchemy URL (query options such as search_path kept); its
    connections are named `sleeptime-queue:host:pid` in pg_stat_activity."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise SleeptimeError("the procrastinate queue needs PostgreSQL (SLEEPTIME_DB=postgresql+psycopg://...)")
    parsed = parsed.set(drivername="postgresql")
    if "application_name" not in parsed.query:
        parsed = parsed.update_query_dict({"application_name": process_label("sleeptime-queue")})
    return parsed.render_as_string(hide_password=False)


def _cron(seconds: float) -> str:
    """A cron expression firing about every `seconds` (procrastinate's cron takes seconds as a 6th field)."""
    if seconds < 60:
        return f"* * * * * */{max(1, round(seconds))}"
    return f"*/{max(1, min(59, round(seconds / 60)))} * * * *"


class _Retry(procrastinate.BaseRetryStrategy):
    """Exponential backoff (2, 4, 8, 16 s) up to MAX_ATTEMPTS runs; a known condition is not retried, except an
    abort (a draining worker gives its job back)."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> procrastinate.RetryDecision | None:
        if isinstance(exception, SleeptimeError) and not isinstance(exception, Aborted):
            return None
        if job.attempts + 1 >= MAX_ATTEMPTS:
            return None
        return procrastinate.RetryDecision(retry_in={"seconds": 2 ** (job.attempts + 1)})


class _Abort:
    """Set when the process aborts (a second SIGTERM) or procrastinate asks this job to stop."""

    def __init__(self, abort: threading.Event, job_context: procrastinate.JobContext):
        self.abort, self.job_context = abort, job_context

    def is_set(self) -> bool:
        return self.abort.is_set() or self.job_context.should_abort()


class PgQueue:
    """sleeptime's tasks on a procrastinate App bound to `app`'s database."""

    def __init__(self, app: Host):
        self.app = app
        self.settings = app.settings
        # procrastinate's pool checks each connection as it leaves the pool, so one the server killed is replaced
        connector = procrastinate.PsycopgConnector(conninfo=conninfo(self.settings.db), min_size=1, max_size=4)
        self.procrastinate = procrastinate.App(connector=connector)
        self.abort = threading.Event()
        self.aborted_jobs: list[int] = []
        self._worker_open = False
        self._sync_open, self._sync_lock = False, threading.Lock()
        self._register()

    # the schema

    def schema_applied(self) -> bool:
        with self._open() as queue:
            found = "SELECT to_regclass('procrastinate_jobs') IS NOT NULL AS found"
            row = queue.connector.get_sync_connector().execute_query_one(found)
        return bool(row["found"])

    def apply_schema(self) -> bool:
        """Create procrastinate's tables and functions unless they exist; True when they were created now."""
        if self.schema_applied():
            return False
        with self._open() as queue:
            queue.schema_manager.apply_schema()
        return True

    @contextmanager
    def _open(self) -> Iterator[procrastinate.App]:
        """The app with an open connection pool: a running worker's async pool, else one sync pool opened on first
        use and shared by every thread (the front end defers from its threadpool) until `close`."""
        if not self._worker_open:
            with self._sync_lock:
                if not self._sync_open:
                    self.procrastinate.open()
                    self._sync_open = True
        yield self.procrastinate

    def list_jobs(self, **filters: Any) -> list[Job]:
        """procrastinate's jobs (filters: id, task, status, lock, queueing_lock, ...); succeeded ones are deleted."""
        with self._open() as queue:
            return queue.job_manager.list_jobs(**filters)

    async def trim_jobs(self, manager: procrastinate.manager.JobManager) -> None:
        """Delete procrastinate's finished jobs older than keep_history_days (they grow like our own history)."""
        if days := self.settings.keep_history_days:
            # procrastinate counts the age in whole hours
            await manager.delete_old_jobs(
                nb_hours=max(1, round(days * 24)), queue=QUEUE,
                include_failed=True, include_cancelled=True, include_aborted=True,
            )

    def close(self) -> None:
        with self._sync_lock:
            if self._sync_open:
                self.procrastinate.close()
                self._sync_open = False

    # deferring

    def enqueue(self, kind: str, context: str, payload: dict[str, Any] | None = None) -> int:
        """Defer a consolidate or prune job for `context`; when one is already waiting, return its id."""
        task_name = {"consolidate": CONSOLIDATE, "prune": PRUNE}.get(kind)
        if task_name is None:
            raise SleeptimeError(f"unknown job kind {kind!r}; expected consolidate or prune")
        self.app.store.get_context(context)  # UnknownContext before anything is queued
        queueing_lock = f"{kind}:{context}"
        reason = (payload or {}).get("reason", "")
        with self._open() as queue:
            deferrer = queue.tasks[task_name].configure(lock=f"context:{context}", queueing_lock=queueing_lock)
            try:
                return deferrer.defer(context=context, reason=reason)
            except AlreadyEnqueued:
                waiting = self.list_jobs(queueing_lock=queueing_lock, status="todo")
                if waiting:
                    return waiting[0].id
                # the waiting job started in between: queue again behind it
                return deferrer.defer(context=context, reason=reason)

    def forget(self, context: str) -> int:
        """Delete the context's jobs (their arguments name it) and ask a running one to abort; returns how many
        were deleted. A running pass that does not stop in time cannot publish: its context is gone."""
        lock = f"context:{context}"
        with self._open() as queue:
            for job in queue.job_manager.list_jobs(lock=lock, status="doing"):
                queue.job_manager.cancel_job_by_id(job.id, abort=True)
            deleted = queue.connector.get_sync_connector().execute_query_all(
                "DELETE FROM procrastinate_jobs WHERE lock = %(lock)s AND status <> 'doing' RETURNING id", lock=lock
            )
        return len(deleted)

    # the tasks

    def _register(self) -> None:
        queue, app = self.procrastinate, self.app
        every = self.settings.sweep_interval

        @queue.task(name=CONSOLIDATE, queue=QUEUE, pass_context=True, retry=_Retry())
        def consolidate(job_context: procrastinate.JobContext, context: str, reason: str = "") -> dict:
            fields = {"job": job_context.job.id, "context": context, "attempt": job_context.job.attempts}
            log.info("job started", extra={"event": "job_started", "kind": "consolidate", **fields})
            try:
                result = app.consolidate(context, abort=_Abort(self.abort, job_context))
            except HeadConflict as exc:
                # another pass (or a rollback) moved the head first: its result stands
                log.info("job superseded", extra={"event": "job_superseded", **fields, "reason": str(exc)})
                return {"published": False}
            except Aborted:
                if self.abort.is_set():
                    self.aborted_jobs.append(job_context.job.id)
                raise
            except Exception as exc:
                # procrastinate retries it (see _Retry); a SleeptimeError's message says it all, else keep the trace
                extra = {"event": "job_failed", **fields, "error": str(exc) or type(exc).__name__}
                log.error("job failed", exc_info=not isinstance(exc, SleeptimeError), extra=extra)
                raise
            if not result.published:
                return {"published": False}
            self.enqueue("prune", context)
            outcome = {"published": True, "version": result.checkpoint.version, "tokens": result.tokens, "bytes": result.bytes}
            log.info("job done", extra={"event": "job_done", "kind": "consolidate", **fields, **outcome})
            return outcome

        @queue.task(name=PRUNE, queue=QUEUE, retry=_Retry())
        def prune(context: str, reason: str = "") -> dict:
            return {"pruned": app.prune(context)}

        @queue.periodic(cron=_cron(every), periodic_id="sweep")
        @queue.task(name="sleeptime.sweep", queue=QUEUE, queueing_lock="sleeptime.sweep")
        def sweep(timestamp: int) -> list[str]:
            names = app.sweep()
            # every period logs once, on whichever worker ran it
            log.info("sweep", extra={"event": "sweep", "timestamp": timestamp, "queued": names})
            return names

        @queue.periodic(cron=_cron(every * GC_EVERY_SWEEPS), periodic_id="gc")
        @queue.task(name="sleeptime.gc", queue=QUEUE, queueing_lock="sleeptime.gc", pass_context=True)
        async def gc(job_context: procrastinate.JobContext, timestamp: int) -> list[str]:
            names = await asyncio.to_thread(app.collect_garbage)
            await self.trim_jobs(job_context.app.job_manager)
            return names

        @queue.periodic(cron=_cron(max(1.0, self.settings.stalled_after / 3)), periodic_id="recover")
        @queue.task(name="sleeptime.recover", queue=QUEUE, queueing_lock="sleeptime.recover", pass_context=True)
        async def recover(job_context: procrastinate.JobContext, timestamp: int) -> list[int]:
            manager = job_context.app.job_manager
            stalled = await manager.get_stalled_jobs(seconds_since_heartbeat=self.settings.stalled_after)
            retried = []
            for job in stalled:
                if job.task_name not in (CONSOLIDATE, PRUNE):
                    continue
                if job.task_name == CONSOLIDATE:
                    reason = f"worker {job.worker_id} stopped its heartbeat; job {job.id} went back to the queue"
                    await asyncio.to_thread(app.store.abandon_runs, job.task_kwargs["context"], reason)
                if await manager.list_jobs_async(queueing_lock=job.queueing_lock, status="todo"):
                    # a job for the same context is already waiting (the queueing lock allows one): it does the
                    # same work, since a pass consumes everything up to the newest message
                    await manager.finish_job(job, status=Status.FAILED, delete_job=False)
                else:
                    await manager.retry_job(job)
                retried.append(job.id)
            if retried:
                log.warning("stalled jobs retried", extra={"event": "jobs_recovered", "jobs": retried})
            return retried

    # the worker

    async def run_worker(
        self, stop: threading.Event, abort: threading.Event, *, concurrency: int = 1, poll_seconds: float = 2.0
    ) -> None:
        """Run jobs until `stop` is set, then drain: the running jobs finish, or stop before publishing once `abort`
        is set (their jobs retry elsewhere). A worker that procrastinate stops on its own (a side task failed: the
        database went away) is started again after a pause."""
        self.abort = abort
        name = worker_name()
        options = {
            "name": name,
            "queues": [QUEUE],
            "concurrency": concurrency,
            "install_signal_handlers": False,
            "update_heartbeat_interval": self.settings.heartbeat_seconds,
            "stalled_worker_timeout": self.settings.stalled_after,
            "fetch_job_polling_interval": poll_seconds,
            "abort_job_polling_interval": poll_seconds,
            "delete_jobs": "successful",
        }
        # the worker's async pool replaces the sync one (procrastinate closes it on opening, without telling us)
        self.close()
        backoff = 1.0
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with self.procrastinate.open_async():
                    self._worker_open = True
                    runner = asyncio.create_task(self.procrastinate.run_worker_async(**options))
                    while not runner.done() and not stop.is_set():
                        await asyncio.wait({runner}, timeout=0.2)
                    if not runner.done():
                        # cancelling is procrastinate's graceful stop: the running jobs finish first
                        runner.cancel()
                    (outcome,) = await asyncio.gather(runner, return_exceptions=True)
                    if isinstance(outcome, Exception):
                        raise outcome
            except Exception:
                log.exception("worker lost its database", extra={"event": "worker_error", "worker": name})
            finally:
                self._worker_open = False
            if stop.is_set():
                break
            # a worker that ran a good while before it stopped starts again at once; a crash loop slows down
            backoff = 1.0 if time.monotonic() - started > 60 else min(30.0, backoff * 2)
            log.warning("worker restarting", extra={"event": "worker_restart", "worker": name, "in": backoff})
            restart_at = time.monotonic() + backoff
            while not stop.is_set() and time.monotonic() < restart_at:
                await asyncio.sleep(0.2)
