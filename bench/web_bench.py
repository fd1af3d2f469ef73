"""Speed of the dashboard and admin API (`passito-jobs web`) on a big table.

    python bench/web_bench.py [--completed 3000000] [--failed 100000] [--pending 20000] [--requests 40]

Fills the jobs table as bench/health_query_bench.py does (a busy week: 3 million completed jobs,
a dead-letter set, a backlog, jobs in flight, blocked children, in five queues), starts `passito-jobs
web` on it and asks each page and API call `--requests` times, one at a time on a kept-alive
connection. Prints p50 and p95 of each, and the dashboard process's own CPU time per request
(from /proc, so the database's work is not counted). Uses PASSITO_BENCH_DATABASE_URL (a
database it may empty) or a fresh embedded PostgreSQL in a temporary directory.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit

import psycopg

from passito_jobs.localdb import LocalDatabase
from passito_jobs.web.params import encode_cursor

sys.path.insert(0, str(Path(__file__).parent))
from health_query_bench import fill

TICKS = os.sysconf("SC_CLK_TCK")


def add_flows_and_audit(url: str) -> dict[str, int]:
    """A few dependency chains (the job page's graph) and audit entries, on the filled table."""
    with psycopg.connect(url, autocommit=True) as conn:
        failed = conn.execute("SELECT max(id) FROM passito_jobs.jobs WHERE state = 'failed'").fetchone()
        assert failed is not None
        for _ in range(20):
            qr = conn.execute("SELECT passito_jobs.dispatch('GenerateQrCode', '{}', 'outpasses')").fetchone()
            assert qr is not None
            pdf = conn.execute(
                "SELECT passito_jobs.dispatch('GenerateOutpassPdf', '{}', 'outpasses', depends_on => %s)",
                ([qr[0]],),
            ).fetchone()
            assert pdf is not None
            conn.execute(
                "SELECT passito_jobs.dispatch('SendOutpassEmail', '{}', 'emails', depends_on => %s)",
                ([pdf[0]],),
            )
        conn.execute(
            "INSERT INTO passito_jobs.audit_log (actor, role, action, source, job_ids, changed_ids) "
            "SELECT 'bench', 'admin', 'retry', 'api', ARRAY[g::bigint], ARRAY[g::bigint] "
            "FROM generate_series(1, 500) g"
        )
        conn.execute("VACUUM ANALYZE passito_jobs.jobs")
        return {"failed": int(failed[0]), "pdf": int(pdf[0])}


def start(url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env["PASSITO_DATABASE_URL"] = url
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "passito_jobs", "web", "--port", "0"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"dashboard on (http://\S+?)/ ", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"the dashboard did not start:\n{log.read_text()}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def measure(base: str, pid: int, path: str, requests: int) -> tuple[float, float, float, int]:
    """(p50 ms, p95 ms, server CPU ms per request, status) of GET path."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    status = 0
    for _ in range(3):  # warm-up (first connection, caches, prepared statements)
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        status = response.status
    times = []
    cpu_before = cpu_seconds(pid)
    for _ in range(requests):
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        times.append(time.perf_counter() - started)
    cpu = (cpu_seconds(pid) - cpu_before) / requests
    conn.close()
    times.sort()
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    return statistics.median(times) * 1000, p95 * 1000, cpu * 1000, status


def paths(ids: dict[str, int]) -> list[tuple[str, str]]:
    day = datetime.now(UTC) - timedelta(days=2)
    since, until = quote(day.isoformat()), quote((day + timedelta(hours=1)).isoformat())
    return [
        ("page: overview", "/"),
        ("page: jobs", "/jobs"),
        ("page: dead letters", "/jobs?state=failed"),
        ("page: dead letters, page 2", "/jobs?state=failed&cursor=" + encode_cursor(ids["failed"] - 500)),
        ("page: pending jobs", "/jobs?state=pending"),
        ("page: processing jobs", "/jobs?state=processing"),
        ("page: jobs of a queue", "/jobs?queue=emails"),
        ("page: failed of a type and queue", "/jobs?state=failed&queue=pdfs&type=SendEmail"),
        ("page: created in an hour, 2 days ago", f"/jobs?created_after={since}&created_before={until}"),
        ("page: completed jobs", "/jobs?state=completed"),
        ("page: a job with its flow", f"/jobs/{ids['pdf']}"),
        ("page: workers", "/workers"),
        ("page: audit", "/audit"),
        ("live fragment: overview", "/fragments/overview"),
        ("live fragment: job", f"/fragments/jobs/{ids['pdf']}"),
        ("api: queues", "/api/v1/queues"),
        ("api: jobs", "/api/v1/jobs"),
        ("api: jobs, state=failed, limit=500", "/api/v1/jobs?state=failed&limit=500"),
        ("api: jobs, queue=emails", "/api/v1/jobs?queue=emails"),
        ("api: jobs, created range", f"/api/v1/jobs?created_after={since}&created_before={until}"),
        ("api: job", f"/api/v1/jobs/{ids['failed']}"),
        ("api: workers", "/api/v1/workers"),
        ("api: health", "/api/v1/health"),
        ("api: audit", "/api/v1/audit"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--completed", type=int, default=3_000_000)
    parser.add_argument("--failed", type=int, default=100_000)
    parser.add_argument("--pending", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    url = os.environ.get("PASSITO_BENCH_DATABASE_URL")
    with tempfile.TemporaryDirectory() as folder:
        db = None
        if not url:
            db = LocalDatabase(Path(folder) / "db")
            url = db.start()
        proc = None
        try:
            started = time.perf_counter()
            fill(url, args.completed, args.failed, args.pending)
            ids = add_flows_and_audit(url)
            total = args.completed + args.failed + args.pending + 1560
            print(f"{total:,} jobs loaded in {time.perf_counter() - started:.0f}s")
            proc, base = start(url, Path(folder) / "web.log")
            print(f"{'request':<40} {'p50 ms':>8} {'p95 ms':>8} {'CPU ms/req':>11}")
            for name, path in paths(ids):
                p50, p95, cpu, status = measure(base, proc.pid, path, args.requests)
                flag = "" if status == 200 else f"  (HTTP {status})"
                print(f"{name:<40} {p50:>8.1f} {p95:>8.1f} {cpu:>11.1f}{flag}")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(20)
            if db is not None:
                db.stop()


if __name__ == "__main__":
    main()
