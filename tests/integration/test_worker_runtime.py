"""The worker's pieces in this process, on a real PostgreSQL: the claim loop, the states of an
attempt, the heartbeat, the listener's reconnect and the maintainer (worker/*.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from passito_jobs import JobContext, JobRequest, PermanentError, dispatch, dispatch_many
from passito_jobs.queue.asyncstore import AsyncStore
from passito_jobs.queue.connection import AsyncConnectionHandle, connect_async
from passito_jobs.queue.maintenance import MaintenanceConfig
from passito_jobs.queue.store import StoreHandle
from passito_jobs.registry import Registry
from passito_jobs.worker.attempt import Attempt, Attempts, AttemptState
from passito_jobs.worker.claimloop import ClaimLoop
from passito_jobs.worker.heartbeat import Heartbeat, HeartbeatConfig
from passito_jobs.worker.listener import Listener, ListenerConfig
from passito_jobs.worker.maintainer import Maintainer
from passito_jobs.worker.metrics import WorkerMetrics
from passito_jobs.worker.settings import WorkerSettings
from tests.helpers import count_states, job_state

Conn = psycopg.Connection[Any]
WORKER_ID = "runtime-test:1"


def job_types() -> Registry:
    types = Registry()

    async def quick(ctx: JobContext) -> dict[str, int]:
        return {"id": ctx.id}

    async def raises(ctx: JobContext) -> None:
        raise PermanentError("no")

    async def sleeps(ctx: JobContext) -> str:
        await asyncio.sleep(float(ctx.payload.get("seconds", 30)))
        return "slept"

    types.register("Quick", quick)
    types.register("Raises", raises)
    types.register("Sleeps", sleeps)
    types.register("TimesOut", sleeps, timeout=0.2)
    return types


def make_attempts(settings: WorkerSettings, types: Registry, on_finish: Callable[[], None]) -> Attempts:
    return Attempts(
        settings,
        worker_id=WORKER_ID,
        registry=types,
        metrics=WorkerMetrics(CollectorRegistry()),
        on_finish=on_finish,
        on_fatal=lambda reason: None,
    )


async def until(condition: Callable[[], Awaitable[bool] | bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = condition()
        if isinstance(done, Awaitable):
            done = await done
        if done:
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def claim(database_url: str, batch: int) -> list[Any]:
    async with await connect_async(database_url) as aconn:
        return await AsyncStore(aconn, WORKER_ID).settle_and_claim([], [], None, batch)


def test_the_claim_loop_runs_the_jobs_it_claims_and_stops_cleanly(conn: Conn, database_url: str) -> None:
    ids = dispatch_many([JobRequest("Quick") for _ in range(25)], conn=conn)
    settings = WorkerSettings(concurrency=4, batch_size=3, poll_interval=0.05)

    async def scenario() -> None:
        loop: ClaimLoop | None = None
        attempts = make_attempts(settings, job_types(), lambda: loop.wake.set() if loop else None)
        await attempts.open()
        loop = ClaimLoop(
            settings,
            worker_id=WORKER_ID,
            handle=AsyncConnectionHandle(database_url),
            attempts=attempts,
            metrics=attempts.metrics,
        )
        await loop.open()
        task = asyncio.create_task(loop.run())
        await until(lambda: count_states(conn) == {"completed": 25}, what="25 completed jobs")
        loop.stop()
        await asyncio.wait_for(task, 30)
        await loop.handle.close()
        await attempts.close()
        assert not attempts.running
        assert not attempts.outcomes  # every outcome was recorded before it returned

    asyncio.run(scenario())
    rows = conn.execute(
        "SELECT result FROM passito_jobs.jobs WHERE id = ANY(%s) ORDER BY id", (ids,)
    ).fetchall()
    assert [row[0] for row in rows] == [{"id": job_id} for job_id in ids]


def test_each_attempt_ends_in_its_own_state(conn: Conn, database_url: str) -> None:
    """Completed, failed, timed out, cancelled, lost (rescued, held elsewhere) and released (shutdown)."""
    ids = {
        name: dispatch(job_type, {"seconds": 30}, conn=conn, max_attempts=1)
        for name, job_type in [
            ("completed", "Quick"),
            ("failed", "Raises"),
            ("timed_out", "TimesOut"),
            ("cancelled", "Sleeps"),
            ("lost", "Sleeps"),
            ("released", "Sleeps"),
        ]
    }

    async def scenario() -> dict[int, Attempt]:
        attempts = make_attempts(WorkerSettings(), job_types(), lambda: None)
        await attempts.open()
        for job in await claim(database_url, 6):
            attempts.start(job)
        started = dict(attempts.running)
        await until(lambda: len(attempts.running) == 4, what="quick attempts to end")
        await until(lambda: (attempts.sweep(), len(attempts.running) == 3)[1], what="the timeout")
        attempts.lost({ids["lost"], ids["cancelled"]}, time.monotonic(), cancelled={ids["cancelled"]})
        attempts.release_all()
        await until(lambda: not attempts.running, what="cancelled attempts to end")
        await attempts.close()
        return started

    started = asyncio.run(scenario())
    states = {name: started[job_id].state for name, job_id in ids.items()}
    assert states == {
        "completed": AttemptState.COMPLETED,
        "failed": AttemptState.FAILED,
        "timed_out": AttemptState.TIMED_OUT,
        "cancelled": AttemptState.CANCELLED,
        "lost": AttemptState.LOST,
        "released": AttemptState.RELEASED,
    }


def test_the_heartbeat_marks_jobs_alive_and_stops_the_ones_it_lost(conn: Conn, database_url: str) -> None:
    kept, cancelled = (dispatch("Sleeps", conn=conn) for _ in range(2))

    async def scenario() -> tuple[Any, Any, Attempt]:
        attempts = make_attempts(WorkerSettings(), job_types(), lambda: None)
        await attempts.open()
        for job in await claim(database_url, 2):
            attempts.start(job)
        attempts.running[kept].ctx.set_progress({"step": 3})
        heartbeat = Heartbeat(
            HeartbeatConfig(interval=60),
            handle=AsyncConnectionHandle(database_url),
            worker_id=WORKER_ID,
            attempts=attempts,
        )
        first = await heartbeat.run_once()
        conn.execute("SELECT passito_jobs.cancel(ARRAY[%s]::bigint[])", (cancelled,))
        second = await heartbeat.run_once()
        stopped = attempts.running[cancelled]
        await until(lambda: cancelled not in attempts.running, what="the cancelled attempt to end")
        attempts.release_all()
        await until(lambda: not attempts.running, what="the kept attempt to be given back")
        await heartbeat.handle.close()
        await attempts.close()
        return first, second, stopped

    first, second, stopped = asyncio.run(scenario())
    assert (first.beaten, first.lost) == (2, set())
    assert (second.beaten, second.lost, second.cancelled) == (1, {cancelled}, {cancelled})
    assert stopped.state is AttemptState.CANCELLED
    assert stopped.ctx.cancelled.is_set()
    row = conn.execute(
        "SELECT progress, heartbeat_at IS NOT NULL FROM passito_jobs.jobs WHERE id = %s", (kept,)
    )
    assert row.fetchone() == ({"step": 3}, True)
    assert job_state(conn, cancelled) == "cancelled"


def test_a_refused_job_type_registration_does_not_stop_the_heartbeats(
    conn: Conn, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker registers its job types before each heartbeat round. When the database refuses
    that (here a name with NUL, which the registry now refuses too), the jobs must still be
    heart-beaten: without it they are rescued while they run, and run twice."""
    caplog.set_level(logging.WARNING, logger="passito_jobs.worker")
    job = dispatch("Sleeps", conn=conn)

    async def scenario() -> int:
        attempts = make_attempts(WorkerSettings(), job_types(), lambda: None)
        await attempts.open()
        for claimed in await claim(database_url, 1):
            attempts.start(claimed)
        conn.execute(
            "UPDATE passito_jobs.jobs SET heartbeat_at = now() - interval '1 hour' WHERE id = %s", (job,)
        )
        rounds = [0]
        heartbeat = Heartbeat(
            HeartbeatConfig(interval=0.05),
            handle=AsyncConnectionHandle(database_url),
            worker_id=WORKER_ID,
            attempts=attempts,
            job_types=["Sleeps", "a\x00b"],
            on_round=lambda: rounds.__setitem__(0, rounds[0] + 1),
        )
        task = asyncio.create_task(heartbeat.run())
        await until(lambda: rounds[0] >= 3, what="three heartbeat rounds")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        attempts.release_all()
        await until(lambda: not attempts.running, what="the attempt to be given back")
        await attempts.close()
        return rounds[0]

    assert asyncio.run(scenario()) >= 3
    beaten = conn.execute(
        "SELECT heartbeat_at > now() - interval '1 minute' FROM passito_jobs.jobs WHERE id = %s", (job,)
    ).fetchone()
    assert beaten == (True,)
    warnings = [r.getMessage() for r in caplog.records if "were not registered" in r.getMessage()]
    assert len(warnings) == 1, warnings  # once, not every round


