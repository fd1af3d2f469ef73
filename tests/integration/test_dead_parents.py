"""Jobs whose parent failed or was cancelled: retry refuses them alone (they could never run),
and `health` reports any left blocked behind such a parent."""

from __future__ import annotations

import json
from typing import Any

import psycopg

from passito_jobs import dispatch
from tests.helpers import job_state, run_cli, run_main

Conn = psycopg.Connection[Any]


def failed_chain(conn: Conn, parent_end: str = "cancel") -> tuple[int, int]:
    """A parent that was cancelled (or failed for good) and its child, failed because of it."""
    parent = dispatch("Parent", max_attempts=1, conn=conn)
    child = dispatch("Child", depends_on=[parent], conn=conn)
    if parent_end == "cancel":
        conn.execute("SELECT passito_jobs.cancel(ARRAY[%s]::bigint[])", (parent,))
    else:
        conn.execute("SELECT * FROM passito_jobs.claim('w', NULL, 1)")
        conn.execute(
            "SELECT passito_jobs.fail('w', ARRAY[%s]::bigint[], ARRAY[1], ARRAY['boom'],"
            " ARRAY[NULL]::float8[])",
            (parent,),
        )
    assert (job_state(conn, parent), job_state(conn, child)) == (
        "cancelled" if parent_end == "cancel" else "failed",
        "failed",
    )
    return parent, child


def test_sql_retry_leaves_a_child_of_a_dead_parent_alone(conn: Conn) -> None:
    parent, child = failed_chain(conn)
    assert conn.execute("SELECT passito_jobs.retry(ARRAY[%s]::bigint[])", (child,)).fetchone() == ([],)
    assert job_state(conn, child) == "failed"  # not blocked forever behind a cancelled parent
    both = conn.execute("SELECT passito_jobs.retry(ARRAY[%s, %s]::bigint[])", (child, parent)).fetchone()
    assert both == ([parent, child],)
    assert (job_state(conn, parent), job_state(conn, child)) == ("pending", "blocked")


def test_jobs_retry_refuses_naming_the_parent(conn: Conn, cli_env: dict[str, str]) -> None:
    parent, child = failed_chain(conn)
    other = dispatch("Other", conn=conn)
    conn.execute("UPDATE passito_jobs.jobs SET state = 'failed', finished_at = now() WHERE id = %s", (other,))
    done = run_cli(["jobs", "retry", str(child), str(other)], cli_env)
    assert done.returncode == 2
    assert done.stdout.strip() == f"requeued 1 job(s): #{other}"
    assert done.stderr.strip() == (
        f"passito-jobs: error: job #{child} not retried: its parent job #{parent} is cancelled, so it "
        f"could never run (retry both: passito-jobs jobs retry {parent} {child})"
    )
    assert job_state(conn, child) == "failed"


def test_a_refused_retry_ends_with_its_error_line(conn: Conn, cli_in_process: dict[str, str]) -> None:
    """Found by test_cli_hostile: `jobs retry 9 26 9` with #9 missing and #26 refused printed the
    refusal before the missing job's line, so exit 2 ended without an error line."""
    parent, child = failed_chain(conn)
    missing = child + 1000
    code, _, err = run_main(["jobs", "retry", str(missing), str(child), str(missing)])
    assert code == 2
    assert err.strip().splitlines() == [
        f"job #{missing} not retried: no such job",
        f"passito-jobs: error: job #{child} not retried: its parent job #{parent} is cancelled, so it "
        f"could never run (retry both: passito-jobs jobs retry {parent} {child})",
    ]


def test_retry_all_failed_by_type_refuses_children_of_failed_parents(
    conn: Conn, cli_in_process: dict[str, str]
) -> None:
    parent, child = failed_chain(conn, parent_end="fail")
    code, _, err = run_main(["jobs", "retry", "--all-failed", "--type", "Child"])
    assert code == 2
    assert f"job #{child} not retried: its parent job #{parent} is failed" in err
    code, out, err = run_main(["jobs", "retry", "--all-failed"])
    assert (code, err) == (0, "")
    assert out.strip() == f"requeued 2 job(s): #{parent}, #{child}"
    assert (job_state(conn, parent), job_state(conn, child)) == ("pending", "blocked")


def test_health_reports_blocked_jobs_behind_dead_parents(conn: Conn, cli_in_process: dict[str, str]) -> None:
    parent, child = failed_chain(conn)
    # What a retry of the child alone did before migration 0002: blocked, waiting forever.
    conn.execute(
        "UPDATE passito_jobs.jobs SET state = 'blocked', waiting_on = 1, finished_at = NULL, queue = 'mail'"
        " WHERE id = %s",
        (child,),
    )
    code, out, _ = run_main(["health", "--exit-code-on-failure"])
    assert code == 1
    assert "✗ Job queue is unhealthy: 1 problem found" in out
    assert "⚠ 1 job blocked behind a failed or cancelled parent: they can never run" in out
    assert "  Queues: mail 1\n  Likely cause: a job was retried while its parent stayed failed" in out

    code, out, _ = run_main(["health", "--json"])
    data = json.loads(out)
    assert data["blocked_orphans"] == {"total": 1, "queues": {"mail": 1}}
    assert [(p["check"], p["count"]) for p in data["problems"]] == [("blocked_orphans", 1)]
    rows = conn.execute(
        "SELECT id, parent_id, parent_state::text FROM passito_jobs.blocked_orphans()"
    ).fetchall()
    assert rows == [(child, parent, "cancelled")]

    conn.execute("SELECT passito_jobs.cancel(ARRAY[%s]::bigint[])", (child,))
    code, out, _ = run_main(["health", "--exit-code-on-failure"])
    assert (code, out.splitlines()[-1]) == (0, "✓ Job queue is healthy")
