"""`passito-jobs health serve`: queue gauges for Prometheus, read from PostgreSQL on each scrape.

One scrape runs one bounded statement (`Store.queue_stats` under PASSITO_HEALTH_QUERY_TIMEOUT).
Scrapes do not pile up: one query runs at a time, and a scrape that arrives while a query is
in flight waits for it and serves its result. When the database cannot be queried the exporter
keeps serving, with `passito_jobs_exporter_database_up 0` and no queue gauges (stale numbers
would mislead). docs/metrics.md lists the metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from passito_jobs.health.settings import HealthSettings
from passito_jobs.httpserver import ProbeServer
from passito_jobs.queue.errors import QueueError, first_line
from passito_jobs.queue.models import QueueStats
from passito_jobs.queue.store import StoreHandle
from passito_jobs.settings import format_duration

log = logging.getLogger("passito_jobs.health")

UNFINISHED_STATES = ("blocked", "pending", "processing")


@dataclass(frozen=True)
class _Sample:
    finished_at: float  # monotonic
    duration: float
    queues: list[QueueStats] | None  # None: the query failed


class QueueCollector(Collector):
    """A Prometheus collector that queries the queue on each scrape."""

    def __init__(
        self,
        database_url: str,
        *,
        stale_after: float,
        stuck_after: float,
        window: float,
        query_timeout: float,
        connect_timeout: float,
        prepare: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stale_after = stale_after
        self.stuck_after = stuck_after
        self.window = window
        self.query_timeout = query_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._handle = StoreHandle.to(database_url, timeout=connect_timeout, prepare=prepare)
        self._last: _Sample | None = None
        self._up: bool | None = None
        self._queries = 0

    # ------------------------------------------------------------ scraping

    def collect(self) -> Iterator[Metric]:
        asked = self._clock()
        with self._lock:
            sample = self._last
            # A result that finished after this scrape arrived is fresh enough to share.
            if sample is None or sample.finished_at < asked:
                sample = self._last = self._query()
        yield from self._families(sample)

    def describe(self) -> Iterator[Metric]:
        # Names only: registering must not query the database.
        yield from self._families(None)

    def close(self) -> None:
        self._handle.close()

    def _query(self) -> _Sample:
        started = self._clock()
        queues: list[QueueStats] | None
        try:
            self._queries += 1
            queues = self._handle.run(
                lambda store: store.queue_stats(
                    stale_after=self.stale_after,
                    stuck_after=self.stuck_after,
                    window=self.window,
                    timeout=self.query_timeout,
                )
            )
        except QueueError as exc:
            self._note(False, exc)
            queues = None
        else:
            self._note(True)
        finished = self._clock()
        return _Sample(finished_at=finished, duration=finished - started, queues=queues)

    def _note(self, up: bool, exc: Exception | None = None) -> None:
        """Log changes of the database's reachability, not every failed scrape."""
        if up and self._up is False:
            log.info("The database answers again")
        elif not up and self._up is not False:
            reason = first_line(exc) if exc is not None else "unknown error"
            log.warning("Cannot query the queue (passito_jobs_exporter_database_up is 0): %s", reason)
        self._up = up

    # ------------------------------------------------------------ metric families

    def _families(self, sample: _Sample | None) -> Iterator[Metric]:
        window = format_duration(self.window)
        up = GaugeMetricFamily(
            "passito_jobs_exporter_database_up",
            "1 when the last scrape's queue query succeeded, 0 when the database could not be queried.",
        )
        old_up = GaugeMetricFamily(
            "passito_jobs_database_up",
            "Deprecated, removed in the next release: passito_jobs_exporter_database_up.",
        )
        duration = GaugeMetricFamily(
            "passito_jobs_exporter_query_duration_seconds",
            "Time the last queue query took (connecting included).",
        )
        queries = CounterMetricFamily(
            "passito_jobs_exporter_queries",
            "Queue queries run; concurrent scrapes share one, so this can grow slower than scrapes.",
            value=self._queries,
        )
        jobs = GaugeMetricFamily(
            "passito_jobs_queue_jobs",
            "Jobs by queue and state: blocked, pending, processing, and failed (the dead-letter set). "
            "Completed jobs are counted only within the window (passito_jobs_queue_finished_jobs); "
            "cancelled jobs are not counted.",
            labels=["queue", "state"],
        )
        ready = GaugeMetricFamily(
            "passito_jobs_queue_ready_jobs",
            "Pending jobs whose run_at has come (ready to run now), by queue.",
            labels=["queue"],
        )
        oldest = GaugeMetricFamily(
            "passito_jobs_queue_oldest_ready_age_seconds",
            "How long the oldest ready job has waited to start, by queue (0 when none is ready).",
            labels=["queue"],
        )
        stale = GaugeMetricFamily(
            "passito_jobs_queue_stale_jobs",
            f"Jobs ready but not started for more than {format_duration(self.stale_after)} "
            "(PASSITO_HEALTH_STALE_AFTER), by queue.",
            labels=["queue"],
        )
        stuck = GaugeMetricFamily(
            "passito_jobs_queue_stuck_jobs",
            f"Processing jobs without a heartbeat for more than {format_duration(self.stuck_after)} "
            "(PASSITO_STUCK_AFTER), by queue.",
            labels=["queue"],
        )
        finished = GaugeMetricFamily(
            "passito_jobs_queue_finished_jobs",
            f"Jobs that finished in the last {window} (PASSITO_HEALTH_WINDOW), by queue and state "
            "(completed, failed).",
            labels=["queue", "state"],
        )
        ratio = GaugeMetricFamily(
            "passito_jobs_queue_failure_ratio",
            f"Failed among the jobs that finished in the last {window}, by queue (0 when none finished).",
            labels=["queue"],
        )
        if sample is not None:
            up.add_metric([], 0.0 if sample.queues is None else 1.0)
            old_up.add_metric([], 0.0 if sample.queues is None else 1.0)
            duration.add_metric([], sample.duration)
            for q in sample.queues or []:
                for state in UNFINISHED_STATES:
                    jobs.add_metric([q.queue, state], getattr(q, state))
                jobs.add_metric([q.queue, "failed"], q.failed)
                ready.add_metric([q.queue], q.ready)
                oldest.add_metric([q.queue], q.oldest_ready_age)
                stale.add_metric([q.queue], q.stale)
                stuck.add_metric([q.queue], q.stuck)
                finished.add_metric([q.queue, "completed"], q.completed_recently)
                finished.add_metric([q.queue, "failed"], q.failed_recently)
                ratio.add_metric([q.queue], q.failure_ratio)
        yield from (up, old_up, duration, queries, jobs, ready, oldest, stale, stuck, finished, ratio)
        yield from self._flow_families(sample)

    def _flow_families(self, sample: _Sample | None) -> Iterator[Metric]:
        """Flow control (docs/flow-control.md): only the queues paused, limited or holding jobs
        back; a limit that is not set has no sample."""
        shown = "Only queues that are paused, limited or hold jobs back are listed."
        paused = GaugeMetricFamily(
            "passito_jobs_queue_paused",
            f"1 for a paused queue (passito-jobs queues pause): none of its jobs is claimed. {shown}",
            labels=["queue"],
        )
        held_back = GaugeMetricFamily(
            "passito_jobs_queue_held_back_jobs",
            "Ready jobs a claim cannot take now because the queue is paused, at its concurrency, "
            f"or their concurrency key is at the queue's key concurrency, by queue. {shown}",
            labels=["queue"],
        )
        concurrency = GaugeMetricFamily(
            "passito_jobs_queue_concurrency_limit",
            "The queue's concurrency: at most this many of its jobs processing at once across all "
            "workers. No sample when it has no concurrency limit.",
            labels=["queue"],
        )
        rate = GaugeMetricFamily(
            "passito_jobs_queue_rate_limit_per_second",
            "The queue's rate in jobs started per second (50/1s: 50, 600/1m: 10). No sample when "
            "it has no rate limit.",
            labels=["queue"],
        )
        key_concurrency = GaugeMetricFamily(
            "passito_jobs_queue_key_concurrency_limit",
            "The queue's key concurrency: at most this many processing jobs per concurrency key. "
            "No sample when it has no key concurrency limit.",
            labels=["queue"],
        )
        queues = sample.queues if sample is not None and sample.queues is not None else []
        for q in queues:
            limits = (q.concurrency, q.rate_per_second, q.key_concurrency)
            if q.paused or q.held_back or any(limit is not None for limit in limits):
                paused.add_metric([q.queue], 1.0 if q.paused else 0.0)
                held_back.add_metric([q.queue], q.held_back)
            for family, limit in zip((concurrency, rate, key_concurrency), limits, strict=True):
                if limit is not None:
                    family.add_metric([q.queue], limit)
        yield from (paused, held_back, concurrency, rate, key_concurrency)


def serve(
    settings: HealthSettings,
    *,
    database_url: str,
    stuck_after: float,
    connect_timeout: float,
    port: int,
    prepare: bool = True,
    stop: threading.Event,
) -> int:
    """Serve /metrics (and /healthz, /readyz) until `stop` is set. Returns the exit code."""
    collector = QueueCollector(
        database_url,
        stale_after=settings.stale_after,
        stuck_after=stuck_after,
        window=settings.window,
        query_timeout=settings.query_timeout,
        connect_timeout=connect_timeout,
        prepare=prepare,
    )
    registry = CollectorRegistry()
    registry.register(collector)
    # Always ready: a database outage shows as passito_jobs_exporter_database_up 0, which only a
    # scraped exporter can report.
    server = ProbeServer(port, registry=registry)
    log.info(
        "Serving queue metrics on port %d (/metrics); stale after %s, stuck after %s, window %s",
        server.port,
        format_duration(settings.stale_after),
        format_duration(stuck_after),
        format_duration(settings.window),
    )
    try:
        stop.wait()
    finally:
        server.close()
        collector.close()
    return 0
