"""Cost of the health query (`passito-jobs health`, each scrape of `health serve`) on a big table.

    python bench/health_query_bench.py [--completed 3000000] [--failed 100000] [--pending 20000]

Fills a jobs table like a busy week: completed jobs every 200 ms over the week, a dead-letter set
spread over the retention, a backlog, in-flight jobs and blocked children, in five queues. Then
runs `Store.queue_stats` for a 1-hour and a 24-hour window and prints the median time and the
index each part of the plan reads. Every completed job carries the tags of an outpass flow (three
jobs per `outpass:<n>`, five hostels): `jobs list --tag` (`Store.list_jobs(tag=...)`) is timed for
one outpass (3 jobs) and one hostel (a fifth of the table), with the index it reads.
Uses PASSITO_BENCH_DATABASE_URL (a database it may empty) or
a fresh embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from passito_jobs.localdb import LocalDatabase
from passito_jobs.queue.sqlfiles import queries
from passito_jobs.queue.store import RARE_TAG_JOBS, Store

QUEUES = "ARRAY['default', 'emails', 'pdfs', 'qr', 'cleanup']"
HOSTELS = "ARRAY['ganga', 'kaveri', 'yamuna', 'narmada', 'godavari']"


def fill(url: str, completed: int, failed: int, pending: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        Store(conn).migrate()
        conn.execute("TRUNCATE passito_jobs.jobs, passito_jobs.job_dependencies, passito_jobs.leases")
        spacing = 7 * 86400 / completed  # seconds between completions: one week of them
        conn.execute(
            f"""
            INSERT INTO passito_jobs.jobs (queue, type, payload, state, attempts, run_at, started_at,
                                           finished_at, result, tags)
            SELECT ({QUEUES})[1 + mod(g, 5)], 'GenerateQrCode', '{{"outpass_id": 12345}}', 'completed', 1,
                   at, at, at, '{{"ok": true}}',
                   ARRAY['outpass:' || g / 3, 'hostel:' || ({HOSTELS})[1 + mod(g / 3, 5)]]
            FROM generate_series(1, %(n)s) g,
                 LATERAL (SELECT now() - g * make_interval(secs => %(spacing)s)) t(at)
            """,
            {"n": completed, "spacing": spacing},
        )
        conn.execute(
            f"""
            INSERT INTO passito_jobs.jobs (queue, type, state, attempts, finished_at, last_error)
            SELECT ({QUEUES})[1 + mod(g, 5)], 'SendEmail', 'failed', 3, now() - g * interval '10 s', 'boom'
            FROM generate_series(1, %(n)s) g
            """,
            {"n": failed},
        )
        conn.execute(
            f"""
            INSERT INTO passito_jobs.jobs (queue, type, state, run_at)
            SELECT ({QUEUES})[1 + mod(g, 5)], 'SendEmail', 'pending',
                   now() - g * interval '10 ms' + interval '30 s'
            FROM generate_series(1, %(n)s) g
            """,
            {"n": pending},
        )
        conn.execute(
            f"""
            INSERT INTO passito_jobs.jobs (queue, type, state, attempts, worker_id, heartbeat_at,
                                           started_at)
            SELECT ({QUEUES})[1 + mod(g, 5)], 'GeneratePdf', 'processing', 1, 'w',
                   now() - g * interval '100 ms', now()
            FROM generate_series(1, 1000) g
            """
        )
        conn.execute(
            f"""
            INSERT INTO passito_jobs.jobs (queue, type, state, waiting_on)
            SELECT ({QUEUES})[1 + mod(g, 5)], 'SendEmail', 'blocked', 1 FROM generate_series(1, 500) g
            """
        )
        conn.execute("VACUUM ANALYZE passito_jobs.jobs")


def scans(plan: dict[str, Any]) -> list[str]:
    found = []
    if "Scan" in plan["Node Type"]:
        found.append(f"{plan['Node Type']}{' on ' + plan['Index Name'] if 'Index Name' in plan else ''}")
    for child in plan.get("Plans", []):
        found.extend(scans(child))
    return found


def measure(url: str, window: float, runs: int) -> None:
    params = {"stale_after": 300.0, "stuck_after": 60.0, "window": window}
    with psycopg.connect(url, autocommit=True) as conn:
        store = Store(conn)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            store.queue_stats(timeout=30, **params)
            times.append(time.perf_counter() - started)
        row = conn.execute("EXPLAIN (FORMAT JSON) " + queries()["queue_stats"], params).fetchone()
        assert row is not None
        finished = conn.execute(
            "SELECT count(*) FROM passito_jobs.jobs WHERE state IN ('completed', 'failed')"
            " AND finished_at >= now() - make_interval(secs => %s)",
            (window,),
        ).fetchone()
    assert finished is not None
    median = statistics.median(times) * 1000
    print(f"window {window / 3600:g}h ({finished[0]:,} jobs finished in it): median {median:.1f} ms")
    for scan in scans(row[0][0]["Plan"]):
        print(f"    {scan}")


def measure_tags(url: str, runs: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        store = Store(conn)
        for tag in ("outpass:12345", "hostel:ganga"):
            params = {"state": None, "type": None, "queue": None, "tag": tag, "limit": 50}
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                found = store.list_jobs(tag=tag)
                times.append(time.perf_counter() - started)
            # The query Store.list_jobs picks: through the index for a rare tag, else list_jobs.
            matches = conn.execute(queries()["tag_matches"], {"tag": tag, "cap": RARE_TAG_JOBS}).fetchone()
            assert matches is not None
            name = "list_tagged_jobs" if matches[0] < RARE_TAG_JOBS else "list_jobs"
            row = conn.execute("EXPLAIN (FORMAT JSON) " + queries()[name], params).fetchone()
            assert row is not None
            median = statistics.median(times) * 1000
            print(f"jobs list --tag {tag} ({len(found)} shown, {name}): median {median:.1f} ms")
            for scan in scans(row[0][0]["Plan"]):
                print(f"    {scan}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completed", type=int, default=3_000_000)
    parser.add_argument("--failed", type=int, default=100_000)
    parser.add_argument("--pending", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    url = os.environ.get("PASSITO_BENCH_DATABASE_URL")
    with tempfile.TemporaryDirectory() as folder:
        db = None
        if not url:
            db = LocalDatabase(Path(folder))
            url = db.start()
        try:
            started = time.perf_counter()
            fill(url, args.completed, args.failed, args.pending)
            total = args.completed + args.failed + args.pending + 1500
            print(f"{total:,} jobs loaded in {time.perf_counter() - started:.0f}s")
            for window in (3600.0, 86400.0):
                measure(url, window, args.runs)
            measure_tags(url, args.runs)
        finally:
            if db is not None:
                db.stop()


if __name__ == "__main__":
    main()
