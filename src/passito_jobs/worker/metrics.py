"""The worker's Prometheus metrics (docs/metrics.md lists them).

Per-job metrics are updated on the event loop for every job, tens of thousands of times a
second; prometheus_client's metric objects take a lock per update. So the per-job counter and
histograms here are plain Python numbers, written only by the event-loop thread and read by a
collector at scrape time. Under the GIL each read is of a whole number; a scrape that races an
update may see a sum one observation behind its count, which Prometheus tolerates.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

# `*_created` series double the exposition and nothing here uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class LoopHistogram:
    """A labelled histogram for one writer thread: observe() is a bisect and two additions."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.bounds = [float(b) for b in buckets]
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = ([0] * (len(self.bounds) + 1), [0.0])
        series[0][bisect_left(self.bounds, value)] += 1
        series[1][0] += value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, (counts, total) in list(self._series.items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*self.bounds, float("inf")], list(counts), strict=True):
                cumulative += count
                buckets.append((_le(bound), float(cumulative)))
            family.add_metric(list(labels), buckets, total[0])
        return family


class LoopCounter:
    """A labelled counter for one writer thread."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        self._values[labels] = self._values.get(labels, 0.0) + amount

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in list(self._values.items()):
            family.add_metric(list(labels), value)
        return family


class _LoopCollector(Collector):
    def __init__(self, *metrics: LoopCounter | LoopHistogram) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for metric in self.metrics:
            yield metric.family()


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class WorkerMetrics:
    """One set of worker metrics."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.jobs = LoopCounter(
            "passito_jobs_worker_jobs",
            "Job attempts finished by this worker, by type, queue and outcome "
            "(completed, retried, failed, snoozed, lost).",
            ["type", "queue", "outcome"],
        )
        self.duration = LoopHistogram(
            "passito_jobs_worker_job_duration_seconds",
            "Time a job attempt ran, by type.",
            ["type"],
            DURATION_BUCKETS,
        )
        self.pickup_latency = LoopHistogram(
            "passito_jobs_worker_pickup_latency_seconds",
            "From when a job was ready (dispatch or run_at) to when a worker claimed it, by queue.",
            ["queue"],
            LATENCY_BUCKETS,
        )
        registry.register(_LoopCollector(self.jobs, self.duration, self.pickup_latency))
        self.in_flight = Gauge(
            "passito_jobs_worker_jobs_in_flight", "Jobs this worker is running now.", registry=registry
        )
        self.concurrency = Gauge(
            "passito_jobs_worker_concurrency", "Jobs this worker may run at once.", registry=registry
        )
        self.claim_batch = Histogram(
            "passito_jobs_worker_claim_batch_size",
            "Jobs claimed per claim round trip.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.handed_jobs = Counter(
            "passito_jobs_worker_handed_jobs",
            "Jobs a dispatch handed this worker while it waited (handoff), by what the worker did: "
            "started (without a claim) or returned (no free slot: back to pending).",
            ["result"],
            registry=registry,
        )
        self.database_errors = Counter(
            "passito_jobs_worker_database_errors", "Failed round trips to the database.", registry=registry
        )
        self.abandoned_attempts = Counter(
            "passito_jobs_worker_abandoned_attempts",
            "Attempts given up while their handler kept running (a sync handler's thread past its "
            "timeout or at shutdown, an async handler that ignores cancellation), by type.",
            ["type"],
            registry=registry,
        )
        self.task_restarts = Counter(
            "passito_jobs_worker_task_restarts",
            "Worker tasks (claim loop, listener, heartbeat, maintenance, watchdog) restarted after "
            "an unexpected error, by task.",
            ["task"],
            registry=registry,
        )

    def finished(self, job_type: str, queue: str, outcome: str, seconds: float) -> None:
        self.jobs.inc((job_type, queue, outcome))
        self.duration.observe((job_type,), seconds)

    def picked_up(self, queue: str, waited: float) -> None:
        self.pickup_latency.observe((queue,), max(waited, 0.0))
