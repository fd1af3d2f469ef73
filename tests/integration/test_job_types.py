"""The job-type registry: workers record the job types they run; a dispatch of a type no worker
ever ran warns with close matches (or, with --strict, is refused); the health report lists ready
jobs whose type no live worker runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from passito_jobs import dispatch
from passito_jobs.cli.queue import unknown_type_warning
from tests.helpers import WorkerProcess, count_states, run_cli, run_main, wait_for

Conn = psycopg.Connection[Any]


def register(conn: Conn, worker_id: str, *types: str, queues: list[str] | None = None) -> None:
    """As a worker registers; without `queues` as a worker older than 0011 did (every queue)."""
    if queues is None:
        conn.execute("SELECT passito_jobs.register_job_types(%s, %s)", (worker_id, list(types)))
    else:
        conn.execute("SELECT passito_jobs.register_job_types(%s, %s, %s)", (worker_id, list(types), queues))


def test_a_worker_registers_the_job_types_it_runs(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    worker = WorkerProcess(cli_env, tmp_path / "worker.log")
    try:
        rows = wait_for(
            lambda: conn.execute(
                "SELECT worker_id, count(*) FILTER (WHERE type IN ('Noop', 'Sleep')) "
                "FROM passito_jobs.worker_job_types GROUP BY worker_id"
            ).fetchall(),
            timeout=120,
            message="the worker's job types",
        )
        assert [(worker_id.endswith(f":{worker.pid}"), both) for worker_id, both in rows] == [(True, 2)]
        known = {row[0] for row in conn.execute("SELECT type FROM passito_jobs.job_types")}
        assert {"Noop", "Sleep"} <= known
    finally:
        assert worker.stop() == 0


def test_a_mistyped_job_type_is_dispatched_with_a_warning(conn: Conn, cli_in_process: dict[str, str]) -> None:
    register(conn, "w:1", "Noop", "Sleep", "SendEmail")
    code, out, err = run_main(["dispatch", "sleep"])
    assert code == 0
    assert err.splitlines() == ["passito-jobs: warning: no worker runs 'sleep'; did you mean 'Sleep'?"]
    assert count_states(conn) == {"pending": 1}
    assert int(out) > 0

    code, out, err = run_main(["dispatch", "Sleep"])  # a type a worker runs: no word
    assert (code, err) == (0, "")


def test_strict_refuses_a_job_type_no_worker_ever_ran(conn: Conn, cli_in_process: dict[str, str]) -> None:
    register(conn, "w:1", "SendEmail")
    code, out, err = run_main(["dispatch", "SendEmial", "--strict"])
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        "passito-jobs: error: no worker runs 'SendEmial'; did you mean 'SendEmail'? "
        "(--strict: not dispatched)"
    ]
    assert count_states(conn) == {}
    assert run_main(["dispatch", "SendEmail", "--strict"])[0] == 0


@pytest.mark.parametrize(
    ("job_type", "known", "warning"),
    [
        ("Sleep", ["Sleep"], None),
        ("sleep", ["Noop", "Sleep"], "no worker runs 'sleep'; did you mean 'Sleep'?"),
        (
            "GenerateQR",
            ["GenerateQrCode", "Noop"],
            "no worker runs 'GenerateQR'; did you mean 'GenerateQrCode'?",
        ),
        (
            "Zzz",
            ["Noop"],
            "no worker has ever run 'Zzz': start one that imports its module (worker --import MODULE)",
        ),
        (
            "a\nb",
            [],
            "no worker has ever run 'a\\nb': start one that imports its module (worker --import MODULE)",
        ),
    ],
)
def test_the_warning_names_close_matches(job_type: str, known: list[str], warning: str | None) -> None:
    assert unknown_type_warning(job_type, known) == warning


def test_health_lists_ready_jobs_whose_type_no_live_worker_runs(conn: Conn, cli_env: dict[str, str]) -> None:
    register(conn, "w:1", "Noop")
    register(conn, "gone:2", "SendEmail")
    conn.execute(
        "UPDATE passito_jobs.worker_job_types SET last_seen = now() - interval '1 hour' "
        "WHERE worker_id = 'gone:2'"
    )
    for job_type in ("Noop", "SendEmail", "SendEmail", "Typo"):
        dispatch(job_type, conn=conn)
    dispatch("Typo", delay=3600, conn=conn)  # not ready: not listed

    text = run_cli(["health"], cli_env)
    assert (
        "Ready jobs whose type no live worker runs on their queue: "
        "SendEmail (2 in default), Typo (1 in default)" in text.stdout
    )
    report = json.loads(run_cli(["health", "--json"], cli_env).stdout)
    assert report["unserved_ready_jobs"] == {"SendEmail": 2, "Typo": 1}


def test_a_ready_job_on_a_queue_no_live_worker_of_its_type_serves_is_unserved(
    conn: Conn, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A real worker taking jobs from `mail` and `reports` only records those queues with its
    types; the health report then counts a job of its type in `default` as unserved, and a
    worker registered for every queue (or for that queue) serves it."""
    worker = WorkerProcess({**cli_env, "PASSITO_QUEUES": "reports,mail"}, tmp_path / "worker.log")
    try:
        wait_for(
            lambda: conn.execute(
                "SELECT DISTINCT queues FROM passito_jobs.worker_job_types WHERE type = 'Sleep'"
            ).fetchall(),
            timeout=120,
            message="the worker's job types",
        )
        assert conn.execute("SELECT DISTINCT queues FROM passito_jobs.worker_job_types").fetchall() == [
            (["mail", "reports"],)
        ]
        conn.execute("SELECT passito_jobs.pause_queue('mail')")  # the jobs stay ready
        for queue in ("mail", "default", "default", "bulk"):
            dispatch("Sleep", queue=queue, conn=conn)
        text = run_cli(["health"], cli_env).stdout
        assert (
            "Ready jobs whose type no live worker runs on their queue: Sleep (1 in bulk, 2 in default)"
            in text
        )
        report = json.loads(run_cli(["health", "--json"], cli_env).stdout)
        assert report["unserved_ready_jobs"] == {"Sleep": 3}
        assert report["unserved_ready_jobs_by_queue"] == {"Sleep": {"bulk": 1, "default": 2}}

        register(conn, "other:1", "Sleep", queues=["bulk"])
        report = json.loads(run_cli(["health", "--json"], cli_env).stdout)
        assert report["unserved_ready_jobs_by_queue"] == {"Sleep": {"default": 2}}
        register(conn, "old:2", "Sleep")  # no queues: every queue
        report = json.loads(run_cli(["health", "--json"], cli_env).stdout)
        assert report["unserved_ready_jobs_by_queue"] == {}
    finally:
        assert worker.stop() == 0


def test_register_refuses_bad_names(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        register(conn, "w:1", "x" * 129)
    with pytest.raises(psycopg.errors.CheckViolation):
        register(conn, "w:1", "")
    with pytest.raises(psycopg.errors.CheckViolation, match="queue must not contain control characters"):
        register(conn, "w:1", "Noop", queues=["a\nb"])
    register(conn, "w:1", "Noop", queues=[])  # empty: every queue, as PASSITO_QUEUES=""
    assert conn.execute("SELECT queues FROM passito_jobs.worker_job_types").fetchall() == [(None,)]
