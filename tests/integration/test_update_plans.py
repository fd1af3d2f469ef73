"""The worker's updates (complete, fail, release, heartbeat, snooze) find the jobs it names by
primary key, whatever the statistics say (migration 0012_updates_by_primary_key).

ANALYZE rarely sees a processing job, so the planner believes there is about one; when these
updates could read jobs_processing_idx, it scanned that index and re-read the worker's whole id
list for every job found: quadratic in the batch, half of PostgreSQL's CPU in a drain. The plans
are read from inside the functions with PostgreSQL's own auto_explain (nested statements, sent
back as notices), on a table whose statistics were taken while every job was pending.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from passito_jobs import JobRequest, dispatch_many

Conn = psycopg.Connection[Any]
BATCH = 200


def claim(conn: Conn, worker: str, batch: int) -> tuple[list[int], list[int]]:
    rows = conn.execute(
        "SELECT id, attempts FROM passito_jobs.claim(%s, NULL, %s)", (worker, batch)
    ).fetchall()
    return [r[0] for r in rows], [r[1] for r in rows]


@pytest.fixture
def claimed(conn: Conn) -> tuple[list[int], list[int]]:
    """BATCH jobs processing for worker w:1, out of 5,000 pending when the statistics were taken."""
    dispatch_many([JobRequest("Noop", {"n": i}) for i in range(5000)], conn=conn)
    conn.execute("VACUUM ANALYZE passito_jobs.jobs")
    return claim(conn, "w:1", BATCH)


def update_plans(conn: Conn, call: Callable[[], object]) -> list[dict[str, Any]]:
    """The plans of the statements on the jobs table that `call` runs inside the functions, as
    auto_explain reports them."""
    plans: list[dict[str, Any]] = []

    def notice(diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        start = text.find("{")
        if start >= 0:
            plan = json.loads(text[start:])
            if "FROM passito_jobs.jobs" in plan.get(
                "Query Text", ""
            ) or "UPDATE passito_jobs.jobs" in plan.get("Query Text", ""):
                plans.append(plan["Plan"])

    conn.execute("LOAD 'auto_explain'")
    for setting in (
        "auto_explain.log_min_duration = 0",
        "auto_explain.log_analyze = on",
        "auto_explain.log_nested_statements = on",
        "auto_explain.log_format = json",
        "auto_explain.log_level = notice",
    ):
        conn.execute(f"SET {setting}")
    conn.add_notice_handler(notice)
    try:
        call()
    finally:
        conn.remove_notice_handler(notice)
        conn.execute("SET auto_explain.log_min_duration = -1")
    return plans


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def assert_each_job_read_once(plans: list[dict[str, Any]]) -> None:
    """No plan node runs more than once (no nested loop re-reading the worker's list per job),
    and the jobs are not read through jobs_processing_idx (every processing job of the fleet)."""
    assert plans, "auto_explain reported no statement on the jobs"
    for plan in plans:
        every = list(nodes(plan))
        assert [n["Node Type"] for n in every if n["Actual Loops"] > 1] == [], json.dumps(plan, indent=1)
        assert not [n for n in every if n.get("Index Name") == "jobs_processing_idx"], json.dumps(
            plan, indent=1
        )
        assert sum(int(n.get("Rows Removed by Join Filter", 0)) for n in every) == 0


def test_complete_reads_each_job_once(conn: Conn, claimed: tuple[list[int], list[int]]) -> None:
    ids, attempts = claimed
    results = [None] * len(ids)
    sql = "SELECT passito_jobs.complete('w:1', %s::bigint[], %s::integer[], %s::text[]::jsonb[])"
    plans = update_plans(conn, lambda: conn.execute(sql, (ids, attempts, results)))
    assert_each_job_read_once(plans)
    (done,) = conn.execute(
        "SELECT count(*) FROM passito_jobs.jobs WHERE state = 'completed' AND id = ANY(%s)", (ids,)
    ).fetchone() or (0,)
    assert done == BATCH


def test_fail_reads_each_job_once(conn: Conn, claimed: tuple[list[int], list[int]]) -> None:
    ids, attempts = claimed
    errors = ["boom"] * len(ids)
    retry = [None] * len(ids)
    sql = (
        "SELECT passito_jobs.fail('w:1', %s::bigint[], %s::integer[], %s::text[],"
        " %s::text[]::double precision[])"
    )
    plans = update_plans(conn, lambda: conn.execute(sql, (ids, attempts, errors, retry)))
    assert_each_job_read_once(plans)
    (failed,) = conn.execute(
        "SELECT count(*) FROM passito_jobs.jobs WHERE state = 'failed' AND id = ANY(%s)", (ids,)
    ).fetchone() or (0,)
    assert failed == BATCH


def test_heartbeat_release_and_snooze_read_each_job_once(
    conn: Conn, claimed: tuple[list[int], list[int]]
) -> None:
    ids, attempts = claimed
    third = BATCH // 3
    progress = [None] * len(ids)
    beat = "SELECT passito_jobs.heartbeat('w:1', %s::bigint[], %s::integer[], %s::text[]::jsonb[])"
    plans = update_plans(conn, lambda: conn.execute(beat, (ids, attempts, progress)))
    assert_each_job_read_once(plans)

    release = "SELECT passito_jobs.release('w:1', %s::bigint[], %s::integer[])"
    plans = update_plans(conn, lambda: conn.execute(release, (ids[:third], attempts[:third])))
    assert_each_job_read_once(plans)

    snooze = (
        "SELECT passito_jobs.snooze('w:1', %s::bigint[], %s::integer[], %s::double precision[],"
        " %s::integer[])"
    )
    rest, rest_attempts = ids[third:], attempts[third:]
    args = (rest, rest_attempts, [60.0] * len(rest), [5] * len(rest))
    plans = update_plans(conn, lambda: conn.execute(snooze, args))
    assert_each_job_read_once(plans)
    states = dict(
        conn.execute(
            "SELECT state::text, count(*) FROM passito_jobs.jobs WHERE id = ANY(%s) GROUP BY state", (ids,)
        ).fetchall()
    )
    assert states == {"pending": BATCH}
    (snoozed,) = conn.execute(
        "SELECT count(*) FROM passito_jobs.jobs WHERE snoozes = 1 AND run_at > now() + interval '50 s'"
    ).fetchone() or (0,)
    assert snoozed == len(rest)
