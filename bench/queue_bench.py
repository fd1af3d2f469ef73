"""Queue benchmark (`make bench`): bulk dispatch rate, drain rate with W worker processes, pickup latency.

    python bench/queue_bench.py [--jobs 100000] [--workers 2] [--concurrency 200] [--batch-size 200]

Runs on a fresh embedded PostgreSQL in a temporary directory with stock durability settings
(fsync and synchronous_commit on), or on PASSITO_BENCH_DATABASE_URL's server, in a database of
its own that it creates and drops (the role needs CREATEDB). Workers are real `passito-jobs
worker` processes with per-job log lines off, held at a start line until all are ready; the drain
rate is measured on the database's clock, from the first claim to the last completion, so
process start-up is not counted, and every job is checked to have completed exactly once. Pickup
latency runs from the producer's `dispatch` call to the handler's first line. The side-by-side
comparison with PgQueuer and bare SQL is `make bench-peers` (bench/peers_bench.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from benchlib.drain import Meter, measured_drain
from benchlib.latency import measure_pickups
from benchlib.report import machine_line
from benchlib.server import ServerError, server_for_bench
from benchlib.systems import BenchError, Passito, WorkerSpec


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100_000, help="no-op jobs to dispatch and drain")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the drain")
    parser.add_argument("--concurrency", type=int, default=200, help="jobs per worker at once")
    parser.add_argument("--batch-size", type=int, default=200, help="jobs per claim")
    parser.add_argument("--latency-samples", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if min(args.jobs, args.workers, args.concurrency, args.batch_size, args.latency_samples) < 1:
        parser.error("every count must be at least 1")

    spec = WorkerSpec(args.workers, args.batch_size, args.concurrency)
    try:
        with server_for_bench() as server:
            passito = Passito("passito", "passito-jobs")
            passito.prepare(server, "bench_passito")
            drain = measured_drain(passito, spec, args.jobs, Meter(server))
            pickups = measure_pickups(
                [passito], WorkerSpec(1, args.batch_size, args.concurrency), args.latency_samples
            )
            machine = machine_line(server)
    except (BenchError, ServerError) as exc:
        print(f"queue_bench: {exc}", file=sys.stderr)
        return 1
    pickup = pickups["passito"]
    results = {
        "machine": machine,
        "jobs": args.jobs,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "dispatch_jobs_per_s": round(drain.dispatch_rate or 0),
        "drain_jobs_per_s": round(drain.rate),
        "wal_bytes_per_job": round(drain.wal_per_job),
        "buffers_per_job": None if drain.buffers_per_job is None else round(drain.buffers_per_job, 1),
        "worker_cpu_s_per_1k_jobs": round(drain.worker_cpu_per_1k, 4),
        "postgres_cpu_s_per_1k_jobs": None
        if drain.server_cpu_per_1k is None
        else round(drain.server_cpu_per_1k, 4),
        "pickup_latency_p50_ms": round(pickup.p50 * 1000, 2),
        "pickup_latency_p99_ms": round(pickup.p99 * 1000, 2),
        "pickups_missed": pickup.missed,
    }
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"machine:        {machine}")
    print(
        f"bulk dispatch:  {results['dispatch_jobs_per_s']:>9,} jobs/s  "
        f"({args.jobs:,} no-op jobs, dispatch_many)"
    )
    print(
        f"drain:          {results['drain_jobs_per_s']:>9,} jobs/s  ({args.workers} worker processes, "
        f"concurrency {args.concurrency}, batch {args.batch_size}; every job checked completed once)"
    )
    print(
        f"cost per job:   {results['wal_bytes_per_job']:,} WAL bytes, {results['buffers_per_job']} buffers; "
        f"CPU per 1,000 jobs: workers {results['worker_cpu_s_per_1k_jobs']} s, "
        f"PostgreSQL {results['postgres_cpu_s_per_1k_jobs']} s"
    )
    print(
        f"pickup latency: p50 {results['pickup_latency_p50_ms']} ms, "
        f"p99 {results['pickup_latency_p99_ms']} ms  "
        f"(idle worker, dispatch call to the handler's first line, {len(pickup.samples)} samples)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
