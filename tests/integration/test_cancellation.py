"""Fast cancellation, on real worker processes: `jobs cancel` of a processing job reaches its
worker through NOTIFY (migration 0009) and stops the attempt within 2 s, measured from the
database's timestamps; the job ends `cancelled` (not failed, not retried), its dependent fails
as the dependency rules say, and the worker takes its next job. Behind a pooler
(PASSITO_LISTEN=false) the heartbeat still finds the cancellation.

Each worker runs one job at a time (`--concurrency 1`), and a second job waits for its slot: the
moment that job starts (`started_at`) is the moment the cancelled attempt gave its slot back.
The heartbeat interval is 30 s where a notification must do the work, so that nothing else can
explain a stop within 2 s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from passito_jobs import dispatch
from passito_jobs.queue.admin import Actor, Admin
from passito_jobs.queue.store import Store
from tests.helpers import WorkerProcess, job_state, run_cli, wait_for

Conn = psycopg.Connection[Any]

LISTENING = {"PASSITO_HEARTBEAT_INTERVAL": "30", "PASSITO_STUCK_AFTER": "120"}
POLL_ONLY = {"PASSITO_LISTEN": "false", "PASSITO_HEARTBEAT_INTERVAL": "1", "PASSITO_STUCK_AFTER": "10"}
WITHIN = timedelta(seconds=2)


@dataclass
class Cancellation:
    job_id: int
    child_id: int  # depends on the cancelled job
    next_id: int  # waited for the cancelled job's slot
    stopped_after: timedelta  # from the cancel (its finished_at) to the next job's start
    log: str


@pytest.fixture
def probe(conn: Conn) -> Conn:
    """The table WatchesCancelled (tests/jobtypes.py) writes to."""
    conn.execute("CREATE TABLE cancel_probe (job_id bigint PRIMARY KEY, pid int, seen_at timestamptz)")
    return conn


def cancel_with_the_cli(conn: Conn, env: dict[str, str], job_id: int) -> None:
    cancelled = run_cli(["jobs", "cancel", str(job_id)], env)
    assert cancelled.returncode == 0, cancelled.stderr


def cancel_from_the_dashboard(conn: Conn, env: dict[str, str], job_id: int) -> None:
    """The admin API's and the dashboard's action (with its audit row)."""
    done = Admin(Store(conn)).cancel([job_id], Actor("ops", "admin", "api"))
    assert done.changed == [job_id]


def cancel_in_the_apps_transaction(conn: Conn, env: dict[str, str], job_id: int) -> None:
    """The PHP app's way: the SQL function inside a transaction of its own, with other work."""
    with psycopg.connect(env["PASSITO_DATABASE_URL"]) as app, app.transaction():
        app.execute("SELECT passito_jobs.cancel(ARRAY[%s]::bigint[])", (job_id,))
        app.execute("SELECT pg_sleep(0.2)")  # the worker hears of it on commit, not before


CANCELS = {
    "cli": cancel_with_the_cli,
    "admin": cancel_from_the_dashboard,
    "sql": cancel_in_the_apps_transaction,
}


def cancel_running_job(
    conn: Conn,
    env: dict[str, str],
    tmp_path: Path,
    job_type: str,
    payload: dict[str, Any],
    *,
    cancel: Callable[[Conn, dict[str, str], int], None] = cancel_with_the_cli,
) -> Cancellation:
    """Start a worker, let it run the job, cancel it, and wait for the next job to run."""
    job_id = dispatch(job_type, payload, priority=10, conn=conn)
    child_id = dispatch("Noop", depends_on=[job_id], conn=conn)
    worker = WorkerProcess(env, tmp_path / "worker.log", "--concurrency", "1")
    try:
        wait_for(lambda: job_state(conn, job_id) == "processing", message="the worker to take the job")
        if job_type == "WatchesCancelled":  # its handler runs
            wait_for(lambda: probe_row(conn, job_id), message="the handler to start")
        next_id = dispatch("Noop", conn=conn)
        cancel(conn, env, job_id)
        wait_for(lambda: job_state(conn, next_id) == "completed", message="the next job")
        assert worker.proc.poll() is None, worker.log()  # the worker keeps running
        stopped_after = conn.execute(
            "SELECT n.started_at - c.finished_at FROM passito_jobs.jobs c, passito_jobs.jobs n "
            "WHERE c.id = %s AND n.id = %s",
            (job_id, next_id),
        ).fetchone()
        assert stopped_after is not None
    finally:
        assert worker.stop() == 0
    return Cancellation(job_id, child_id, next_id, stopped_after[0], worker.log())


