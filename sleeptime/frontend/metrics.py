"""Prometheus metrics of one front end, in a registry of its own (several apps in one process never collide).

Direct instruments: query latency by source, consolidations run through HTTP or by in-process workers (`sleeptime
up`). Read at scrape time: the state cache (hits, misses, entries, bytes), the precomputed hit ratio, queued jobs.
"""

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from sleeptime.app import App
    from sleeptime.frontend.query import QueryResult

log = logging.getLogger(__name__)

# precomputed answers take about a millisecond, online ones tens to hundreds: buckets cover both decades
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
# the worker's log events that end a consolidation job, and the outcome each stands for
JOB_OUTCOMES = {"job_done": "done", "job_failed": "failed", "job_superseded": "superseded", "job_aborted": "aborted"}


class _Derived(Collector):
    """Values read from the App when Prometheus scrapes."""

    def __init__(self, metrics: "Metrics"):
        self.metrics = metrics

    def collect(self) -> Iterator:
        m, app = self.metrics, self.metrics.app
        with m.lock:
            precomputed, online, on_checkpoint = m.precomputed, m.online, m.online_on_checkpoint
        total = precomputed + online
        ratio = GaugeMetricFamily(
            "sleeptime_precomputed_hit_ratio", "Share of queries answered from a precomputed answer"
        )
        ratio.add_metric([], precomputed / total if total else 0.0)
        yield ratio
        if app is None:
            return
        cache = app.queries.cache
        # a miss is a load; loads made while warming are no query's miss
        misses = max(0, cache.loads - m.warm_loads)
        yield CounterMetricFamily(
            "sleeptime_state_cache_misses", "Online answers that had to load and verify a checkpoint", value=misses
        )
        yield CounterMetricFamily(
            "sleeptime_state_cache_hits",
            "Online answers served from a cached memory state",
            value=max(0, on_checkpoint - misses),
        )
        yield GaugeMetricFamily("sleeptime_state_cache_entries", "Memory states in the cache", value=len(cache))
        yield GaugeMetricFamily("sleeptime_state_cache_bytes", "Payload bytes held by the cache", value=cache.used)
        yield GaugeMetricFamily(
            "sleeptime_online_in_flight", "Online answers waiting or being generated", value=app.queries.online_now
        )
        if (pool := app.queries.pool) is not None:
            yield GaugeMetricFamily("sleeptime_generators", "Generator processes", value=pool.size)
            yield CounterMetricFamily(
                "sleeptime_generator_restarts", "Generator processes started again after one stopped", value=pool.replaced
            )
            yield CounterMetricFamily("sleeptime_generator_answers", "Online answers from generators", value=pool.answered)
            yield CounterMetricFamily(
                "sleeptime_generator_batches",
                "Batches the generators answered in (answers / batches: the mean batch size)",
                value=pool.batches,
            )
            yield CounterMetricFamily(
                "sleeptime_generator_wait_seconds",
                "Summed time online answers waited for a generator before their batch began",
                value=pool.waited_s,
            )
        jobs = GaugeMetricFamily("sleeptime_jobs", "Jobs in the queue by status", labels=["status"])
        try:
            for status in ("queued", "running"):
                jobs.add_metric([status], len(app.store.list_jobs(status=status)))
        except Exception:
            # a scrape must not fail because the database hiccupped
            log.warning("cannot read the job queue for /metrics", exc_info=True)
            return
        yield jobs


class _JobEvents(logging.Handler):
    """Counts consolidation jobs run by in-process workers, from the events the worker logs."""

    def __init__(self, counter: Counter):
        super().__init__(logging.INFO)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        outcome = JOB_OUTCOMES.get(getattr(record, "event", ""))
        if outcome and getattr(record, "kind", None) == "consolidate":
            self.counter.labels(trigger="worker", outcome=outcome).inc()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.app: App | None = None
        self.lock = threading.Lock()
        self.precomputed = self.online = self.online_on_checkpoint = 0
        self.warm_loads = 0
        self.query_latency = Histogram(
            "sleeptime_query_latency_seconds",
            "Query latency inside the server (lookup or generation), by answer source",
            ["source"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.consolidations = Counter(
            "sleeptime_consolidation_runs",
            "Consolidation passes, by trigger (http: ?wait=true; worker: in-process daemon) and outcome",
            ["trigger", "outcome"],
            registry=self.registry,
        )
        self.registry.register(_Derived(self))
        self._job_events = _JobEvents(self.consolidations)

    def attach(self, app: "App") -> None:
        self.app = app
        logging.getLogger("sleeptime.jobs.worker").addHandler(self._job_events)

    def detach(self) -> None:
        logging.getLogger("sleeptime.jobs.worker").removeHandler(self._job_events)

    def observe_query(self, result: "QueryResult") -> None:
        self.query_latency.labels(source=result.source).observe(result.latency_ms / 1000)
        with self.lock:
            if result.source == "precomputed":
                self.precomputed += 1
            else:
                self.online += 1
                self.online_on_checkpoint += result.checkpoint is not None
