"""Every command run before `passito-jobs migrate`: one line saying to migrate, exit code 2."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.helpers import run_cli, run_main

Conn = psycopg.Connection[Any]
NOT_INSTALLED = "passito-jobs: error: the passito_jobs schema is not installed: run `passito-jobs migrate`"
OUTPASS = {
    "outpass_id": "op-1",
    "student_name": "Asha Rao",
    "student_email": "asha@example.org",
    "roll_number": "CS21B001",
    "hostel": "Kaveri",
    "room": "101",
    "destination": "Home",
    "reason": "Weekend",
    "from_date": "2030-01-04T09:00:00+05:30",
    "to_date": "2030-01-06T18:00:00+05:30",
    "status": "approved",
}


@pytest.fixture
def unmigrated(
    cli_in_process: dict[str, str], empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    monkeypatch.setenv("PASSITO_DATABASE_URL", empty_database_url)
    return empty_database_url


@pytest.mark.parametrize(
    "args",
    [
        ["dispatch", "Sleep"],
        ["jobs", "list"],
        ["jobs", "list", "--state", "failed"],
        ["jobs", "show", "1"],
        ["jobs", "retry", "1"],
        ["jobs", "retry", "--all-failed"],
        ["jobs", "cancel", "1"],
        ["jobs", "prune"],
        ["outpass", "dispatch", "--json", "-"],
        ["cleanup-expired-files"],
        ["health"],
        ["worker"],
        ["supervise", "--min-workers", "1"],
    ],
    ids=" ".join,
)
def test_a_command_before_migrate_says_to_migrate(unmigrated: str, args: list[str]) -> None:
    code, out, err = run_main(args, stdin=json.dumps(OUTPASS))
    assert (code, out, err.strip().splitlines()) == (2, "", [NOT_INSTALLED])


def test_an_older_schema_names_its_migration(cli_env: dict[str, str], conn: Conn) -> None:
    conn.execute("DELETE FROM passito_jobs.schema_migrations WHERE version > 1")
    done = run_cli(["supervise"], cli_env)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("passito-jobs: error: the passito_jobs schema is at migration 1, this code needs ")
    assert line.endswith(": run `passito-jobs migrate`")
