"""Snooze (run later without spending an attempt) and results (`wait`, `jobs show`, the SQL
function), on a real PostgreSQL with real workers."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

import tests.jobtypes  # noqa: F401 - registers SnoozeTimes, SnoozeForever
from passito_jobs import JobFailedError, JobNotFoundError, Snooze, WaitTimeoutError, dispatch, wait
from passito_jobs.queue import results
from passito_jobs.queue.connection import connect
from passito_jobs.registry import Registry, job_type
from tests.helpers import run_cli, wait_for
from tests.inprocess import InProcessWorker

Conn = psycopg.Connection[Any]


def row(conn: Conn, job_id: int) -> tuple[Any, ...]:
    found = conn.execute(
        "SELECT state::text, attempts, snoozes, last_error FROM passito_jobs.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert found is not None
    return tuple(found)


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_snoozing_runs_again_later_without_spending_an_attempt(
    conn: Conn, database_url: str, tmp_path: Path, isolation: str
) -> None:
    runs = tmp_path / "runs"
    job_id = dispatch("SnoozeTimes", {"file": str(runs), "times": 3}, max_attempts=1, conn=conn)
    with InProcessWorker(database_url, sync_isolation=isolation, job_modules=("tests.jobtypes",)):
        result = wait(job_id, timeout=60, connect=lambda: connect(database_url))
    # One attempt, three snoozes, four runs: each run saw attempt 1 of 1.
    assert result == {"runs": 4, "attempt": 1}
    assert runs.read_text().splitlines() == ["1", "1", "1", "1"]
    assert row(conn, job_id)[:3] == ("completed", 1, 3)


def test_a_job_past_max_snoozes_fails_saying_so(conn: Conn, database_url: str) -> None:
    job_id = dispatch("SnoozeForever", max_attempts=5, conn=conn)
    child = dispatch("Noop", depends_on=[job_id], conn=conn)
    with InProcessWorker(database_url), pytest.raises(JobFailedError) as raised:
        wait(job_id, timeout=60, connect=lambda: connect(database_url))
    state, attempts, snoozes, error = row(conn, job_id)
    assert (state, attempts, snoozes) == ("failed", 1, 3)
    assert error == "snoozed 3 times, the most its job type allows (max_snoozes)"
    assert str(raised.value) == f"job #{job_id} failed: {error}"
    assert raised.value.state == "failed"
    assert row(conn, child)[0] == "failed"  # dependents follow the dependency rules


@pytest.mark.parametrize(
    ("seconds", "error"),
    [(float("nan"), ValueError), (-1, ValueError), (1e300, ValueError), ("5", TypeError), (True, TypeError)],
)
def test_a_bad_snooze_is_a_clear_error(seconds: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="Snooze takes"):
        Snooze(seconds)


def test_max_snoozes_must_be_a_sensible_whole_number() -> None:
    for bad in (-1, 10**9, 1.5, True):
        with pytest.raises(ValueError, match="max_snoozes of job type 'X' must be a whole number"):
            job_type("X", max_snoozes=bad, into=Registry())(lambda ctx: None)


def test_wait_returns_the_result_even_when_the_job_finished_before(conn: Conn, database_url: str) -> None:
    job_id = dispatch("Noop", conn=conn)
    with InProcessWorker(database_url):
        wait_for(lambda: row(conn, job_id)[0] == "completed", message="the job to complete")
    assert wait(job_id, timeout=5, connect=lambda: connect(database_url)) is None
    assert wait(job_id, timeout=0, connect=lambda: connect(database_url), listen=False) is None


@pytest.mark.parametrize("listen", [True, False])
def test_wait_wakes_when_the_job_finishes(
    conn: Conn, database_url: str, listen: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Re-reads only every minute: listening, only the notification can wake the waiter in time.
    monkeypatch.setattr(results, "RECHECK", 60.0)
    job_id = dispatch("Sleep", {"seconds": 1.0}, conn=conn)
    answer: list[tuple[Any, datetime]] = []

    def waiter() -> None:
        value = wait(job_id, timeout=120, connect=lambda: connect(database_url), listen=listen)
        answer.append((value, datetime.now(UTC)))

    thread = threading.Thread(target=waiter)
    thread.start()  # it waits on a pending job: only the worker below can finish it
    with InProcessWorker(database_url):
        thread.join(120)
    assert not thread.is_alive()
    finished = conn.execute("SELECT finished_at FROM passito_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
    assert finished is not None
    (value, returned_at) = answer[0]
    assert value == {"slept": 1.0}
    assert (returned_at - finished[0]).total_seconds() < 20


def test_wait_raises_on_cancel_unknown_ids_timeouts_and_bad_arguments(conn: Conn, database_url: str) -> None:
    job_id = dispatch("Noop", delay=3600, conn=conn)
    opener = lambda: connect(database_url)  # noqa: E731
    with pytest.raises(WaitTimeoutError, match=f"job #{job_id} did not finish in time \\(it is pending\\)"):
        wait(job_id, timeout=0.2, connect=opener)
    cancelling = threading.Timer(0.5, lambda: cancel_now(database_url, job_id))
    cancelling.start()
    with pytest.raises(JobFailedError, match=f"job #{job_id} cancelled"):
        wait(job_id, timeout=30, connect=opener)
    cancelling.join()
    with pytest.raises(JobNotFoundError, match="no job #999999"):
        wait(999999, timeout=1, connect=opener)
    for bad in (0, -1, 2**63, "1", True):
        with pytest.raises(ValueError, match="job_id"):
            wait(bad, connect=opener)  # type: ignore[arg-type]
    for timeout in (float("nan"), -1, float("inf"), 1e300):
        with pytest.raises(ValueError, match="timeout must be"):
            wait(job_id, timeout=timeout, connect=opener)


def cancel_now(database_url: str, job_id: int) -> None:
    with psycopg.connect(database_url, autocommit=True) as own:
        own.execute("SELECT passito_jobs.cancel(ARRAY[%s]::bigint[])", (job_id,))


def test_the_sql_function_and_jobs_show_give_the_result(
    conn: Conn, database_url: str, cli_env: dict[str, str]
) -> None:
    job_id = dispatch("Sleep", {"seconds": 0.25}, conn=conn)
    with InProcessWorker(database_url):
        result = wait(job_id, timeout=60, connect=lambda: connect(database_url))
    # What the PHP app calls:
    state, stored, error, finished_at = conn.execute(
        "SELECT state::text, result, last_error, finished_at FROM passito_jobs.job_result(%s)", (job_id,)
    ).fetchone()  # type: ignore[misc]
    assert result == {"slept": 0.25}
    assert (state, stored, error) == ("completed", result, None)
    assert finished_at is not None
    assert conn.execute("SELECT count(*) FROM passito_jobs.job_result(424242)").fetchone() == (0,)
    shown = run_cli(["jobs", "show", str(job_id)], cli_env)
    assert shown.returncode == 0
    (line,) = [ln for ln in shown.stdout.splitlines() if ln.startswith("result")]
    assert line.split(None, 1)[1] == '{"slept": 0.25}'