def test_the_listener_reconnects_and_wakes_the_claim_loop_again(
    conn: Conn, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="passito_jobs.worker")

    async def scenario() -> tuple[int, int]:
        woken, listening = [0], [0]
        handle = AsyncConnectionHandle(database_url)
        listener = Listener(
            ListenerConfig(frozenset({"emails"})),
            handle=handle,
            worker_id=WORKER_ID,
            wake=lambda: woken.__setitem__(0, woken[0] + 1),
            on_listening=lambda: listening.__setitem__(0, listening[0] + 1),
        )
        task = asyncio.create_task(listener.run())
        await until(lambda: listening[0] == 1, what="LISTEN")
        pid = (await handle.connection()).info.backend_pid
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await until(lambda: listening[0] == 2, what="LISTEN again after the connection was killed")
        before = woken[0]
        dispatch("Noop", queue="pdfs", conn=conn)  # not its queue: no wake
        dispatch("Noop", queue="emails", conn=conn)
        await until(lambda: woken[0] > before, what="a wake for the emails queue")
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return woken[0] - before, listener.failures

    wakes, failures = asyncio.run(scenario())
    assert (wakes, failures) == (1, 0)
    assert caplog.text.count("The listener lost its connection") == 1
    assert caplog.text.count("The listener is connected again") == 1


