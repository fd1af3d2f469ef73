"""In-process workers on a real PostgreSQL: slots freed by timed-out attempts, process
isolation, outcomes the database refuses, supervised tasks and /healthz."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from typing import Any

import psycopg
import pytest

import tests.jobtypes  # noqa: F401 - registers the job types the worker runs
from passito_jobs import JobContext, JobRequest, dispatch, dispatch_many
from passito_jobs.httpserver import ProbeServer
from passito_jobs.registry import Registry
from passito_jobs.worker import isolation
from tests.helpers import http_get, job_state, wait_for
from tests.inprocess import InProcessWorker

Conn = psycopg.Connection[Any]


def row(conn: Conn, job_id: int, columns: str) -> tuple[Any, ...]:
    found = conn.execute(f"SELECT {columns} FROM passito_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
    assert found is not None
    return tuple(found)


def all_done(conn: Conn, ids: list[int], state: str = "completed") -> bool:
    got = conn.execute(
        "SELECT count(*) FROM passito_jobs.jobs WHERE id = ANY(%s) AND state = %s::passito_jobs.job_state",
        (ids, state),
    ).fetchone()
    return got is not None and got[0] == len(ids)


def test_hung_sync_handlers_do_not_take_the_slots_of_later_jobs(conn: Conn, database_url: str) -> None:
    """Two sync attempts that never return time out; the later sync jobs still run (a pool of
    exactly `concurrency` threads would leave none for them)."""
    hung = [dispatch("NeverReturns", max_attempts=1, priority=10, conn=conn) for _ in range(2)]
    with InProcessWorker(database_url, concurrency=2) as running:
        wait_for(lambda: all_done(conn, hung, "failed"), message="the hung attempts to time out")
        later = dispatch_many([JobRequest("SyncEcho", {"n": n}) for n in range(20)], conn=conn)
        wait_for(lambda: all_done(conn, later), message="20 later sync jobs")
        assert running.worker.abandoned == 2
        assert running.worker.health_problem() is None
        abandoned = running.metric("passito_jobs_worker_abandoned_attempts_total", {"type": "NeverReturns"})
        assert abandoned == 2
    for job_id in hung:
        assert row(conn, job_id, "last_error")[0].startswith(
            "AttemptTimeoutError: attempt exceeded the 0.5s timeout of job type NeverReturns"
        )


def test_too_many_abandoned_attempts_drain_the_worker_and_stop_it(conn: Conn, database_url: str) -> None:
    hung = [dispatch("NeverReturns", max_attempts=1, priority=10, conn=conn) for _ in range(2)]
    running = InProcessWorker(database_url, concurrency=3, max_abandoned_attempts=2)
    with running, ProbeServer(0, host="127.0.0.1", live=running.worker.health_problem) as probes:
        in_flight = dispatch("Sleep", {"seconds": 1.0}, conn=conn)
        wait_for(lambda: all_done(conn, hung, "failed"), message="the hung attempts to time out")
        status, body = http_get(f"http://127.0.0.1:{probes.port}/healthz")
        assert status == 503
        assert b"2 abandoned attempts still run (PASSITO_MAX_ABANDONED_ATTEMPTS=2)" in body
        wait_for(lambda: not running.running, message="the worker to stop by itself")
        assert running.worker.exit_reason is not None
        assert job_state(conn, in_flight) == "completed"  # drained, not dropped
        after = dispatch("SyncEcho", conn=conn)
        assert job_state(conn, after) == "pending"


def test_process_isolation_kills_a_timed_out_attempt_and_replaces_its_process(
    conn: Conn, database_url: str
) -> None:
    hung = dispatch("NeverReturns", max_attempts=1, priority=10, conn=conn)
    with InProcessWorker(
        database_url, concurrency=1, sync_isolation="process", job_modules=("tests.jobtypes",)
    ) as running:
        wait_for(lambda: job_state(conn, hung) == "failed", message="the hung attempt to time out")
        later = dispatch_many([JobRequest("SyncEcho", {"n": n}) for n in range(5)], conn=conn)
        wait_for(lambda: all_done(conn, later), message="later jobs in a new child process")
        assert running.worker.abandoned == 0  # killed, not abandoned
        pool = running.worker.attempts.processes
        assert pool is not None
        assert pool.started >= 2
        # A child that dies while idle (the OOM killer) is replaced, not handed a job.
        idle = [child.process for child in pool._idle]
        for process in idle:
            os.kill(process.pid, signal.SIGKILL)
            process.join(10)
        after = dispatch("SyncEcho", {"after": "a dead idle child"}, conn=conn)
        wait_for(lambda: job_state(conn, after) == "completed", message="a job after the idle child died")
        assert row(conn, after, "attempts")[0] == 1
    assert row(conn, hung, "last_error")[0].startswith(
        "AttemptTimeoutError: attempt exceeded the 0.5s timeout of job type NeverReturns"
    )
    assert [row(conn, i, "result")[0] for i in later] == [{"n": n} for n in range(5)]


def test_process_isolation_carries_results_errors_and_progress(conn: Conn, database_url: str) -> None:
    echo = dispatch("SyncEcho", {"text": "héllo 😀", "n": [1, 2.5, None]}, conn=conn)
    permanent = dispatch("AlwaysPermanent", max_attempts=3, conn=conn)
    retried = dispatch("FailUntilAttempt", {"succeed_on": 2}, conn=conn)
    nan = dispatch("PoisonResult", {"kind": "nan"}, max_attempts=3, conn=conn)
    crashed = dispatch("ExitProcess", {"code": 7}, max_attempts=1, conn=conn)
    progress = dispatch("SyncProgress", {"seconds": 2.0}, conn=conn)
    with InProcessWorker(
        database_url,
        concurrency=4,
        sync_isolation="process",
        job_modules=("tests.jobtypes",),
        heartbeat_interval=0.2,
        retry_backoff_base=0.05,
        retry_backoff_cap=0.1,
    ):
        wait_for(
            lambda: row(conn, progress, "progress")[0] == {"step": 1, "of": 2},
            message="progress set in the child to reach the database",
        )
        wait_for(
            lambda: (
                all_done(conn, [echo, retried, progress])
                and all_done(conn, [permanent, nan, crashed], "failed")
            ),
            message="every job to finish",
        )
    assert row(conn, echo, "result")[0] == {"text": "héllo 😀", "n": [1, 2.5, None]}
    attempts, error = row(conn, permanent, "attempts, last_error")
    assert attempts == 1  # PermanentError stays permanent across the process boundary
    assert error.startswith("PermanentError: the payload is wrong and retrying will not help\nTraceback")
    assert "jobtypes.py" in error
    assert row(conn, retried, "attempts, result") == (2, "ok")
    attempts, error = row(conn, nan, "attempts, last_error")
    assert attempts == 1
    assert error == (
        "PermanentError: result must not hold NaN or Infinity (JSON has no such numbers): NaN at result['r']"
    )
    assert row(conn, crashed, "last_error")[0].startswith(
        "ChildExitedError: the process running the attempt exited (exit code 7)"
    )


def attempt_pid(ctx: JobContext) -> int:
    """The process that ran the attempt (found in a child by module and name)."""
    time.sleep(float(ctx.payload.get("seconds", 0)))
    return os.getpid()


def isolated_pids(
    conn: Conn, database_url: str, monkeypatch: pytest.MonkeyPatch, cores: int
) -> tuple[list[int], list[int]]:
    """Four overlapping isolated attempts and three threaded ones on a worker of 4 slots whose
    pod has `cores` cores: the pids that ran each."""
    monkeypatch.setattr(isolation, "usable_cpus", lambda: cores)
    types = Registry()
    types.register("IsolatedPid", attempt_pid, isolation="process")
    types.register("ThreadPid", attempt_pid)
    with InProcessWorker(database_url, registry=types, concurrency=4) as running:
        isolated = dispatch_many([JobRequest("IsolatedPid", {"seconds": 1.0}) for _ in range(4)], conn=conn)
        threaded = dispatch_many([JobRequest("ThreadPid") for _ in range(3)], conn=conn)
        wait_for(lambda: all_done(conn, isolated + threaded), message="every job")
        assert running.settings.sync_isolation == "thread"
        pool = running.worker.attempts.processes
        assert pool is not None
        assert pool.size == cores
    return [row(conn, i, "result")[0] for i in isolated], [row(conn, i, "result")[0] for i in threaded]


def test_a_job_type_with_process_isolation_runs_in_child_processes_one_per_core(
    conn: Conn, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """isolation="process" puts one sync type's attempts in child processes of a worker whose
    PASSITO_SYNC_ISOLATION is `thread`, as many at once as the pod has cores (CPU-bound
    handlers, like the outpass PDF, use every core); the other types stay on the threads."""
    isolated, threaded = isolated_pids(conn, database_url, monkeypatch, cores=2)
    assert os.getpid() not in isolated
    assert len(set(isolated)) == 2, isolated  # overlapping attempts, a process each, no more
    assert set(threaded) == {os.getpid()}


def test_on_one_core_the_isolated_attempts_take_turns_in_one_process(
    conn: Conn, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated, _ = isolated_pids(conn, database_url, monkeypatch, cores=1)
    assert len(set(isolated)) == 1
    assert os.getpid() not in isolated


def test_a_worker_without_isolated_types_starts_no_child_processes(conn: Conn, database_url: str) -> None:
    types = Registry()
    types.register("ThreadPid", attempt_pid)
    with InProcessWorker(database_url, registry=types) as running:
        job_id = dispatch("ThreadPid", conn=conn)
        wait_for(lambda: job_state(conn, job_id) == "completed", message="the job")
        assert running.worker.attempts.processes is None


@pytest.fixture
def refusing_trigger(conn: Conn) -> None:
    """A database that refuses some outcomes: a result holding "refuse", and any outcome of a
    job whose payload says "refuse_all" (as a check constraint or a trigger of the application
    might)."""
    conn.execute(
        """
        CREATE FUNCTION public.refuse_outcomes() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.state = 'completed' AND NEW.result ? 'refuse' THEN
                RAISE EXCEPTION 'results with "refuse" are not welcome' USING ERRCODE = '22023';
            END IF;
            IF NEW.state IN ('completed', 'failed', 'pending') AND NEW.payload ? 'refuse_all'
               AND OLD.state = 'processing' THEN
                RAISE EXCEPTION 'no outcome of this job is welcome' USING ERRCODE = '23514';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_outcomes BEFORE UPDATE ON passito_jobs.jobs
            FOR EACH ROW EXECUTE FUNCTION public.refuse_outcomes();
        """
    )


@pytest.mark.usefixtures("refusing_trigger")
def test_an_outcome_the_database_refuses_fails_only_its_own_job(
    conn: Conn, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    normal = dispatch_many([JobRequest("SyncEcho", {"n": n}) for n in range(30)], conn=conn)
    refused = dispatch("SyncEcho", {"refuse": True}, max_attempts=3, conn=conn)
    unrecordable = dispatch("SyncEcho", {"refuse_all": True}, conn=conn)
    caplog.set_level(logging.WARNING, logger="passito_jobs.worker")
    with InProcessWorker(database_url, concurrency=40, batch_size=40) as running:
        wait_for(lambda: all_done(conn, normal), message="every normal job")
        wait_for(lambda: job_state(conn, refused) == "failed", message="the refused result to fail its job")
        wait_for(
            lambda: f"Could not record any outcome of Job #{unrecordable}" in caplog.text,
            message="the unrecordable job to be reported",
        )
        later = dispatch_many([JobRequest("SyncEcho", {"n": n}) for n in range(5)], conn=conn)
        wait_for(lambda: all_done(conn, later), message="jobs after the refusals")
        assert running.worker.health_problem() is None
    attempts, error = row(conn, refused, "attempts, last_error")
    assert attempts == 1
    assert error == (
        "the database refused to record this attempt's result: "
        'results with "refuse" are not welcome (SQLSTATE 22023)'
    )
    assert row(conn, unrecordable, "state::text, worker_id")[0] == "processing"  # left to the rescue
    assert "recording each of" in caplog.text


def test_a_failing_task_is_restarted_and_turns_healthz_red_until_it_recovers(
    conn: Conn, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="passito_jobs.worker")
    conn.execute(
        "ALTER FUNCTION passito_jobs.acquire_lease(text, text, interval) RENAME TO acquire_lease_gone"
    )
    running = InProcessWorker(database_url, maintenance={"interval": 0.05})
    with running, ProbeServer(0, host="127.0.0.1", live=running.worker.health_problem) as probes:
        wait_for(lambda: running.worker.health_problem() is not None, timeout=60, message="unhealthy")
        status, body = http_get(f"http://127.0.0.1:{probes.port}/healthz")
        assert status == 503
        assert body.startswith(
            b"unhealthy: the maintenance task failed 5 times in a row (last: SchemaMissingError: the "
            b"passito_jobs schema is missing or outdated (function passito_jobs.acquire_lease"
        )
        job_id = dispatch("SyncEcho", conn=conn)  # the other tasks go on meanwhile
        wait_for(lambda: job_state(conn, job_id) == "completed", message="a job while maintenance fails")

        conn.execute(
            "ALTER FUNCTION passito_jobs.acquire_lease_gone(text, text, interval) RENAME TO acquire_lease"
        )
        wait_for(lambda: running.worker.health_problem() is None, timeout=30, message="healthy again")
        assert http_get(f"http://127.0.0.1:{probes.port}/healthz") == (200, b"ok\n")
        restarts = running.metric("passito_jobs_worker_task_restarts_total", {"task": "maintenance"})
        assert restarts >= 5
    failures = [r for r in caplog.records if r.getMessage().startswith("The maintenance task failed")]
    assert len(failures) >= 5
    assert all(r.exc_info is not None for r in failures)  # each logged once, with its traceback


def test_a_stalled_claim_loop_turns_healthz_red(conn: Conn, database_url: str) -> None:
    with InProcessWorker(database_url, poll_interval=0.2, stall_timeout=1.0) as running:
        wait_for(lambda: running.worker.health_problem() is None, message="healthy")
        with psycopg.connect(database_url) as locker:  # a transaction holding the table
            locker.execute("LOCK TABLE passito_jobs.jobs IN ACCESS EXCLUSIVE MODE")
            problem = wait_for(running.worker.health_problem, message="the stall to be noticed")
            assert problem.startswith("the claim loop made no round trip for ")
            assert problem.endswith("s with free slots")
        wait_for(lambda: running.worker.health_problem() is None, message="healthy once the lock is gone")


def test_a_handler_that_blocks_the_event_loop_turns_healthz_red(conn: Conn, database_url: str) -> None:
    registry = Registry()

    async def blocks_the_loop(ctx: JobContext) -> None:
        time.sleep(float(ctx.payload["seconds"]))  # a bug this test is about: it blocks the loop

    registry.register("BlocksTheLoop", blocks_the_loop)
    with InProcessWorker(database_url, registry=registry, stall_timeout=0.5, poll_interval=0.1) as running:
        job_id = dispatch("BlocksTheLoop", {"seconds": 3}, conn=conn)
        problem = wait_for(running.worker.health_problem, message="the blocked loop to be noticed")
        assert problem.startswith("the event loop has not run for ")
        wait_for(lambda: job_state(conn, job_id) == "completed", message="the job to end")
        wait_for(lambda: running.worker.health_problem() is None, message="healthy again")


# ---------------------------------------------------------------- failures that must not be lost


class TracebackRaises(Exception):
    """An exception whose traceback cannot even be read."""

    @property  # type: ignore[override]
    def __traceback__(self) -> Any:
        raise RuntimeError("tb")


def test_a_cancelled_error_or_an_unreadable_traceback_from_a_handler_fails_its_job_at_once(
    conn: Conn, database_url: str
) -> None:
    """A handler that raises CancelledError itself (the worker did not cancel it), or an
    exception whose traceback raises: an ordinary failure, recorded now, not at the rescue."""
    registry = Registry()

    async def raises_cancelled(ctx: JobContext) -> None:
        raise asyncio.CancelledError("from inside")

    async def awaits_a_cancelled_task(ctx: JobContext) -> None:
        inner = asyncio.ensure_future(asyncio.sleep(60))
        inner.cancel()
        await inner

    def sync_raises_cancelled(ctx: JobContext) -> None:
        raise asyncio.CancelledError

    async def async_unreadable_traceback(ctx: JobContext) -> None:
        raise TracebackRaises("async")

    def sync_unreadable_traceback(ctx: JobContext) -> None:
        raise TracebackRaises("sync")

    handlers = {
        "RaisesCancelled": (raises_cancelled, "CancelledError: from inside\n"),
        "AwaitsACancelledTask": (awaits_a_cancelled_task, "CancelledError"),
        "SyncRaisesCancelled": (sync_raises_cancelled, "CancelledError"),
        "AsyncUnreadableTraceback": (async_unreadable_traceback, "TracebackRaises: async"),
        "SyncUnreadableTraceback": (sync_unreadable_traceback, "TracebackRaises: sync"),
    }
    for name, (handler, _) in handlers.items():
        registry.register(name, handler)
    registry.register("Echo", lambda ctx: ctx.payload)
    with InProcessWorker(database_url, registry=registry, concurrency=4, heartbeat_interval=0.1) as running:
        ids = {dispatch(name, max_attempts=1, conn=conn): name for name in handlers}
        wait_for(lambda: all_done(conn, list(ids), "failed"), timeout=10, message="every job to fail")
        for job_id, name in ids.items():
            error = row(conn, job_id, "last_error")[0]
            assert error.startswith(handlers[name][1]), (name, error)
            assert len(error) <= 4000
        later = dispatch("Echo", {"later": True}, conn=conn)
        wait_for(lambda: job_state(conn, later) == "completed", message="a job after them")
        assert running.worker.health_problem() is None


def test_encoding_a_sync_handlers_result_does_not_block_the_worker_and_counts_in_its_timeout(
    conn: Conn, database_url: str
) -> None:
    """A result whose encoding takes long (a dict subclass whose items() blocks) is encoded in
    the handler's thread: other jobs run meanwhile, and the job type's timeout applies."""
    encoding = threading.Event()
    release = threading.Event()

    class SlowItems(dict[str, Any]):
        def items(self) -> Any:
            encoding.set()
            release.wait(30)
            return super().items()

    def slow_result(ctx: JobContext) -> dict[str, Any]:
        return SlowItems(done=True)

    registry = Registry()
    registry.register("SlowResult", slow_result, timeout=1.0)
    registry.register("Echo", lambda ctx: ctx.payload)
    try:
        with InProcessWorker(
            database_url, registry=registry, concurrency=4, heartbeat_interval=0.1
        ) as running:
            slow = dispatch("SlowResult", max_attempts=1, conn=conn)
            wait_for(encoding.is_set, message="the result's encoding to start")
            others = [dispatch("Echo", {"n": n}, conn=conn) for n in range(5)]
            wait_for(lambda: all_done(conn, others), timeout=5, message="other jobs while a result encodes")
            wait_for(lambda: job_state(conn, slow) == "failed", timeout=10, message="the timeout")
            assert row(conn, slow, "last_error")[0] == (
                "AttemptTimeoutError: attempt exceeded the 1s timeout of job type SlowResult"
            )
            assert running.worker.health_problem() is None
    finally:
        release.set()


def test_progress_json_the_database_cannot_store_fails_its_own_job_not_the_others_progress(
    conn: Conn, database_url: str
) -> None:
    release = threading.Event()

    def bad_progress_json(ctx: JobContext) -> None:
        while not release.wait(0.02):
            ctx.set_progress_json("{not json")

    def good_progress(ctx: JobContext) -> str:
        step = 0
        while not release.wait(0.02):
            step += 1
            ctx.set_progress({"step": step})
        return "done"

    registry = Registry()
    registry.register("BadProgressJson", bad_progress_json)
    registry.register("GoodProgress", good_progress)
    try:
        with InProcessWorker(database_url, registry=registry, concurrency=4, heartbeat_interval=0.1):
            bad = dispatch("BadProgressJson", max_attempts=1, conn=conn)
            good = dispatch("GoodProgress", max_attempts=1, conn=conn)
            wait_for(
                lambda: row(conn, good, "progress")[0] is not None,
                timeout=5,
                message="the good job's progress next to a job whose progress is not JSON",
            )
            wait_for(lambda: job_state(conn, bad) == "failed", timeout=5, message="the bad job to fail")
            error = row(conn, bad, "last_error")[0]
            assert error.startswith("UnstorableValueError: progress is not JSON text: "), error
            release.set()
            wait_for(lambda: job_state(conn, good) == "completed", message="the good job to end")
    finally:
        release.set()
