"""The worker's Prometheus metrics (docs/metrics.md lists them)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    900,
)
LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class WorkerMetrics:
    """One set of worker metrics; label children are cached (the hot path calls them per job)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.jobs = Counter(
            "passito_jobs_worker_jobs",
            "Job attempts finished by this worker, by type, queue and outcome "
            "(completed, retried, failed, lost).",
            ["type", "queue", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "passito_jobs_worker_job_duration_seconds",
            "Time a job attempt ran, by type.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.pickup_latency = Histogram(
            "passito_jobs_worker_pickup_latency_seconds",
            "From when a job was ready (dispatch or run_at) to when a worker claimed it, by queue.",
            ["queue"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "passito_jobs_worker_jobs_in_flight",
            "Jobs this worker is running now.",
            registry=registry,
        )
        self.concurrency = Gauge(
            "passito_jobs_worker_concurrency",
            "Jobs this worker may run at once.",
            registry=registry,
        )
        self.claim_batch = Histogram(
            "passito_jobs_worker_claim_batch_size",
            "Jobs claimed per claim round trip.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.database_errors = Counter(
            "passito_jobs_worker_database_errors",
            "Failed round trips to the database.",
            registry=registry,
        )
        self._jobs: dict[tuple[str, str, str], Counter] = {}
        self._durations: dict[str, Histogram] = {}
        self._latencies: dict[str, Histogram] = {}

    def finished(self, job_type: str, queue: str, outcome: str, seconds: float) -> None:
        key = (job_type, queue, outcome)
        counter = self._jobs.get(key)
        if counter is None:
            counter = self._jobs[key] = self.jobs.labels(job_type, queue, outcome)
        counter.inc()
        histogram = self._durations.get(job_type)
        if histogram is None:
            histogram = self._durations[job_type] = self.duration.labels(job_type)
        histogram.observe(seconds)

    def picked_up(self, queue: str, waited: float) -> None:
        histogram = self._latencies.get(queue)
        if histogram is None:
            histogram = self._latencies[queue] = self.pickup_latency.labels(queue)
        histogram.observe(max(waited, 0.0))