def job_row(conn: Conn, job_id: int, columns: str) -> tuple[Any, ...]:
    found = conn.execute(f"SELECT {columns} FROM passito_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
    assert found is not None
    return tuple(found)


def probe_row(conn: Conn, job_id: int) -> tuple[Any, ...] | None:
    return conn.execute("SELECT pid, seen_at FROM cancel_probe WHERE job_id = %s", (job_id,)).fetchone()


def assert_cancelled_by_the_rules(conn: Conn, done: Cancellation) -> None:
    """Cancelled, not failed: one attempt, no error, not retried; the dependent fails naming it."""
    assert job_row(conn, done.job_id, "state::text, attempts, last_error") == ("cancelled", 1, None)
    child = job_row(conn, done.child_id, "state::text, last_error")
    assert child == ("failed", f"parent job #{done.job_id} cancelled")
    assert f"Job #{done.job_id} failed" not in done.log
    assert f"Failed Job #{done.job_id}" not in done.log


@pytest.mark.parametrize(
    "how", ["cli", pytest.param("admin", marks=pytest.mark.slow), pytest.param("sql", marks=pytest.mark.slow)]
)
def test_a_running_async_job_is_cancelled_within_2s(
    how: str, conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, **LISTENING}
    done = cancel_running_job(conn, env, tmp_path, "Sleep", {"seconds": 60}, cancel=CANCELS[how])
    print(f"async handler stopped {done.stopped_after.total_seconds():.3f}s after the cancel ({how})")
    assert done.stopped_after < WITHIN
    assert_cancelled_by_the_rules(conn, done)
    assert f"Cancelled Job #{done.job_id} (Sleep)" in done.log
    assert "ignores cancellation" not in done.log


def test_a_sync_handler_sees_ctx_cancelled_within_2s(
    probe: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    done = cancel_running_job(probe, {**cli_env, **LISTENING}, tmp_path, "WatchesCancelled", {"poll": True})
    row = probe_row(probe, done.job_id)
    assert row is not None
    assert row[1] is not None, "the handler never saw ctx.cancelled"
    seen_after = row[1] - job_row(probe, done.job_id, "finished_at")[0]
    print(
        f"sync handler saw ctx.cancelled {seen_after.total_seconds():.3f}s and gave its slot back "
        f"{done.stopped_after.total_seconds():.3f}s after jobs cancel"
    )
    assert seen_after < WITHIN
    assert done.stopped_after < WITHIN
    assert_cancelled_by_the_rules(probe, done)
    assert f"Cancelled Job #{done.job_id} (WatchesCancelled)" in done.log
    assert "ignores cancellation" not in done.log  # it returned: not abandoned


def test_a_sync_handler_that_ignores_ctx_cancelled_is_abandoned(
    probe: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """On a thread it cannot be stopped: it gets a second (CANCEL_GRACE), then its slot is freed."""
    done = cancel_running_job(probe, {**cli_env, **LISTENING}, tmp_path, "WatchesCancelled", {"poll": False})
    assert done.stopped_after < WITHIN
    assert_cancelled_by_the_rules(probe, done)
    assert f"Job #{done.job_id} (WatchesCancelled) ignores cancellation" in done.log


def test_process_isolation_stops_the_process_of_a_sync_handler_that_ignores_ctx_cancelled(
    probe: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, **LISTENING, "PASSITO_SYNC_ISOLATION": "process"}
    done = cancel_running_job(probe, env, tmp_path, "WatchesCancelled", {"poll": False})
    print(f"isolated sync handler stopped {done.stopped_after.total_seconds():.3f}s after jobs cancel")
    assert done.stopped_after < WITHIN
    assert_cancelled_by_the_rules(probe, done)
    assert f"Cancelled Job #{done.job_id} (WatchesCancelled)" in done.log
    assert "ignores cancellation" not in done.log  # killed, not abandoned
    row = probe_row(probe, done.job_id)
    assert row is not None
    wait_for(lambda: not process_runs(row[0]), timeout=5, message=f"the child process {row[0]} to end")


def test_poll_only_workers_find_the_cancellation_at_their_next_heartbeat(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    done = cancel_running_job(conn, {**cli_env, **POLL_ONLY}, tmp_path, "Sleep", {"seconds": 60})
    print(f"poll-only: stopped {done.stopped_after.total_seconds():.3f}s after jobs cancel (heartbeat 1s)")
    assert "wakeup=poll" in done.log
    assert done.stopped_after < timedelta(seconds=1) + WITHIN
    assert_cancelled_by_the_rules(conn, done)
    assert f"Cancelled Job #{done.job_id} (Sleep)" in done.log


def test_a_stray_notification_stops_nothing(conn: Conn, cli_env: dict[str, str], tmp_path: Path) -> None:
    """Anyone may NOTIFY the channel: the worker checks with the database before it stops a job,
    and ignores payloads that are not job ids."""
    job_id = dispatch("Sleep", {"seconds": 1.5}, conn=conn)
    worker = WorkerProcess({**cli_env, **LISTENING}, tmp_path / "worker.log", "--concurrency", "1")
    try:
        wait_for(lambda: job_state(conn, job_id) == "processing", message="the worker to take the job")
        for payload in (str(job_id), "", "abc", "-1", " 1", "9" * 40, "١٢", "x" * 7000):
            conn.execute("SELECT pg_notify('passito_jobs_cancel', %s)", (payload,))
        wait_for(lambda: job_state(conn, job_id) == "completed", message="the job to complete")
        after = dispatch("Noop", conn=conn)  # the listener still wakes the worker
        wait_for(lambda: job_state(conn, after) == "completed", timeout=5, message="the next job")
        assert worker.proc.poll() is None, worker.log()
    finally:
        assert worker.stop() == 0
    log = worker.log()
    assert "Cancelled Job" not in log
    assert "Traceback" not in log


def process_runs(pid: int) -> bool:
    """Whether process `pid` runs (a zombie waiting for its parent does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status
