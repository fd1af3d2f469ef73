"""Queue benchmark: bulk dispatch rate, drain rate with W worker processes, pickup latency.

    python bench/queue_bench.py [--jobs 100000] [--workers 2] [--concurrency 200] [--batch-size 200]

Runs against PASSITO_BENCH_DATABASE_URL (a database it may fill and empty) or, by default, a
fresh embedded PostgreSQL in a temporary directory with stock durability settings (fsync and
synchronous_commit on). Workers are real `passito-jobs worker` processes with per-job log lines
off; the drain rate is measured on the database's clock, from the first claim to the last
completion, so process start-up is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from passito_jobs.localdb import LocalDatabase
from passito_jobs.queue.models import JobRequest
from passito_jobs.queue.store import Store


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        Store(conn).migrate()
        conn.execute("TRUNCATE passito_jobs.jobs, passito_jobs.job_dependencies, passito_jobs.leases")
        conn.execute("VACUUM ANALYZE passito_jobs.jobs")


def bench_dispatch(url: str, jobs: int, chunk: int) -> float:
    requests = [JobRequest("Noop", {"n": i}) for i in range(jobs)]
    with psycopg.connect(url, autocommit=True) as conn:
        store = Store(conn)
        started = time.perf_counter()
        for offset in range(0, jobs, chunk):
            store.dispatch_many(requests[offset : offset + chunk])
        return jobs / (time.perf_counter() - started)


def start_workers(url: str, count: int, concurrency: int, batch: int) -> list[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "PASSITO_DATABASE_URL": url,
        "PASSITO_METRICS_PORT": "0",
        "PASSITO_LOG_LEVEL": "WARNING",
    }
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "passito_jobs",
                "worker",
                "--no-log-jobs",
                "--concurrency",
                str(concurrency),
                "--batch-size",
                str(batch),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for proc in workers:
        proc.terminate()
    for proc in workers:
        proc.wait(60)


def wait_drained(
    conn: psycopg.Connection[Any], jobs: int, timeout: float, workers: list[subprocess.Popen[bytes]]
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        exited = [proc.returncode for proc in workers if proc.poll() is not None]
        if exited:
            raise SystemExit(f"a worker exited early (exit codes {exited}); see its output above")
        row = conn.execute("SELECT count(*) FROM passito_jobs.jobs WHERE state = 'completed'").fetchone()
        if row and row[0] >= jobs:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"drain did not finish within {timeout:.0f}s ({row[0] if row else 0}/{jobs})")
        time.sleep(0.2)


def bench_drain(url: str, jobs: int, workers: int, concurrency: int, batch: int) -> float:
    procs = start_workers(url, workers, concurrency, batch)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            wait_drained(conn, jobs, timeout=600, workers=procs)
            row = conn.execute(
                "SELECT extract(epoch FROM max(finished_at) - min(claimed_at)) FROM passito_jobs.jobs"
            ).fetchone()
    finally:
        stop_workers(procs)
    assert row is not None
    return jobs / float(row[0])


def bench_latency(url: str, samples: int) -> tuple[float, float]:
    procs = start_workers(url, 1, 10, 100)
    latencies: list[float] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            store = Store(conn)
            # Let the worker start and settle on LISTEN.
            warm = store.dispatch(JobRequest("Noop"))
            wait_state(conn, warm)
            for _ in range(samples):
                job_id = store.dispatch(JobRequest("Noop"))
                wait_state(conn, job_id)
                row = conn.execute(
                    "SELECT extract(epoch FROM claimed_at - created_at) FROM passito_jobs.jobs WHERE id = %s",
                    (job_id,),
                ).fetchone()
                assert row is not None
                latencies.append(float(row[0]))
                time.sleep(0.01)
    finally:
        stop_workers(procs)
    latencies.sort()
    return statistics.median(latencies), latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]


def run_peers(url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Peer queues on the same server, with the same job count, processes and batch size."""
    script = Path(__file__).parent / "peers" / "pgqueuer_drain.py"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            url,
            "--jobs",
            str(args.jobs),
            "--workers",
            str(args.workers),
            "--batch-size",
            str(args.batch_size),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return [json.loads(done.stdout.strip().splitlines()[-1])]


def wait_state(conn: psycopg.Connection[Any], job_id: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = conn.execute("SELECT state::text FROM passito_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
        if row and row[0] == "completed":
            return
        time.sleep(0.002)
    raise SystemExit(f"job #{job_id} did not complete within 30s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000, help="no-op jobs to dispatch and drain")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the drain")
    parser.add_argument("--concurrency", type=int, default=200, help="jobs per worker at once")
    parser.add_argument("--batch-size", type=int, default=200, help="jobs per claim")
    parser.add_argument("--chunk", type=int, default=100_000, help="jobs per dispatch_many call")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--peers", action="store_true", help="also run PgQueuer on the same server (needs the `bench` extra)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="passito-bench-") as tmp:
        url = os.environ.get("PASSITO_BENCH_DATABASE_URL")
        local = None
        if not url:
            local = LocalDatabase(Path(tmp))
            url = local.start()
        try:
            reset(url)
            dispatch_rate = bench_dispatch(url, args.jobs, args.chunk)
            drain_rate = bench_drain(url, args.jobs, args.workers, args.concurrency, args.batch_size)
            reset(url)
            p50, p99 = bench_latency(url, args.latency_samples)
            peers = run_peers(url, args) if args.peers else []
        finally:
            if local is not None:
                local.stop()

    results = {
        "machine": machine(),
        "jobs": args.jobs,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "dispatch_jobs_per_s": round(dispatch_rate),
        "drain_jobs_per_s": round(drain_rate),
        "pickup_latency_p50_ms": round(p50 * 1000, 2),
        "pickup_latency_p99_ms": round(p99 * 1000, 2),
        "peers": peers,
    }
    if args.json:
        print(json.dumps(results))
    else:
        print(f"machine:        {results['machine']}")
        print(
            f"bulk dispatch:  {results['dispatch_jobs_per_s']:>9,} jobs/s  ({args.jobs:,} no-op jobs, COPY)"
        )
        print(
            f"drain:          {results['drain_jobs_per_s']:>9,} jobs/s  ({args.workers} worker processes, "
            f"concurrency {args.concurrency}, batch {args.batch_size})"
        )
        print(
            f"pickup latency: p50 {results['pickup_latency_p50_ms']} ms, "
            f"p99 {results['pickup_latency_p99_ms']} ms  (idle worker, dispatch to claim)"
        )
        for peer in peers:
            print(
                f"{peer['queue']}: dispatch {peer['dispatch_jobs_per_s']:,} jobs/s, "
                f"drain {peer['drain_jobs_per_s']:,} jobs/s ({peer['workers']} processes, "
                f"batch {peer['batch_size']})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
