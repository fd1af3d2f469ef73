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


def register(conn: Conn, worker_id: str, *types: str) -> None:
    conn.execute("SELECT passito_jobs.register_job_types(%s, %s)", (worker_id, list(types)))


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
    assert "Ready jobs whose type no live worker runs: SendEmail (2), Typo (1)" in text.stdout
    report = json.loads(run_cli(["health", "--json"], cli_env).stdout)
    assert report["unserved_ready_jobs"] == {"SendEmail": 2, "Typo": 1}


def test_register_refuses_bad_names(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.CheckViolation):
        register(conn, "w:1", "x" * 129)
    with pytest.raises(psycopg.errors.CheckViolation):
        register(conn, "w:1", "")
