"""Real worker processes on a real PostgreSQL: throughput, crashes, retries, shutdown, probes."""

from __future__ import annotations

import itertools
import signal
import socket
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from passito_jobs import JobRequest, dispatch, dispatch_many
from tests.helpers import WorkerProcess, count_states, free_port, job_state, run_cli, wait_for
from tests.helpers import http_get as get_url

Conn = psycopg.Connection[Any]

FAST_RESCUE = {
    "PASSITO_HEARTBEAT_INTERVAL": "0.3",
    "PASSITO_STUCK_TIMEOUT": "2",
    "PASSITO_MAINTENANCE_INTERVAL": "0.5",
}


def row(conn: Conn, job_id: int, columns: str) -> tuple[Any, ...]:
    found = conn.execute(f"SELECT {columns} FROM passito_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
    assert found is not None
    return tuple(found)


def http_get(port: int, path: str) -> tuple[int, str]:
    status, body = get_url(f"http://127.0.0.1:{port}{path}")
    return status, body.decode()


@pytest.mark.slow
def test_four_workers_drain_2000_jobs_each_exactly_once(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    conn.execute("CREATE TABLE side_effects (job_id bigint, attempt int, worker text)")
    ids = dispatch_many([JobRequest("RecordSideEffect", {"n": i}) for i in range(2000)], conn=conn)
    workers = [
        WorkerProcess(cli_env, tmp_path / f"w{i}.log", "--concurrency", "8", "--no-log-jobs")
        for i in range(4)
    ]
    try:
        wait_for(
            lambda: count_states(conn).get("completed") == 2000,
            timeout=180,
            message="2000 completed jobs",
        )
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0, 0, 0], [w.log() for w in workers]
    effects = conn.execute(
        "SELECT count(*), count(DISTINCT job_id), min(job_id), max(job_id), "
        "count(DISTINCT worker) FROM side_effects"
    ).fetchone()
    assert effects == (2000, 2000, min(ids), max(ids), 4)
    assert conn.execute("SELECT max(attempts) FROM passito_jobs.jobs").fetchone() == (1,)


@pytest.mark.slow
def test_a_worker_killed_mid_job_loses_nothing(conn: Conn, cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, **FAST_RESCUE}
    job_id = dispatch("SlowFirstAttempt", conn=conn)
    first = WorkerProcess(env, tmp_path / "first.log")
    wait_for(
        lambda: row(conn, job_id, "state::text, worker_id") == ("processing", f"{_host()}:{first.pid}"),
        message="the first worker to hold the job",
    )
    first.kill()
    second = WorkerProcess(env, tmp_path / "second.log")
    try:
        wait_for(
            lambda: job_state(conn, job_id) == "completed",
            timeout=30,
            message="the job to complete",
        )
    finally:
        assert second.stop() == 0
    state, attempts, result, worker = row(conn, job_id, "state::text, attempts, result, worker_id")
    assert (state, attempts, result) == ("completed", 2, {"attempt": 2})
    assert worker == f"{_host()}:{second.pid}"


def _host() -> str:
    return socket.gethostname()


@pytest.mark.slow
def test_retries_back_off_to_failed_then_jobs_retry_completes(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    flag = tmp_path / "flag"
    env = {**cli_env, "PASSITO_RETRY_BACKOFF_BASE": "0.2", "PASSITO_RETRY_BACKOFF_CAP": "1"}
    job_id = dispatch("FailUntilFlag", {"flag": str(flag)}, max_attempts=3, conn=conn)
    recovers = dispatch("FailUntilAttempt", {"succeed_on": 2}, conn=conn)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: job_state(conn, job_id) == "failed", timeout=30, message="the job to fail")
        state, attempts, error = row(conn, job_id, "state::text, attempts, last_error")
        assert (state, attempts) == ("failed", 3)
        assert error.startswith(f"ValueError: flag {flag} is not there yet\n")
        assert "Traceback" in error
        assert "jobtypes.py" in error
        assert row(conn, recovers, "state::text, attempts") == ("completed", 2)

        flag.touch()
        done = run_cli(["jobs", "retry", str(job_id)], env)
        assert done.returncode == 0, done.stderr
        assert f"requeued 1 job(s): #{job_id}" in done.stdout
        wait_for(lambda: job_state(conn, job_id) == "completed", message="the retried job to complete")
        assert row(conn, job_id, "attempts, result") == (1, "flag found")
    finally:
        assert worker.stop() == 0
    log = worker.log()
    assert f"[FAIL] Job #{job_id} (FailUntilFlag) failed on attempt 1/3" in log
    assert f"[FAIL] Failed Job #{job_id} (FailUntilFlag)" in log


@pytest.mark.slow
def test_permanent_errors_and_timeouts_fail_without_hanging_the_worker(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    permanent = dispatch("AlwaysPermanent", max_attempts=5, conn=conn)
    hung = dispatch("Hang", max_attempts=1, conn=conn)
    slow_sync = dispatch("SyncSlow", {"seconds": 2}, max_attempts=1, conn=conn)
    unknown = dispatch("NoSuchType", max_attempts=1, conn=conn)
    worker = WorkerProcess({**cli_env, "PASSITO_SHUTDOWN_TIMEOUT": "1"}, tmp_path / "worker.log")
    try:
        for job_id in (permanent, hung, slow_sync, unknown):
            wait_for(
                lambda job_id=job_id: job_state(conn, job_id) == "failed",
                timeout=30,  # type: ignore[misc]
                message=f"job #{job_id} to fail",
            )
        after = dispatch("Noop", conn=conn)
        wait_for(lambda: job_state(conn, after) == "completed", message="a later job to run")
    finally:
        assert worker.stop() == 0
    assert row(conn, permanent, "attempts") == (1,)
    assert row(conn, hung, "last_error")[0].startswith(
        "AttemptTimeoutError: attempt exceeded the 0.5s timeout of job type Hang"
    )
    error, result = row(conn, slow_sync, "last_error, result")
    assert error.startswith("AttemptTimeoutError: attempt exceeded the 0.3s timeout of job type SyncSlow")
    assert result is None  # the late result of the thread is discarded
    assert "no handler for job type 'NoSuchType'" in row(conn, unknown, "last_error")[0]


@pytest.mark.slow
def test_sigterm_lets_in_flight_jobs_finish(conn: Conn, cli_env: dict[str, str], tmp_path: Path) -> None:
    ids = [dispatch("SyncSleep", {"seconds": 1.5}, conn=conn) for _ in range(3)]
    ids += [dispatch("Sleep", {"seconds": 1.5}, conn=conn) for _ in range(3)]
    queued = dispatch("Noop", delay=0.0, priority=-1, conn=conn)
    worker = WorkerProcess(cli_env, tmp_path / "worker.log", "--concurrency", "6")
    wait_for(lambda: count_states(conn).get("processing") == 6, message="6 jobs in flight")
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert {job_state(conn, i) for i in ids} == {"completed"}
    assert job_state(conn, queued) == "pending"  # never claimed after the signal
    assert "Stopping: no new jobs; waiting up to 30s for 6 in-flight job(s)" in worker.log()


@pytest.mark.slow
def test_shutdown_timeout_returns_unfinished_jobs_to_pending(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    ids = [dispatch("Sleep", {"seconds": 600}, conn=conn) for _ in range(2)]
    ids.append(dispatch("SyncSleep", {"seconds": 600}, conn=conn))
    worker = WorkerProcess(cli_env, tmp_path / "worker.log", "--shutdown-timeout", "1")
    wait_for(lambda: count_states(conn).get("processing") == 3, message="3 jobs in flight")
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert time.monotonic() - started < 15
    assert [row(conn, i, "state::text, attempts, worker_id") for i in ids] == [("pending", 0, None)] * 3
    assert "Returned 3 job(s) to pending" in worker.log()


@pytest.mark.slow
def test_a_second_signal_exits_at_once(conn: Conn, cli_env: dict[str, str], tmp_path: Path) -> None:
    dispatch("Sleep", {"seconds": 600}, conn=conn)
    worker = WorkerProcess(cli_env, tmp_path / "worker.log")
    wait_for(lambda: count_states(conn).get("processing") == 1, message="a job in flight")
    worker.signal(signal.SIGINT)
    wait_for(lambda: "Stopping" in worker.log(), message="the worker to start stopping")
    worker.signal(signal.SIGINT)
    assert worker.wait(10) == 1
    assert "Second signal: exiting now" in worker.log()


@pytest.mark.slow
def test_dependency_chain_runs_in_order_without_polling_delay(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "PASSITO_POLL_INTERVAL": "60"}  # only notifications can make this fast
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        wait_for(lambda: "Worker started" in worker.log(), message="the worker to start")
        chain = [dispatch("Sleep", {"seconds": 0.05}, conn=conn)]
        for _ in range(5):
            chain.append(dispatch("Sleep", {"seconds": 0.05}, depends_on=[chain[-1]], conn=conn))
        wait_for(
            lambda: job_state(conn, chain[-1]) == "completed",
            timeout=20,
            message="the chain to complete",
        )
    finally:
        assert worker.stop() == 0
    times = [row(conn, i, "started_at, finished_at") for i in chain]
    for (_, parent_done), (child_started, _) in itertools.pairwise(times):
        assert child_started >= parent_done


@pytest.mark.slow
def test_job_log_lines_and_metrics(conn: Conn, cli_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    worker = WorkerProcess(cli_env, tmp_path / "worker.log", "--metrics-port", str(port))
    try:
        done = dispatch("Noop", conn=conn)
        failed = dispatch("AlwaysPermanent", conn=conn)
        progress = dispatch("Progress", {"seconds": 1.5}, conn=conn)
        wait_for(
            lambda: job_state(conn, done) == "completed" and job_state(conn, failed) == "failed",
            message="jobs to finish",
        )
        wait_for(
            lambda: (
                row(conn, progress, "progress") == ({"step": 1, "of": 2},)
                or job_state(conn, progress) == "completed"
            ),
            message="progress to be recorded",
        )
        assert http_get(port, "/healthz") == (200, "ok\n")
        assert http_get(port, "/readyz") == (200, "ready\n")
        status, metrics = http_get(port, "/metrics")
        assert status == 200
        assert (
            'passito_jobs_worker_jobs_total{outcome="completed",queue="default",type="Noop"} 1.0' in metrics
        )
        failed_line = (
            'passito_jobs_worker_jobs_total{outcome="failed",queue="default",type="AlwaysPermanent"}'
        )
        assert f"{failed_line} 1.0" in metrics
        assert "passito_jobs_worker_pickup_latency_seconds_bucket" in metrics
        assert "passito_jobs_worker_concurrency 10.0" in metrics
    finally:
        assert worker.stop() == 0
    log = worker.log()
    host_pid = f"[Worker {_host()}:{worker.pid}]"
    assert f"{host_pid}[INFO] Processing Job #{done} (Noop)" in log
    assert f"{host_pid}[DONE] Completed Job #{done} (Noop) in " in log


@pytest.mark.slow
def test_no_log_jobs_keeps_job_lines_out(conn: Conn, cli_env: dict[str, str], tmp_path: Path) -> None:
    worker = WorkerProcess(cli_env, tmp_path / "worker.log", "--no-log-jobs")
    try:
        job_id = dispatch("Noop", conn=conn)
        wait_for(lambda: job_state(conn, job_id) == "completed", message="the job to complete")
    finally:
        assert worker.stop() == 0
    assert "Processing Job" not in worker.log()


@pytest.mark.slow
def test_readyz_follows_the_database_and_the_worker_reconnects(
    conn: Conn, database_url: str, pg_admin_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """An outage: the worker's connections are cut and new ones refused, then allowed again."""
    name = conninfo_to_dict(database_url)["dbname"]
    port = free_port()
    env = {**cli_env, "PASSITO_POLL_INTERVAL": "0.5"}
    worker = WorkerProcess(env, tmp_path / "worker.log", "--metrics-port", str(port))
    try:
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, message="ready")
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
            )
            wait_for(lambda: http_get(port, "/readyz")[0] == 503, message="not ready without a database")
            admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
        wait_for(lambda: http_get(port, "/readyz")[0] == 200, timeout=30, message="ready again")
        with psycopg.connect(database_url, autocommit=True) as fresh:
            job_id = dispatch("Noop", conn=fresh)
            wait_for(lambda: job_state(fresh, job_id) == "completed", message="a job after the outage")
    finally:
        assert worker.stop() == 0
    assert "Database connection restored" in worker.log()


def test_worker_refuses_a_database_without_the_schema(
    empty_database_url: str, cli_env: dict[str, str]
) -> None:
    done = run_cli(["worker"], {**cli_env, "PASSITO_DATABASE_URL": empty_database_url})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "passito-jobs: error: the passito_jobs schema is not installed: run `passito-jobs migrate`"
    )


def test_worker_rejects_a_module_that_does_not_import(cli_env: dict[str, str]) -> None:
    done = run_cli(["worker", "--import", "no_such_module_here"], cli_env)
    assert done.returncode == 2
    assert "cannot import job module 'no_such_module_here': ModuleNotFoundError" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_shutdown_without_a_database_exits_instead_of_hanging(
    conn: Conn, database_url: str, pg_admin_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM while the database is gone: the worker exits after the shutdown timeout, and the
    job it could not record is rescued later, not lost."""
    name = conninfo_to_dict(database_url)["dbname"]
    job_id = dispatch("Sleep", {"seconds": 0.5}, conn=conn)
    worker = WorkerProcess({**cli_env, **FAST_RESCUE}, tmp_path / "worker.log", "--shutdown-timeout", "2")
    wait_for(lambda: job_state(conn, job_id) == "processing", message="the job in flight")
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        try:
            worker.signal(signal.SIGTERM)
            assert worker.wait(30) == 0
        finally:
            admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
            if worker.proc.poll() is None:
                worker.kill()
    assert "Database unreachable at shutdown" in worker.log()
    with psycopg.connect(database_url, autocommit=True) as fresh:
        assert job_state(fresh, job_id) == "processing"  # not recorded, not lost
        rescuer = WorkerProcess({**cli_env, **FAST_RESCUE}, tmp_path / "rescuer.log")
        try:
            wait_for(lambda: job_state(fresh, job_id) == "completed", timeout=30, message="the rescue")
        finally:
            assert rescuer.stop() == 0
