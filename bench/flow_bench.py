"""Flow control benchmark: the drain with no limit, with a queue concurrency, and with
key concurrency over 10 concurrency keys, interleaved on one server (docs/flow-control.md).

    python bench/flow_bench.py [--reps 3] [--jobs 20000] [--workers 2] [--concurrency 200]

Each scenario drains the same no-op jobs with the same `passito-jobs worker` processes as
`make bench`; the limited ones set the limit after the fill (and give the jobs their keys).
A claim that includes a limited queue locks that queue's row first, so the limited scenarios
hold their start line on `passito_jobs.queues` instead of the jobs table: every worker waits
there until the harness lets go. The tables show each scenario's drain rate and cost per job,
and its ratio to the unlimited drain of the same rep.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from benchlib.drain import DrainResult, Meter, measured_drain
from benchlib.report import machine_line
from benchlib.server import ServerError, server_for_bench
from benchlib.systems import BenchError, Passito, WorkerSpec

KEYS = 10


class Limited(Passito):
    """passito-jobs with flow control on the benchmark's queue (`default`)."""

    table = "passito_jobs.queues"

    def __init__(self, key: str, label: str, limits: str, keyed: bool) -> None:
        super().__init__(key, label)
        self.limits = limits
        self.keyed = keyed

    def fill(self, jobs: int) -> float:
        seconds = super().fill(jobs)
        with self.connect() as conn:
            if self.keyed:
                conn.execute(f"UPDATE passito_jobs.jobs SET concurrency_key = 'k' || (id % {KEYS})")
            conn.execute(self.limits)
        return seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--queue-concurrency", type=int, default=50)
    parser.add_argument("--key-concurrency", type=int, default=5)
    args = parser.parse_args()
    if min(args.reps, args.jobs, args.workers, args.concurrency, args.batch_size) < 1:
        parser.error("every count must be at least 1")
    spec = WorkerSpec(args.workers, args.batch_size, args.concurrency)
    results: dict[str, list[DrainResult]] = {}
    try:
        with server_for_bench() as server:
            systems = [
                Passito("none", "no limit"),
                Limited(
                    "concurrency",
                    f"concurrency {args.queue_concurrency}",
                    f"SELECT passito_jobs.set_queue_concurrency('default', {args.queue_concurrency})",
                    keyed=False,
                ),
                Limited(
                    "keys",
                    f"key concurrency {args.key_concurrency}, {KEYS} keys",
                    f"SELECT passito_jobs.set_queue_key_concurrency('default', {args.key_concurrency})",
                    keyed=True,
                ),
            ]
            for system in systems:
                system.prepare(server, f"bench_flow_{system.key}")
            meter = Meter(server)
            for rep in range(args.reps):
                order = systems[rep % len(systems) :] + systems[: rep % len(systems)]
                for system in order:
                    result = measured_drain(system, spec, args.jobs, meter)
                    results.setdefault(system.key, []).append(result)
                    print(
                        f"[flow-bench] rep {rep + 1}: {system.label}: {result.rate:,.0f} jobs/s",
                        file=sys.stderr,
                    )
            machine = machine_line(server)
    except (BenchError, ServerError) as exc:
        print(f"flow_bench: {exc}", file=sys.stderr)
        return 1
    print(f"{machine}\n")
    print(
        f"Drain of {args.jobs:,} no-op jobs, {args.workers} workers of concurrency {args.concurrency},"
        f" batch {args.batch_size}, {args.reps} interleaved reps\n"
    )
    print(
        "| Scenario | jobs/s (median) | / no limit (median of per-rep ratios) | PostgreSQL CPU s/1000 jobs |"
    )
    print("|---|---|---|---|")
    for system in systems:
        mine = results[system.key]
        ratios = [m.rate / n.rate for m, n in zip(mine, results["none"], strict=True)]
        cpu = [m.server_cpu_per_1k for m in mine if m.server_cpu_per_1k is not None]
        print(
            f"| {system.label} | {statistics.median(m.rate for m in mine):,.0f} |"
            f" {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
            f" {statistics.median(cpu) if cpu else float('nan'):.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
