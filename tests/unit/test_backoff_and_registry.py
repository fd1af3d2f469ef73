"""Retry backoff and the job-type registry."""

from __future__ import annotations

import random
import threading

import pytest

from passito_jobs.queue.backoff import retry_delay
from passito_jobs.registry import JobContext, Registry, job_type


def test_backoff_doubles_with_jitter_in_the_upper_half_and_is_capped() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (4, 16)]:
        delays = [retry_delay(attempt, base=2, cap=100, rng=rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 4  # jitter spreads them
    assert all(50 <= retry_delay(30, base=2, cap=100, rng=rng) <= 100 for _ in range(50))
    assert retry_delay(10_000, base=2, cap=60, rng=rng) <= 60
    with pytest.raises(ValueError, match="start at 1"):
        retry_delay(0, base=1, cap=1)


def test_registry_records_sync_and_async_handlers() -> None:
    registry = Registry()

    @job_type("Sync", timeout=5, into=registry)
    def sync(ctx: JobContext) -> None: ...

    @job_type(into=registry)
    async def Async(ctx: JobContext) -> None: ...

    assert registry.names() == ["Async", "Sync"]
    assert (registry["Sync"].is_async, registry["Sync"].timeout) == (False, 5)
    assert registry["Async"].is_async
    assert "Nope" not in registry
    with pytest.raises(ValueError, match="already registered"):
        registry.register("Sync", lambda ctx: None)
    with pytest.raises(ValueError, match="must be positive"):
        registry.register("Bad", sync, timeout=0)
    assert registry["Sync"].isolation is None  # follows PASSITO_SYNC_ISOLATION

    @job_type("Heavy", isolation="process", into=registry)
    def heavy(ctx: JobContext) -> None: ...

    assert registry["Heavy"].isolation == "process"
    for bad in ("fork", "Process", "", 1):
        with pytest.raises(ValueError, match=r"isolation of job type 'Bad' must be 'process' or None, got"):
            registry.register("Bad", sync, isolation=bad)  # type: ignore[arg-type]


def test_context_progress_is_handed_over_once() -> None:
    ctx = JobContext(1, "T", "default", {}, 1, 3, "w")
    assert ctx.take_progress() is None
    ctx.set_progress({"pct": 10})
    assert ctx.take_progress() == {"pct": 10}
    assert ctx.take_progress() is None
    assert not ctx.is_last_attempt


def test_context_cancelled_is_one_event_that_a_thread_can_wait_on() -> None:
    """A sync handler polls or waits on ctx.cancelled; the worker sets it from another thread."""
    ctx = JobContext(1, "T", "default", {}, 1, 3, "w")
    assert ctx.cancelled is ctx.cancelled
    assert not ctx.cancelled.is_set()
    seen: list[bool] = []
    waiter = threading.Thread(target=lambda: seen.append(ctx.cancelled.wait(30)))
    waiter.start()
    ctx.cancelled.set()
    waiter.join(30)
    assert seen == [True]
