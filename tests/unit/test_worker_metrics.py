"""The worker's lock-free metrics expose standard Prometheus counters and histograms."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from passito_jobs.worker.metrics import WorkerMetrics


def test_exposition_is_standard() -> None:
    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    metrics.finished("Noop", "default", "completed", 0.003)
    metrics.finished("Noop", "default", "completed", 0.2)
    metrics.finished("Noop", "default", "failed", 7)
    metrics.picked_up("default", 0.0015)
    text = generate_latest(registry).decode()
    assert 'passito_jobs_worker_jobs_total{outcome="completed",queue="default",type="Noop"} 2.0' in text
    assert 'passito_jobs_worker_jobs_total{outcome="failed",queue="default",type="Noop"} 1.0' in text
    assert 'passito_jobs_worker_job_duration_seconds_bucket{le="0.001",type="Noop"} 0.0' in text
    assert 'passito_jobs_worker_job_duration_seconds_bucket{le="0.005",type="Noop"} 1.0' in text
    assert 'passito_jobs_worker_job_duration_seconds_bucket{le="0.25",type="Noop"} 2.0' in text
    assert 'passito_jobs_worker_job_duration_seconds_bucket{le="+Inf",type="Noop"} 3.0' in text
    assert 'passito_jobs_worker_job_duration_seconds_count{type="Noop"} 3.0' in text
    assert 'passito_jobs_worker_job_duration_seconds_sum{type="Noop"} 7.203' in text
    assert 'passito_jobs_worker_pickup_latency_seconds_bucket{le="0.002",queue="default"} 1.0' in text
    assert "# TYPE passito_jobs_worker_jobs_total counter" in text
