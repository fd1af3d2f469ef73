"""PgQueuer on the same PostgreSQL, measured like bench/queue_bench.py measures passito-jobs.

    python bench/peers/pgqueuer_drain.py URL [--jobs 100000] [--workers 2] [--batch-size 200]

Installs PgQueuer's schema in the given database (dropping an earlier one), enqueues N no-op jobs
in batches, drains them with W processes (asyncpg driver, `mode=drain`), and reports the drain
rate from the first job started to the last job finished, across processes. Needs the `bench`
extra (`pip install -e '.[bench]'`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from datetime import timedelta

import asyncpg
from pgqueuer import AsyncpgDriver, Queries, QueueManager
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode

ENQUEUE_CHUNK = 10_000


async def prepare(url: str, jobs: int) -> float:
    conn = await asyncpg.connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        if await queries.schema_is_installed():
            await queries.uninstall()
        await queries.install()
        started = time.perf_counter()
        for offset in range(0, jobs, ENQUEUE_CHUNK):
            size = min(ENQUEUE_CHUNK, jobs - offset)
            await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
        return jobs / (time.perf_counter() - started)
    finally:
        await conn.close()


async def work(url: str, batch: int, concurrency: int) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    seen = {"first": 0.0, "last": 0.0, "count": 0.0}

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        now = time.time()
        if not seen["first"]:
            seen["first"] = now
        seen["last"] = now
        seen["count"] += 1

    await qm.run(
        batch_size=batch,
        mode=QueueExecutionMode.drain,
        max_concurrent_tasks=concurrency,
        dequeue_timeout=timedelta(seconds=1),
    )
    await conn.close()
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("url")
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    concurrency = 2 * args.batch_size
    if args.worker:
        print(json.dumps(asyncio.run(work(args.url, args.batch_size, concurrency))))
        return 0
    dispatch_rate = asyncio.run(prepare(args.url, args.jobs))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, args.url, "--worker", "--batch-size", str(args.batch_size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.workers)
    ]
    reports = [json.loads(proc.communicate(timeout=900)[0].strip().splitlines()[-1]) for proc in procs]
    done = sum(r["count"] for r in reports)
    span = max(r["last"] for r in reports) - min(r["first"] for r in reports if r["first"])
    print(
        json.dumps(
            {
                "queue": "pgqueuer",
                "jobs": int(done),
                "workers": args.workers,
                "batch_size": args.batch_size,
                "dispatch_jobs_per_s": round(dispatch_rate),
                "drain_jobs_per_s": round(done / span),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
