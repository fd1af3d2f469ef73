"""The `passito-jobs` command as a user runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from passito_jobs import dispatch
from tests.helpers import count_states, job_state, run_cli

Conn = psycopg.Connection[Any]


def one_line_error(done: Any) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr
    assert lines, "expected an error message"
    return str(lines[-1])


def test_dispatch_prints_the_new_id(conn: Conn, cli_env: dict[str, str]) -> None:
    done = run_cli(
        [
            "dispatch",
            "Sleep",
            "--payload",
            '{"seconds": 1}',
            "--queue",
            "slow",
            "--priority",
            "3",
            "--delay",
            "60",
            "--max-attempts",
            "5",
            "--unique-key",
            "k",
        ],
        cli_env,
    )
    assert done.returncode == 0, done.stderr
    job_id = int(done.stdout.strip())
    row = conn.execute(
        "SELECT type, payload, queue, priority, max_attempts, unique_key, state::text, "
        "run_at > now() + interval '50 seconds' FROM passito_jobs.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("Sleep", {"seconds": 1}, "slow", 3, 5, "k", "pending", True)
    again = run_cli(["dispatch", "Sleep", "--unique-key", "k"], cli_env)
    assert again.stdout.strip() == str(job_id)
    child = run_cli(["dispatch", "Noop", "--depends-on", str(job_id)], cli_env)
    assert job_state(conn, int(child.stdout)) == "blocked"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--payload", "[1, 2]"], "argument --payload: must be a JSON object"),
        (["--payload", "{oops"], "argument --payload: not valid JSON"),
        (["--delay", "-5"], "argument --delay: must be a duration like 30 (seconds), 10s, 5m, 1h, got '-5'"),
        (["--max-attempts", "0"], "argument --max-attempts: must be at least 1, got 0"),
        (["--depends-on", "424242"], "passito-jobs: error: unknown parent job id(s): 424242"),
    ],
)
def test_bad_dispatch_input_is_one_line_exit_2_and_writes_nothing(
    conn: Conn, cli_env: dict[str, str], args: list[str], message: str
) -> None:
    done = run_cli(["dispatch", "Noop", *args], cli_env)
    assert done.returncode == 2
    assert message in one_line_error(done)
    assert len([ln for ln in done.stderr.splitlines() if "error" in ln]) == 1
    assert count_states(conn) == {}


def test_jobs_list_show_cancel_retry(conn: Conn, cli_env: dict[str, str]) -> None:
    first = dispatch("Noop", {"a": 1}, queue="q1", conn=conn)
    second = dispatch("Sleep", queue="q2", conn=conn)
    listed = run_cli(["jobs", "list"], cli_env)
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "STATE", "TYPE", "QUEUE", "ATTEMPTS", "WHEN", "LAST", "ERROR"]
    assert [r.split()[0] for r in rows] == [str(second), str(first)]
    only = run_cli(["jobs", "list", "--queue", "q1", "--json"], cli_env)
    assert [job["id"] for job in json.loads(only.stdout)] == [first]
    by_status = run_cli(["jobs", "list", "--status", "pending", "--type", "Sleep"], cli_env)
    assert [r.split()[0] for r in by_status.stdout.splitlines()[1:]] == [str(second)]

    shown = run_cli(["jobs", "show", str(first)], cli_env)
    assert shown.returncode == 0
    assert "state" in shown.stdout
    assert 'payload       {"a": 1}' in shown.stdout or '{"a": 1}' in shown.stdout
    assert json.loads(run_cli(["jobs", "show", str(first), "--json"], cli_env).stdout)["queue"] == "q1"

    cancelled = run_cli(["jobs", "cancel", str(first), "999999"], cli_env)
    assert cancelled.returncode == 1
    assert f"cancelled 1 job(s): #{first}" in cancelled.stdout
    assert "job #999999 not cancelled: no such job" in cancelled.stderr
    retried = run_cli(["jobs", "retry", str(first), str(second)], cli_env)
    assert retried.returncode == 1
    assert f"requeued 1 job(s): #{first}" in retried.stdout
    assert f"job #{second} not retried: it is pending" in retried.stderr
    assert job_state(conn, first) == "pending"


def test_retry_all_failed_by_type(conn: Conn, cli_env: dict[str, str]) -> None:
    a = dispatch("A", conn=conn)
    b = dispatch("B", conn=conn)
    conn.execute("UPDATE passito_jobs.jobs SET state = 'failed', attempts = 3, finished_at = now()")
    done = run_cli(["jobs", "retry", "--all-failed", "--type", "B"], cli_env)
    assert done.returncode == 0
    assert (job_state(conn, a), job_state(conn, b)) == ("failed", "pending")
    nothing = run_cli(["jobs", "retry"], cli_env)
    assert nothing.returncode == 2
    assert "give job ids or --all-failed" in one_line_error(nothing)


def test_show_unknown_job(cli_env: dict[str, str]) -> None:
    done = run_cli(["jobs", "show", "12345"], cli_env)
    assert done.returncode == 1
    assert one_line_error(done) == "passito-jobs: error: no job #12345"


def test_prune(conn: Conn, cli_env: dict[str, str]) -> None:
    old = dispatch("Noop", conn=conn)
    conn.execute("UPDATE passito_jobs.jobs SET state = 'completed', finished_at = now() - interval '3 days'")
    kept = run_cli(["jobs", "prune"], cli_env)
    assert kept.stdout.strip() == "pruned 0 finished job(s)"
    done = run_cli(["jobs", "prune", "--keep-completed", "2d"], cli_env)
    assert done.stdout.strip() == "pruned 1 finished job(s)"
    assert conn.execute("SELECT count(*) FROM passito_jobs.jobs WHERE id = %s", (old,)).fetchone() == (0,)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://passito@127.0.0.1:1/passito",
        "postgresql://passito@db.invalid:5432/passito",
    ],
)
def test_unreachable_database_is_one_line_exit_2(cli_env: dict[str, str], url: str) -> None:
    done = run_cli(["jobs", "list"], {**cli_env, "PASSITO_DATABASE_URL": url})
    assert done.returncode == 2
    line = one_line_error(done)
    assert line.startswith("passito-jobs: error: cannot connect to the database at ")
    assert url.split("@")[1].split("/", maxsplit=1)[0] in line
    assert len(done.stderr.strip().splitlines()) == 1


def test_bad_setting_is_one_line_exit_2(cli_env: dict[str, str]) -> None:
    done = run_cli(["jobs", "list"], {**cli_env, "PASSITO_CONCURRENCY": "lots"})
    assert done.returncode == 2
    assert one_line_error(done).startswith(
        "passito-jobs: error: PASSITO_CONCURRENCY must be a whole number, got "
    )


@pytest.mark.slow
def test_embedded_postgres_when_no_url_is_set(cli_env: dict[str, str], local_data_dir: Path) -> None:
    env = {k: v for k, v in cli_env.items() if k != "PASSITO_DATABASE_URL"}
    env["PASSITO_DATA_DIR"] = str(local_data_dir)
    try:
        migrated = run_cli(["migrate"], env, timeout=120)
        assert migrated.returncode == 0, migrated.stderr
        assert (
            "PASSITO_DATABASE_URL is not set: using the embedded PostgreSQL at postgresql://"
            in migrated.stderr
        )
        assert migrated.stdout.startswith("applied 0001_initial")
        job = run_cli(["dispatch", "Noop"], env)
        listed = run_cli(["jobs", "list"], env)
        assert job.stdout.strip() in listed.stdout
        url = run_cli(["db", "url"], env).stdout.strip()
        assert url.startswith("postgresql://postgres@127.0.0.1:")
    finally:
        stopped = run_cli(["db", "stop"], env)
    assert stopped.stdout.strip() == "stopped"
    assert run_cli(["db", "url"], env).returncode == 1
