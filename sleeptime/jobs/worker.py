"""Queue workers and the idle sweep over the embedded job queue (a table in the same database).

Jobs are at-least-once: a worker holds a lease that a heartbeat keeps alive; if the worker dies, the lease expires
and another worker takes the job again. That is safe because a consolidation publishes by compare-and-swap on the
head, and the queue runs one job per context at a time.
"""

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

from sleeptime import SleeptimeError
from sleeptime.db import HeadConflict, Job
from sleeptime.jobs.consolidate import Aborted, Consolidation
from sleeptime.jobs.host import Host

log = logging.getLogger(__name__)

CONSOLIDATE = "consolidate"
PRUNE = "prune"
JOB_KINDS = (CONSOLIDATE, PRUNE)
# checkpoint GC runs once per this many sweep periods (every 10 minutes at the default 30 s); each publish also prunes
GC_EVERY_SWEEPS = 20


def sweep(app: Host) -> list[str]:
    """Queue a consolidation for each context idle for idle_after with messages after its head, or with questions
    asked or registered since its last pass (the queue collapses repeated triggers into one queued job)."""
    names = app.store.idle_contexts(app.settings.idle_after, max_wait_seconds=app.settings.max_wait)
    for name in names:
        app.enqueue(CONSOLIDATE, name, {"reason": "idle"})
    return names


def queue_prunes(app: Host) -> list[str]:
    """Queue a prune for every context with more checkpoints than keep_checkpoints (plus its head)."""
    names = []
    for ctx in app.store.list_contexts():
        if ctx.head_version is not None and len(app.store.list_checkpoints(ctx.name)) > app.settings.keep_checkpoints:
            app.enqueue(PRUNE, ctx.name)
            names.append(ctx.name)
    return names


def trim_history(app: Host) -> dict[str, int]:
    """Delete finished jobs, runs and query-log rows older than keep_history_days (0 keeps everything)."""
    days = app.settings.keep_history_days
    if not days:
        return {}
    deleted = app.store.trim_history(timedelta(days=days))
    if any(deleted.values()):
        log.info("history trimmed", extra={"event": "history_trimmed", **deleted})
    return deleted


def collect_garbage(app: Host) -> list[str]:
    """The periodic GC: queue checkpoint prunes and trim the history; returns the contexts queued for a prune."""
    names = queue_prunes(app)
    trim_history(app)
    return names


class _Either:
    """Set when either event is: the daemon's abort or this job's lost lease."""

    def __init__(self, *events: threading.Event):
        self.events = events

    def is_set(self) -> bool:
        return any(event.is_set() for event in self.events)