def test_the_maintainer_rescues_only_while_it_holds_the_lease(conn: Conn, database_url: str) -> None:
    stuck = dispatch("Noop", conn=conn)
    conn.execute(
        "UPDATE passito_jobs.jobs SET state = 'processing', attempts = 1, worker_id = 'dead:1',"
        " heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        (stuck,),
    )
    config = MaintenanceConfig(stuck_after=60, interval=15)
    first = Maintainer(config, store=StoreHandle.to(database_url), worker_id="a:1")
    second = Maintainer(config, store=StoreHandle.to(database_url), worker_id="b:2")
    try:
        done = first.run_once()
        assert (done.took_lease, done.rescued, done.failed) == (True, [stuck], [])
        assert job_state(conn, stuck) == "pending"
        assert not second.run_once().took_lease  # a:1 holds the lease
        first.release()
        assert second.run_once().took_lease
    finally:
        second.release()


def test_a_claim_loop_that_lost_its_connection_reconnects_and_resends(conn: Conn, database_url: str) -> None:
    settings = WorkerSettings(concurrency=2, poll_interval=0.05)

    async def scenario() -> None:
        loop: ClaimLoop | None = None
        attempts = make_attempts(settings, job_types(), lambda: loop.wake.set() if loop else None)
        await attempts.open()
        loop = ClaimLoop(
            settings,
            worker_id=WORKER_ID,
            handle=AsyncConnectionHandle(database_url),
            attempts=attempts,
            metrics=attempts.metrics,
        )
        await loop.open()
        task = asyncio.create_task(loop.run())
        first = dispatch("Quick", conn=conn)
        await until(lambda: job_state(conn, first) == "completed", what="a first job")
        pid = (await loop.handle.connection()).info.backend_pid
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        later = dispatch_many([JobRequest("Quick") for _ in range(5)], conn=conn)
        await until(lambda: all(job_state(conn, i) == "completed" for i in later), what="jobs after the loss")
        loop.stop()
        await asyncio.wait_for(task, 30)
        await loop.handle.close()
        await attempts.close()

    asyncio.run(scenario())
