"""`passito-jobs health` and the queue exporter on a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from passito_jobs import JobRequest, dispatch, dispatch_many
from passito_jobs.health.exporter import QueueCollector
from passito_jobs.queue.sqlfiles import queries
from passito_jobs.queue.store import Store
from tests.helpers import job_state, run_cli, wait_for
from tests.integration.test_worker import free_port, http_get

Conn = psycopg.Connection[Any]


def claim(conn: Conn, worker: str, count: int, queue: str | None = None) -> list[int]:
    """Claim jobs as a worker would (the same SQL function)."""
    rows = conn.execute(
        "SELECT id FROM passito_jobs.claim(%s, %s, %s)", (worker, [queue] if queue else None, count)
    ).fetchall()
    return [r[0] for r in rows]


def finish(conn: Conn, worker: str, ids: list[int], *, failed: bool) -> None:
    attempts = [1] * len(ids)
    if failed:
        conn.execute(
            "SELECT passito_jobs.fail(%s, %s, %s, %s, %s)",
            (worker, ids, attempts, ["boom"] * len(ids), [None] * len(ids)),
        )
    else:
        conn.execute(
            "SELECT passito_jobs.complete(%s, %s, %s, %s::jsonb[])", (worker, ids, attempts, ["1"] * len(ids))
        )


def health(cli_env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = run_cli(["health", *args], cli_env)
    return result.returncode, result.stdout, result.stderr


# ---------------------------------------------------------------- passito-jobs health


def test_an_empty_queue_is_healthy(cli_env: dict[str, str]) -> None:
    code, out, err = health(cli_env, "--exit-code-on-failure")
    assert (code, err) == (0, "")
    assert out == (
        "Job Queue Health Check\n"
        "==================================================\n"
        "Pending Jobs:    0\n"
        "Processing Jobs: 0\n"
        "Failed Jobs:     0\n"
        "Stale Jobs:      0 (older than 5m)\n"
        "\n"
        "✓ Job queue is healthy\n"
    )


def test_stale_jobs_make_the_queue_unhealthy(conn: Conn, cli_env: dict[str, str]) -> None:
    ids = dispatch_many([JobRequest("SendEmail", queue="emails") for _ in range(3)], conn=conn)
    dispatch("SendEmail", queue="emails", delay=3600, conn=conn)  # scheduled, not ready: never stale
    conn.execute(
        "UPDATE passito_jobs.jobs SET run_at = now() - interval '10 minutes' WHERE id = ANY(%s)", (ids,)
    )

    code, out, _ = health(cli_env)
    assert code == 0  # without --exit-code-on-failure the report is informational
    assert "Pending Jobs:    4\n" in out
    assert "Stale Jobs:      3 (older than 5m)\n" in out
    assert "⚠ 3 jobs ready but not started for more than 5m (the oldest has waited 10m)" in out
    assert "Likely cause: no worker is running" in out

    assert health(cli_env, "--exit-code-on-failure")[0] == 1
    code, out, _ = health(cli_env, "--exit-code-on-failure", "--stale-after", "15m")
    assert (code, out.splitlines()[-1]) == (0, "✓ Job queue is healthy")


def test_recover_returns_stuck_jobs_to_pending_like_the_workers_rescue(
    conn: Conn, cli_env: dict[str, str]
) -> None:
    ids = dispatch_many([JobRequest("GeneratePdf", queue="pdfs") for _ in range(2)], conn=conn)
    last_try = dispatch("GeneratePdf", queue="pdfs", max_attempts=1, conn=conn)
    assert sorted(claim(conn, "crashed-pod:1", 10)) == sorted([*ids, last_try])
    conn.execute("UPDATE passito_jobs.jobs SET heartbeat_at = now() - interval '5 minutes'")

    code, out, _ = health(cli_env, "--json", "--exit-code-on-failure")
    data = json.loads(out)
    assert code == 1
    assert data["queues"]["pdfs"]["stuck"] == 3
    assert [p["check"] for p in data["problems"]] == ["stuck"]
    assert [job_state(conn, i) for i in ids] == ["processing", "processing"]  # looking changes nothing

    code, out, _ = health(cli_env, "--recover", "--exit-code-on-failure")
    assert code == 1  # the report tells what was found; the recovery is listed below it
    assert "⚠ 3 jobs processing without a heartbeat for more than 1m" in out
    assert (
        f"returned 2 stuck job(s) to pending (#{ids[0]}, #{ids[1]}), "
        f"failed 1 on their last attempt (#{last_try})" in out
    )
    assert [job_state(conn, i) for i in ids] == ["pending", "pending"]
    assert job_state(conn, last_try) == "failed"
    error = conn.execute("SELECT last_error FROM passito_jobs.jobs WHERE id = %s", (ids[0],)).fetchone()
    assert error is not None
    assert "crashed-pod:1 stopped heart-beating" in error[0]

    code, out, _ = health(cli_env, "--exit-code-on-failure", "--max-failure-rate", "1")
    assert (code, out.splitlines()[-1]) == (0, "✓ Job queue is healthy")


def test_failure_rate_over_the_window_per_queue(conn: Conn, cli_env: dict[str, str]) -> None:
    dispatch_many([JobRequest("SendEmail", queue="emails") for _ in range(4)], conn=conn)
    dispatch_many([JobRequest("GenerateQrCode", queue="qr") for _ in range(6)], conn=conn)
    emails, qr = claim(conn, "w:1", 10, "emails"), claim(conn, "w:1", 10, "qr")
    finish(conn, "w:1", emails[:3], failed=True)
    finish(conn, "w:1", emails[3:], failed=False)
    finish(conn, "w:1", qr, failed=False)

    code, out, _ = health(cli_env, "--json", "--exit-code-on-failure")
    data = json.loads(out)
    assert code == 1
    assert data["totals"]["failure_rate"] == 0.3
    assert data["queues"]["emails"]["failure_rate"] == 0.75
    assert (data["queues"]["qr"]["completed_recently"], data["queues"]["qr"]["failure_rate"]) == (6, 0.0)
    assert data["problems"][0]["queues"] == {"emails": 0.75}
    assert (
        "30.0% of the jobs finished in the last 1h failed (3 of 10), above 10.0%"
        in data["problems"][0]["message"]
    )
    assert health(cli_env, "--exit-code-on-failure", "--max-failure-rate", "0.5")[0] == 0

    # Outside the window, the failures no longer count.
    conn.execute("UPDATE passito_jobs.jobs SET finished_at = now() - interval '2 hours'")
    assert health(cli_env, "--exit-code-on-failure")[0] == 0
    code, out, _ = health(cli_env, "--exit-code-on-failure", "--window", "3h")
    assert code == 1
    assert "Failed Jobs:     3\n" in out


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--max-failure-rate", "10"], {}, "--max-failure-rate: must be between 0 and 1"),
        (["--window", "soon"], {}, "--window: must be a duration like 30 (seconds), 10s, 5m, 1h, got 'soon'"),
        (
            [],
            {"PASSITO_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none"},
            "cannot connect to the database at 127.0.0.1:9/none",
        ),
        ([], {"PASSITO_HEALTH_WINDOW": "0"}, "PASSITO_HEALTH_WINDOW must be positive"),
        # a running job's heartbeat is up to the interval old: it would be returned and run twice
        (
            ["--rescue", "--stuck-after", "1s"],
            {},
            "--stuck-after must be longer than PASSITO_HEARTBEAT_INTERVAL",
        ),
        (["--stuck-after", "5s"], {"PASSITO_HEARTBEAT_INTERVAL": "5s"}, "--stuck-after must be longer than"),
    ],
)
def test_bad_input_and_an_unreachable_database_exit_2_with_one_line(
    cli_env: dict[str, str], args: list[str], env: dict[str, str], message: str
) -> None:
    code, out, err = health({**cli_env, **env}, *args)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


def test_a_database_without_the_schema_exits_2(cli_env: dict[str, str], empty_database_url: str) -> None:
    code, _, err = health({**cli_env, "PASSITO_DATABASE_URL": empty_database_url})
    assert code == 2
    assert (
        err.strip()
        == "passito-jobs: error: the passito_jobs schema is not installed: run `passito-jobs migrate`"
    )


def test_a_query_error_is_one_line_too(conn: Conn, cli_env: dict[str, str]) -> None:
    conn.execute("ALTER TABLE passito_jobs.jobs RENAME COLUMN heartbeat_at TO heartbeat")
    code, _, err = health(cli_env)
    assert code == 2
    assert err.strip() == 'passito-jobs: error: the health query failed: column "heartbeat_at" does not exist'


def test_a_slow_query_is_cancelled_by_the_statement_timeout(conn: Conn, cli_env: dict[str, str]) -> None:
    with conn.transaction():
        conn.execute("LOCK TABLE passito_jobs.jobs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        code, _, err = health({**cli_env, "PASSITO_HEALTH_QUERY_TIMEOUT": "300ms"})
        elapsed = time.monotonic() - started
    assert code == 2
    assert err.strip() == (
        "passito-jobs: error: the health query did not finish within 0.3s (PASSITO_HEALTH_QUERY_TIMEOUT)"
    )
    assert elapsed < 10


# ---------------------------------------------------------------- the query's plan


def test_the_query_counts_finished_jobs_through_the_partial_indexes(conn: Conn) -> None:
    """A table with many completed jobs: no part of the statement scans the whole table."""
    # One transaction: now() is its start time in every statement, so the rows at the window's
    # edge stay where they are however long the insert, the ANALYZE and the plan take.
    with conn.transaction():
        _counts_through_the_partial_indexes(conn)


def _counts_through_the_partial_indexes(conn: Conn) -> None:
    conn.execute(
        """
        INSERT INTO passito_jobs.jobs (queue, type, state, attempts, run_at, finished_at)
        SELECT 'q' || (g % 4), 'GenerateQrCode', 'completed', 1, finished, finished
        FROM generate_series(1, 200000) g,
             -- One every 3 s: the 1,200th exactly an hour ago (the window's edge, counted), the
             -- 1,201st 1 ms past it (not counted).
             LATERAL (SELECT now() - g * interval '3 s' - CASE WHEN g > 1200 THEN interval '1 ms'
                                                               ELSE interval '0' END AS finished) f
        """
    )
    conn.execute(
        """
        INSERT INTO passito_jobs.jobs (queue, type, state, attempts, finished_at)
        SELECT 'q' || (g % 4), 'SendEmail', 'failed', 3, now() - g * interval '1 min'
        FROM generate_series(1, 2000) g
        """
    )
    dispatch_many([JobRequest("SendEmail", queue=f"q{i % 4}") for i in range(500)], conn=conn)
    claim(conn, "w:1", 50)
    conn.execute("ANALYZE passito_jobs.jobs")
    params = {"stale_after": 300.0, "stuck_after": 60.0, "window": 3600.0}
    row = conn.execute("EXPLAIN (FORMAT JSON) " + queries()["queue_stats"], params).fetchone()
    assert row is not None

    scans: list[tuple[str, str | None]] = []

    def walk(node: dict[str, Any]) -> None:
        # The jobs table's scans; passito_jobs.queues holds one row per queue with flow control.
        if "Scan" in node["Node Type"] and node.get("Relation Name") != "queues":
            scans.append((node["Node Type"], node.get("Index Name")))
        for child in node.get("Plans", []):
            walk(child)

    walk(row[0][0]["Plan"])
    assert not [s for s in scans if s[0] in {"Seq Scan", "Parallel Seq Scan"}], scans
    used = {index for _, index in scans if index}
    assert used <= {
        "jobs_ready_idx",
        "jobs_ready_by_queue_idx",
        "jobs_blocked_idx",
        "jobs_processing_idx",
        "jobs_finished_idx",
        "jobs_keyed_ready_idx",
        "jobs_keyed_processing_idx",
        "jobs_state_id_idx",  # the dashboard's (migration 0004): partial too, without completed jobs
    }, scans
    assert "jobs_finished_idx" in used

    stats = {s.queue: s for s in Store(conn).queue_stats(timeout=5, **params)}
    assert sum(s.completed_recently for s in stats.values()) == 1200  # one every 3 s, the edge included
    assert sum(s.failed for s in stats.values()) == 2000
    assert sum(s.processing for s in stats.values()) == 50


# ---------------------------------------------------------------- the exporter


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture
def collector(database_url: str) -> Iterator[tuple[QueueCollector, CollectorRegistry]]:
    found = QueueCollector(
        database_url, stale_after=300, stuck_after=60, window=3600, query_timeout=0.5, connect_timeout=5
    )
    registry = CollectorRegistry()
    registry.register(found)
    yield found, registry
    found.close()


def test_exporter_gauges_follow_the_queue(
    conn: Conn, collector: tuple[QueueCollector, CollectorRegistry]
) -> None:
    _, registry = collector
    assert samples(registry) == {
        ("passito_jobs_exporter_database_up", ()): 1.0,
        ("passito_jobs_database_up", ()): 1.0,  # the deprecated name, for one release
        ("passito_jobs_exporter_query_duration_seconds", ()): pytest.approx(0.05, abs=1),
        ("passito_jobs_exporter_queries_total", ()): 1.0,
    }
    dispatch_many([JobRequest("SendEmail", queue="emails") for _ in range(5)], conn=conn)
    dispatch("SendEmail", queue="emails", delay=600, conn=conn)
    parent = dispatch("GeneratePdf", queue="pdfs", conn=conn)
    dispatch("SendEmail", queue="emails", depends_on=[parent], conn=conn)
    conn.execute(
        "UPDATE passito_jobs.jobs SET run_at = now() - interval '10 minutes' WHERE type = 'SendEmail'"
        " AND state = 'pending' AND run_at <= now()"
    )
    pdf = claim(conn, "w:1", 1, "pdfs")
    finish(conn, "w:1", pdf, failed=True)
    claim(conn, "w:1", 2, "emails")
    conn.execute(
        "UPDATE passito_jobs.jobs SET heartbeat_at = now() - interval '2 minutes' WHERE state = 'processing'"
    )

    found = samples(registry)
    emails = (("queue", "emails"),)
    assert found[("passito_jobs_queue_jobs", (*emails, ("state", "pending")))] == 4.0
    assert (
        found[("passito_jobs_queue_jobs", (*emails, ("state", "blocked")))] == 0.0
    )  # failed parent failed it
    assert found[("passito_jobs_queue_jobs", (*emails, ("state", "failed")))] == 1.0
    assert found[("passito_jobs_queue_jobs", (*emails, ("state", "processing")))] == 2.0
    assert found[("passito_jobs_queue_ready_jobs", emails)] == 3.0
    assert found[("passito_jobs_queue_stale_jobs", emails)] == 3.0
    assert found[("passito_jobs_queue_oldest_ready_age_seconds", emails)] == pytest.approx(600, abs=30)
    assert found[("passito_jobs_queue_stuck_jobs", emails)] == 2.0
    pdfs = (("queue", "pdfs"),)
    assert found[("passito_jobs_queue_jobs", (*pdfs, ("state", "failed")))] == 1.0
    assert found[("passito_jobs_queue_finished_jobs", (*pdfs, ("state", "failed")))] == 1.0
    assert found[("passito_jobs_queue_finished_jobs", (*pdfs, ("state", "completed")))] == 0.0
    assert found[("passito_jobs_queue_failure_ratio", pdfs)] == 1.0
    assert found[("passito_jobs_queue_failure_ratio", emails)] == 1.0  # the child failed with its parent
    assert found[("passito_jobs_exporter_queries_total", ())] == 2.0


def test_concurrent_scrapes_share_one_query_and_the_statement_timeout_bounds_it(
    conn: Conn, database_url: str, collector: tuple[QueueCollector, CollectorRegistry]
) -> None:
    dispatch("SendEmail", conn=conn)
    # The collector reads its clock once when a scrape arrives and once when its query starts:
    # counting the reads tells when every scrape is waiting, with no sleep that a loaded machine
    # could outrun.
    reads = [0]

    def clock() -> float:
        reads[0] += 1
        return time.monotonic()

    shared = QueueCollector(
        database_url, stale_after=300, stuck_after=60, window=3600, query_timeout=60, connect_timeout=10,
        clock=clock,
    )  # fmt: skip
    registry = CollectorRegistry()
    registry.register(shared)
    assert samples(registry)[("passito_jobs_exporter_queries_total", ())] == 1.0
    results: list[dict[Any, float]] = []

    def scrape() -> None:
        results.append(samples(registry))

    def waiting_on_the_lock() -> bool:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
        return row is not None and row[0] == 1

    # A lock makes the next query wait; five scrapes arrive meanwhile.
    try:
        with conn.transaction():
            conn.execute("LOCK TABLE passito_jobs.jobs IN ACCESS EXCLUSIVE MODE")
            before = reads[0]
            threads = [threading.Thread(target=scrape) for _ in range(5)]
            for thread in threads:
                thread.start()
            wait_for(lambda: reads[0] - before == 6, message="five scrapes and one query started")
            wait_for(waiting_on_the_lock, message="the query waiting on the lock")
        for thread in threads:
            thread.join(60)
    finally:
        shared.close()
    assert len(results) == 5
    ups = [r[("passito_jobs_exporter_database_up", ())] for r in results]
    queries_run = {r[("passito_jobs_exporter_queries_total", ())] for r in results}
    assert ups == [1.0] * 5
    assert queries_run == {2.0}, "each waiting scrape served the one query that ran meanwhile"

    _, registry = collector
    # A lock held longer than the query timeout (0.5s): the scrape answers, exporter_database_up 0.
    with conn.transaction():
        conn.execute("LOCK TABLE passito_jobs.jobs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        found = samples(registry)
        elapsed = time.monotonic() - started
    assert found[("passito_jobs_exporter_database_up", ())] == 0.0
    assert not [key for key in found if key[0].startswith("passito_jobs_queue_")]
    assert elapsed < 10  # the lock is held until the scrape returns: only the timeout ends it
    # The next scrape reconnects and reports the queue again.
    found = samples(registry)
    assert found[("passito_jobs_exporter_database_up", ())] == 1.0
    assert found[("passito_jobs_queue_ready_jobs", (("queue", "default"),))] == 1.0


@pytest.mark.slow
def test_health_serve_keeps_serving_while_the_database_is_unreachable(cli_env: dict[str, str]) -> None:
    port = free_port()
    env = {
        **cli_env,
        "PASSITO_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
        "PASSITO_CONNECT_TIMEOUT": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "passito_jobs", "health", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        status, body = wait_for(
            lambda: http_get(port, "/metrics")[0] and http_get(port, "/metrics"),
            timeout=20,
            message="the exporter's /metrics",
        )
        assert status == 200
        assert "passito_jobs_database_up 0.0" in body
        assert "passito_jobs_queue_jobs{" not in body
        assert http_get(port, "/readyz")[0] == 200
        assert http_get(port, "/healthz")[0] == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out.count("Cannot query the queue (passito_jobs_exporter_database_up is 0)") == 1, out
