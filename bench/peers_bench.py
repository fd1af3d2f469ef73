"""passito-jobs side by side with PgQueuer and with bare SQL, on one PostgreSQL (`make bench-peers`).

    python bench/peers_bench.py                       # everything, at the defaults below
    python bench/peers_bench.py --reps 3 --jobs 20000 --latency-samples 100 --no-growth   # quick
    python bench/peers_bench.py --only passito --compare ../other/.venv/bin/python        # A/B

Measures, on a fresh embedded PostgreSQL (or PASSITO_BENCH_DATABASE_URL's server, with a role that
may create databases: each system gets its own), with stock durability settings:

- drain: N no-op jobs filled through each system's own batch API, then VACUUM ANALYZE and
  CHECKPOINT, drained by W worker processes held at a start line until all are ready; the
  systems interleaved and their order rotated, rep after rep; each rep's ratios and their
  median. Every job is checked in the table to have completed exactly once.
- the raw-SQL ceiling: 8 plain psycopg processes claiming 100 rows with FOR UPDATE SKIP LOCKED and
  completing them, same server, same job count.
- per system, counts that do not drift with the machine's speed: WAL bytes per job, buffers
  touched per job (pg_stat_statements), CPU seconds per 1,000 jobs of the workers and of the
  PostgreSQL server's processes.
- pickup latency, producer's call to the handler's first line, against the LISTEN/NOTIFY floor.
- growth: passito-jobs' drain rate with 1, 2, 4, 8 worker processes and 0, 1M, 5M finished jobs
  in the table; a plot of it (--plot).

With --compare PYTHON, the passito-jobs installed in that other Python (another checkout's
venv) runs as a second system, interleaved with this one in every rep, each in its own database
migrated by its own `passito-jobs migrate`: the ratios then compare the two checkouts.
Progress goes to stderr; the report (Markdown) to stdout.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchlib import report
from benchlib.drain import DrainResult, Meter, measured_drain
from benchlib.growth import run_growth
from benchlib.latency import Pickups, measure_pickups
from benchlib.server import ServerError, server_for_bench
from benchlib.systems import BenchError, Passito, PgQueuer, RawSql, System, WorkerSpec

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("passito", "pgqueuer", "raw")


def _counts(text: str) -> list[int]:
    try:
        values = [int(float(part)) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError("counts cannot be negative")
    return values


def _systems(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in SYSTEMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"systems are {', '.join(SYSTEMS)}; got {text!r}")
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=_positive, default=100_000, help="no-op jobs per drain (100000)")
    parser.add_argument("--reps", type=_positive, default=5, help="interleaved reps of the drain (5)")
    parser.add_argument("--workers", type=_positive, default=2, help="worker processes per system (2)")
    parser.add_argument("--batch-size", type=_positive, default=200, help="jobs per claim (200)")
    parser.add_argument(
        "--concurrency",
        type=_positive,
        default=400,
        help="passito-jobs: jobs in flight (400: two batches, so that a claim can be in flight while "
        "the last batch runs, as PgQueuer's unlimited max_concurrent_tasks lets it)",
    )
    parser.add_argument("--raw-connections", type=_positive, default=8, help="raw-SQL ceiling: processes (8)")
    parser.add_argument(
        "--raw-batch", type=_positive, default=100, help="raw-SQL ceiling: rows per claim (100)"
    )
    parser.add_argument(
        "--only",
        type=_systems,
        default=list(SYSTEMS),
        metavar="A,B",
        help="systems: passito,pgqueuer,raw (all)",
    )
    parser.add_argument(
        "--compare",
        metavar="PYTHON",
        help="also run the passito-jobs installed in this Python (another checkout's .venv/bin/python)",
    )
    parser.add_argument(
        "--latency-samples", type=int, default=300, help="pickups per system; 0 skips the latency (300)"
    )
    parser.add_argument("--no-growth", action="store_true", help="skip the workers x history growth runs")
    parser.add_argument("--growth-workers", type=_counts, default=[1, 2, 4, 8], metavar="1,2,4,8")
    parser.add_argument(
        "--growth-history", type=_counts, default=[0, 1_000_000, 5_000_000], metavar="0,1000000,5000000"
    )
    parser.add_argument("--growth-jobs", type=_positive, default=None, help="jobs per growth drain (--jobs)")
    parser.add_argument("--growth-reps", type=_positive, default=2, help="reps of the growth grid (2)")
    parser.add_argument(
        "--plot",
        type=Path,
        default=ROOT / "docs" / "images" / "drain-growth.png",
        help="where the growth plot goes (docs/images/drain-growth.png); '' for none",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")
    args = parser.parse_args(argv)
    if args.latency_samples < 0:
        parser.error("--latency-samples cannot be negative")
    if args.growth_history and 0 not in args.growth_history:
        parser.error("--growth-history needs 0 (the empty table the others are compared with)")
    return args


def progress(message: str) -> None:
    print(f"[bench-peers {datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def checkout_of(python: str) -> str:
    """The git commit (and +dirty) of the passito-jobs that `python` imports."""
    code = "import pathlib, passito_jobs; print(pathlib.Path(passito_jobs.__file__).resolve().parent)"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False, timeout=120)
    except OSError as exc:
        raise BenchError(f"--compare {python}: cannot run it ({exc.strerror})") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"--compare {python}: cannot import passito_jobs ({last})")
    folder = done.stdout.strip()
    head = subprocess.run(
        ["git", "-C", folder, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    if head.returncode != 0:
        return folder
    dirty = subprocess.run(
        ["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")


def build_systems(args: argparse.Namespace) -> list[System]:
    if "pgqueuer" in args.only:
        missing = [m for m in ("pgqueuer", "asyncpg", "uvloop") if importlib.util.find_spec(m) is None]
        if missing:
            raise BenchError(
                f"{', '.join(missing)} not installed: `pip install -e '.[bench]'`, or leave PgQueuer out "
                "with --only passito,raw"
            )
    systems: list[System] = []
    if "passito" in args.only:
        label = "passito-jobs"
        if args.compare:
            label = f"passito-jobs {checkout_of(sys.executable)}"
        systems.append(Passito("passito", label))
    if args.compare:
        systems.append(
            Passito("passito-b", f"passito-jobs {checkout_of(args.compare)} (--compare)", args.compare)
        )
    if "pgqueuer" in args.only:
        try:
            systems.append(PgQueuer("pgqueuer", f"PgQueuer {version('pgqueuer')}"))
        except PackageNotFoundError:
            systems.append(PgQueuer("pgqueuer", "PgQueuer"))
    if "raw" in args.only:
        systems.append(RawSql("raw", f"raw SQL ({args.raw_connections} conns, batch {args.raw_batch})"))
    return systems


def run_drains(
    systems: list[System], args: argparse.Namespace, meter: Meter
) -> tuple[list[dict[str, DrainResult]], list[str]]:
    spec = WorkerSpec(args.workers, args.batch_size, args.concurrency)
    raw_spec = WorkerSpec(args.raw_connections, args.raw_batch, args.raw_batch)
    reps: list[dict[str, DrainResult]] = []
    orders: list[str] = []
    for rep in range(args.reps):
        shift = rep % len(systems)
        order = systems[shift:] + systems[:shift]  # each system in each place of the order in turn
        results: dict[str, DrainResult] = {}
        for system in order:
            result = measured_drain(system, raw_spec if system.kind == "raw" else spec, args.jobs, meter)
            results[system.key] = result
            progress(
                f"rep {rep + 1}/{args.reps}: {system.label}: {result.rate:,.0f} jobs/s, "
                f"{result.wal_per_job:,.0f} WAL bytes/job, speed probe {result.speed_ms:.0f} ms"
            )
        reps.append({s.key: results[s.key] for s in systems})
        orders.append(" > ".join(s.key for s in order))
    return reps, orders


def write_report(
    args: argparse.Namespace,
    context: dict[str, Any],
    *,
    systems: list[System],
    reps: list[dict[str, DrainResult]],
    orders: list[str],
    pickups: dict[str, Pickups],
    growth: list[DrainResult],
) -> str:
    labels = {s.key: s.label for s in systems}
    keys = [s.key for s in systems]
    speeds = [r.speed_ms for rep in reps for r in rep.values()] + [r.speed_ms for r in growth]
    out = [
        f"### `make bench-peers`, {context['date']}",
        "",
        f"- Machine: {context['machine']}",
        f"- Load average (1 min) at the start and the end of the run: {context['load'][0]:.2f}, "
        f"{context['load'][1]:.2f}; speed probe over the drains {min(speeds, default=0):.0f}-"
        f"{max(speeds, default=0):.0f} ms (a fixed pure-Python loop timed before each drain; lower: faster)",
        f"- Command: `{context['command']}`",
        "",
        f"#### Drain: {args.jobs:,} no-op jobs, {args.workers} worker processes, batch {args.batch_size}"
        + (f", passito-jobs concurrency {args.concurrency}" if "passito" in keys else ""),
        "",
        report.drain_table(reps, keys, labels, orders),
        "",
        "#### Cost per job (medians over the reps)",
        "",
        report.cost_table(reps, keys, labels),
    ]
    if pickups:
        samples = args.latency_samples
        out += ["", f"#### Pickup latency ({samples} samples each, idle workers, interleaved)", ""]
        out.append(report.pickup_table(pickups, {**labels, "raw": "LISTEN/NOTIFY floor (bare SQL)"}))
    if growth:
        growth_jobs = args.growth_jobs or args.jobs
        out += ["", f"#### Growth: passito-jobs drain rate, jobs/s ({growth_jobs:,} jobs per drain)", ""]
        out.append(report.growth_table(growth))
    if "passito" in keys:
        out += ["", "#### Targets", "", report.targets_table(reps, pickups, growth, args.workers)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python bench/peers_bench.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    context: dict[str, Any] = {"date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC", "command": command}
    load_start = os.getloadavg()[0]
    try:
        systems = build_systems(args)
        with server_for_bench() as server:
            context["machine"] = report.machine_line(server)
            context["machine_short"] = report.machine_line(server, short=True)
            meter = Meter(server)
            for system in systems:
                system.prepare(server, f"bench_{system.key.replace('-', '_')}")
            progress(f"{context['machine']}")
            reps, orders = run_drains(systems, args, meter)
            pickups: dict[str, Pickups] = {}
            if args.latency_samples:
                progress(f"pickup latency: {args.latency_samples} samples per system")
                pickups = measure_pickups(
                    systems, WorkerSpec(1, args.batch_size, args.concurrency), args.latency_samples
                )
            growth: list[DrainResult] = []
            if not args.no_growth and "passito" in args.only and args.growth_workers and args.growth_history:
                growth = run_growth(
                    server,
                    worker_counts=args.growth_workers,
                    histories=args.growth_history,
                    jobs=args.growth_jobs or args.jobs,
                    spec=WorkerSpec(args.workers, args.batch_size, args.concurrency),
                    reps=args.growth_reps,
                    meter=meter,
                    progress=progress,
                )
    except (BenchError, ServerError) as exc:
        print(f"bench-peers: {exc}", file=sys.stderr)
        return 1
    context["load"] = (load_start, os.getloadavg()[0])
    text = write_report(
        args, context, systems=systems, reps=reps, orders=orders, pickups=pickups, growth=growth
    )
    if growth and str(args.plot) not in ("", "."):
        try:
            per_drain = args.growth_jobs or args.jobs
            title = f"passito-jobs drain rate ({per_drain:,} no-op jobs per drain), {context['date']}"
            report.plot_growth(growth, args.plot, f"{title}\n{context['machine_short']}")
            text += f"\n\nPlot: {args.plot}"
        except ImportError:
            text += "\n\nNo plot: matplotlib is not installed (`pip install -e '.[bench]'`)."
    print(text)
    if args.json:
        data = {
            **context,
            "reps": [{k: r.as_dict() for k, r in rep.items()} for rep in reps],
            "labels": {s.key: s.label for s in systems},
            "pickups": {
                k: {
                    "p50_ms": p.p50 * 1000,
                    "p99_ms": p.p99 * 1000,
                    "samples": len(p.samples),
                    "missed": p.missed,
                }
                for k, p in pickups.items()
            },
            "growth": [r.as_dict() for r in growth],
        }
        args.json.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