class Worker:
    """Claims and runs jobs until `stop` is set; `abort` stops the running job before it publishes."""

    def __init__(
        self,
        app: Host,
        worker_id: str,
        *,
        stop: threading.Event,
        abort: threading.Event,
        wake: threading.Event | None = None,
        poll_seconds: float = 1.0,
    ):
        self.app, self.store, self.id = app, app.store, worker_id
        self.stop, self.abort = stop, abort
        self.wake = wake or threading.Event()
        self.poll_seconds = poll_seconds
        self.lease = app.settings.lease_seconds
        # a job abandoned on a second SIGTERM: the daemon reports it in its exit status
        self.aborted_jobs: list[int] = []
        self.handlers: dict[str, Callable[[Job, _Either], dict]] = {CONSOLIDATE: self._consolidate, PRUNE: self._prune}

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                busy = self.run_once()
            except Exception:
                # the database failed while settling a job: its lease expires and the job is retried
                log.exception("worker error", extra={"event": "worker_error", "worker": self.id})
                busy = False
            if not busy:
                self.wake.wait(self.poll_seconds)
                self.wake.clear()

    def run_once(self) -> bool:
        """Claim and run one job, or a batch of consolidations (batch_contexts); False when there was none (or the
        queue could not be read)."""
        jobs: list[Job] = []
        try:
            job = self.store.claim(self.id, self.lease)
            jobs = [job] if job is not None else []
            # more due contexts join a consolidation, to go through the model together
            while jobs and job.kind == CONSOLIDATE and len(jobs) < self.app.settings.batch_contexts:
                more = self.store.claim(self.id, self.lease, kind=CONSOLIDATE)
                if more is None:
                    break
                jobs.append(more)
        except Exception:
            log.exception("claim failed", extra={"event": "claim_failed", "worker": self.id})
            # jobs already claimed still run (their leases would only expire)
        if not jobs:
            return False
        if len(jobs) == 1:
            self.execute(jobs[0])
        else:
            self.execute_consolidations(jobs)
        return True

    def execute(self, job: Job) -> None:
        with self._leases([job]) as [lost]:
            started = self._started(job)
            self._settle(job, lost, started, lambda: self._dispatch(job, _Either(self.abort, lost)))

    def execute_consolidations(self, jobs: list[Job]) -> None:
        """Consolidation jobs on different contexts, as one batch through the model (App.consolidate_many); each job
        is settled on its own, as `execute` settles one."""
        with self._leases(jobs) as losts:
            started = [self._started(job) for job in jobs]
            try:
                for job in jobs:
                    self._abandon_earlier_attempt(job)
                aborts = [_Either(self.abort, lost) for lost in losts]
                results: list = self.app.consolidate_many([job.context for job in jobs], aborts=aborts)
            except Exception as exc:  # noqa: BLE001 the database failed before any pass ran: every job failed
                results = [exc] * len(jobs)
            for job, lost, since, result in zip(jobs, losts, started, results, strict=True):
                self._settle(job, lost, since, lambda job=job, result=result: self._consolidated(job, result))

    @contextmanager
    def _leases(self, jobs: list[Job]) -> Iterator[list[threading.Event]]:
        """Keep the jobs' leases alive for the block; yields one event per job, set if its lease was lost."""
        done = threading.Event()
        losts, beats = [], []
        for job in jobs:
            lost = threading.Event()
            beat = threading.Thread(target=self._heartbeat, args=(job, lost, done), name=f"heartbeat-{job.id}", daemon=True)
            beat.start()
            losts.append(lost)
            beats.append(beat)
        try:
            yield losts
        finally:
            done.set()
            for beat in beats:
                beat.join()

    def _fields(self, job: Job) -> dict:
        return {"job": job.id, "kind": job.kind, "context": job.context, "worker": self.id, "attempt": job.attempts}

    def _started(self, job: Job) -> float:
        log.info("job started", extra={"event": "job_started", **self._fields(job)})
        return time.monotonic()

    def _settle(self, job: Job, lost: threading.Event, started: float, run: Callable[[], dict]) -> None:
        """Run the job's work (or take its result) and record how the job ended."""
        fields = self._fields(job)
        try:
            outcome = run()
            self.store.complete(job.id, self.id)
            log.info("job done", extra={"event": "job_done", **fields, **outcome, "seconds": _since(started)})
        except Aborted:
            self._aborted(job, lost, fields)
        except HeadConflict as exc:
            # another pass (or a rollback) moved the head first: its result stands, nothing to retry
            self.store.complete(job.id, self.id)
            log.info("job superseded", extra={"event": "job_superseded", **fields, "reason": str(exc)})
        except Exception as exc:
            self.store.fail(job.id, str(exc) or type(exc).__name__, self.id)
            # a SleeptimeError is a known condition (its message says it all); anything else is a bug: keep the trace
            expected = isinstance(exc, SleeptimeError)
            extra = {"event": "job_failed", **fields, "error": str(exc), "seconds": _since(started)}
            log.error("job failed", exc_info=not expected, extra=extra)

    def _aborted(self, job: Job, lost: threading.Event, fields: dict) -> None:
        if lost.is_set():
            # the lease went to another worker, which owns the job now
            log.warning("job lease lost", extra={"event": "job_lease_lost", **fields})
            return
        self.aborted_jobs.append(job.id)
        self.store.fail(job.id, "aborted by a second SIGTERM", self.id)
        log.warning("job aborted", extra={"event": "job_aborted", **fields})

    def _dispatch(self, job: Job, abort: _Either) -> dict:
        handler = self.handlers.get(job.kind)
        if handler is None:
            raise SleeptimeError(f"unknown job kind {job.kind!r}; expected one of {', '.join(JOB_KINDS)}")
        return handler(job, abort)

    def _consolidate(self, job: Job, abort: _Either) -> dict:
        self._abandon_earlier_attempt(job)
        return self._consolidated(job, self.app.consolidate(job.context, abort=abort))

    def _abandon_earlier_attempt(self, job: Job) -> None:
        if job.attempts > 1:
            # an earlier attempt's lease expired: its worker died, leaving its run record "running"
            reason = f"the lease of job {job.id} expired; attempt {job.attempts} took over"
            self.store.abandon_runs(job.context, reason)

    def _consolidated(self, job: Job, result: Consolidation | BaseException) -> dict:
        """The job's outcome from its pass's result (an exception is raised, for _settle to record)."""
        if isinstance(result, BaseException):
            raise result
        if not result.published:
            return {"published": False}
        self.app.enqueue(PRUNE, job.context)
        return {"published": True, "version": result.checkpoint.version, "tokens": result.tokens, "bytes": result.bytes}

    def _prune(self, job: Job, abort: _Either) -> dict:
        return {"pruned": self.app.prune(job.context)}

    def _heartbeat(self, job: Job, lost: threading.Event, done: threading.Event) -> None:
        # three beats per lease: one missed beat (a slow database) does not lose the job
        while not done.wait(self.lease / 3):
            try:
                if not self.store.heartbeat(job.id, self.id, self.lease):
                    lost.set()
                    return
            except Exception:
                log.exception("heartbeat failed", extra={"event": "heartbeat_failed", "job": job.id})


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
