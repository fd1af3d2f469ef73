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


@pytest.mark.parametrize(
    ("name", "options", "error", "message"),
    [
        # the worker registers its names in the database with each heartbeat round: a name the
        # database refuses failed every round, and its running jobs were rescued and ran twice
        ("a\x00b", {}, ValueError, "job type must not contain control characters"),
        ("L" * 129, {}, ValueError, "job type must be at most 128 characters"),
        ("S\ud800", {}, ValueError, "job type"),
        ("T", {"timeout": float("nan")}, ValueError, "must be positive"),  # never fired
        ("T", {"timeout": 10**5000}, ValueError, "must be positive"),  # crashed the claim loop
        ("T", {"timeout": "5"}, ValueError, "must be positive"),
        ("T", {"timeout": True}, ValueError, "must be positive"),
        ("T", {"settings": 5}, TypeError, "must be a settings group"),
    ],
    ids=[
        "nul",
        "long",
        "surrogate",
        "nan-timeout",
        "huge-timeout",
        "text-timeout",
        "bool-timeout",
        "bad-settings",
    ],
)
def test_a_job_type_the_worker_could_not_run_is_refused_when_registered(
    name: str, options: dict[str, object], error: type[Exception], message: str
) -> None:
    registry = Registry()
    with pytest.raises(error, match=message):
        job_type(name, into=registry, **options)(lambda ctx: None)  # type: ignore[call-overload]
    assert registry.names() == []


def test_a_job_type_needs_a_text_name_a_callable_and_process_isolation_a_sync_handler() -> None:
    registry = Registry()

    def send_mail(ctx: JobContext) -> None: ...

    async def run(ctx: JobContext) -> None: ...

    for name in (5, b"X"):
        with pytest.raises(TypeError, match="name must be a string"):
            job_type(name, into=registry)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="the handler must be callable"):
        registry.register("X", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="runs sync handlers only"):
        job_type("A", isolation="process", into=registry)(run)
    assert registry.names() == []


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
