"""Outpasses per second, end to end: QR code + PDF + student email (file backend).

Runs real `passito-jobs worker` processes (2 by default) against a PostgreSQL (the embedded
one in a temporary directory, or PASSITO_BENCH_DATABASE_URL: a scratch database, never the
queue your real workers serve), waits until they are up and warmed
(every process renders a few outpasses first: WeasyPrint loads its fonts on the first PDF),
then dispatches the measured outpasses in one transaction and times until every student email
is written. Each outpass is 3 jobs; no parent approval, so the count is the same every run.

Besides the rate (which drifts with the machine's speed) it reports CPU milliseconds per outpass,
read from /proc: of the worker processes (with the child processes that render PDFs under process
isolation) and of the PostgreSQL server. With --compare-src SRC (another checkout's src/, run
by this Python with PYTHONPATH=SRC, so both sides share this venv's libraries) or --compare PYTHON
(the passito-jobs installed in that other Python) the other checkout runs too, interleaved rep by
rep, each run in a database of its own migrated by its own checkout; the report gives each rep's
ratios and their median.

    python bench/outpass_bench.py [--outpasses 200] [--workers 2] [--concurrency 4] [--json]
    git worktree add /tmp/base main && python bench/outpass_bench.py --compare-src /tmp/base/src --reps 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg

from benchlib.procs import tree_cpu_seconds
from benchlib.server import Server, server_for_bench
from passito_jobs.outpass.flow import OutpassFlow, dispatch_outpass_flows
from passito_jobs.outpass.model import Outpass

TIMEOUT = 600.0


def outpasses(first: int, count: int) -> list[Outpass]:
    return [
        Outpass.from_payload(
            {
                "outpass_id": number,
                "student_name": f"Student {number}",
                "student_email": f"student{number}@example.org",
                "roll_number": f"CS21B{number:04d}",
                "hostel": "Kaveri",
                "room": str(100 + number % 300),
                "destination": "Chennai Central",
                "reason": "Weekend at home",
                "from_date": "2031-03-01T09:00:00+05:30",
                "to_date": "2031-03-03T18:00:00+05:30",
                "status": "approved",
            }
        )
        for number in range(first, first + count)
    ]


def wait_until(condition: Any, what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def emails_done(conn: psycopg.Connection[Any], flows: list[OutpassFlow]) -> bool:
    ids = [flow.student_email for flow in flows]
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE state IN ('completed', 'failed', 'cancelled')),"
        " count(*) FILTER (WHERE state <> 'completed' AND state IN ('failed', 'cancelled'))"
        " FROM passito_jobs.jobs WHERE id = ANY(%s)",
        (ids,),
    ).fetchone()
    assert row is not None
    if row[1]:
        raise SystemExit(f"{row[1]} email job(s) failed; see `passito-jobs jobs list --state failed`")
    return bool(row[0] == len(ids))


def flow_latencies(conn: psycopg.Connection[Any], flows: list[OutpassFlow]) -> list[float]:
    """Seconds from dispatch of the QR job to completion of the email job, per outpass."""
    rows = conn.execute(
        "SELECT extract(epoch FROM e.finished_at - q.created_at) FROM passito_jobs.jobs q"
        " JOIN passito_jobs.jobs p ON p.depends_on = ARRAY[q.id]"
        " JOIN passito_jobs.jobs e ON e.id = ANY(%s) AND e.depends_on = ARRAY[p.id]"
        " WHERE q.id = ANY(%s)",
        ([f.student_email for f in flows], [f.qr_code for f in flows]),
    ).fetchall()
    return sorted(float(row[0]) for row in rows)


def cpu_of(pids: list[int]) -> float:
    return sum(tree_cpu_seconds(pid) or 0.0 for pid in pids)


def run(args: argparse.Namespace, server: Server, side: Side, dbname: str, work: Path) -> dict[str, Any]:
    python, source = side
    url = server.create_database(dbname)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env.update(PASSITO_DATABASE_URL=url)
    if source:
        env["PYTHONPATH"] = source  # that checkout's passito_jobs before the installed one
    subprocess.run(
        [python, "-m", "passito_jobs", "migrate"], env=env, check=True, stdout=subprocess.DEVNULL, timeout=600
    )
    storage = work / dbname / "storage"
    env.update(
        PASSITO_STORAGE_DIR=str(storage),
        PASSITO_SECRET_KEY=secrets.token_urlsafe(48),
        PASSITO_METRICS_PORT="0",
        PASSITO_LOG_JOBS="false",
    )
    logs = [work / dbname / f"worker-{i}.log" for i in range(args.workers)]
    logs[0].parent.mkdir(parents=True, exist_ok=True)
    outputs = [log.open("w") for log in logs]
    argv = [python, "-m", "passito_jobs", "worker", "--import", "passito_jobs.outpass"]
    argv += ["--concurrency", str(args.concurrency)]
    workers = [
        subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        for out in outputs
    ]
    pids = [worker.pid for worker in workers]
    database = [server.postmaster_pid] if server.postmaster_pid else []
    try:
        wait_until(lambda: all("Worker started" in log.read_text() for log in logs), "the workers to start")
        with psycopg.connect(url, autocommit=True) as conn:
            warm = dispatch_outpass_flows(outpasses(1_000_000, args.warmup * args.workers), conn=conn)
            wait_until(lambda: emails_done(conn, warm), "the warm-up outpasses")
            measured = outpasses(1, args.outpasses)
            cpu_workers, cpu_database = cpu_of(pids), cpu_of(database)
            started = time.perf_counter()
            flows = dispatch_outpass_flows(measured, conn=conn)
            wait_until(lambda: emails_done(conn, flows), "the measured outpasses")
            elapsed = time.perf_counter() - started
            cpu_workers, cpu_database = cpu_of(pids) - cpu_workers, cpu_of(database) - cpu_database
            latencies = flow_latencies(conn, flows)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(60)
        for out in outputs:
            out.close()
    outbox = len(list((storage / "outbox").iterdir()))
    assert outbox == args.outpasses + args.warmup * args.workers, f"{outbox} emails written"
    return {
        "outpasses": args.outpasses,
        "jobs": 3 * args.outpasses,
        "workers": args.workers,
        "concurrency": args.concurrency,
        "seconds": round(elapsed, 2),
        "outpasses_per_second": round(args.outpasses / elapsed, 1),
        "jobs_per_second": round(3 * args.outpasses / elapsed, 1),
        "flow_latency_p50_seconds": round(statistics.median(latencies), 2),
        "flow_latency_p95_seconds": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
        "worker_cpu_ms_per_outpass": round(1000 * cpu_workers / args.outpasses, 1),
        "database_cpu_ms_per_outpass": round(1000 * cpu_database / args.outpasses, 1) if database else None,
        "emails_written": outbox,
    }


Side = tuple[str, str | None]  # the Python to run, and the src/ folder to put on its PYTHONPATH


def other_side(args: argparse.Namespace) -> Side:
    if args.compare_src:
        source = Path(args.compare_src).resolve()
        if not (source / "passito_jobs" / "__init__.py").is_file():
            raise SystemExit(
                f"--compare-src {args.compare_src}: no passito_jobs package in it (give a checkout's src/)"
            )
        return (args.compare or sys.executable, str(source))
    return (args.compare, None)


RATIOS = ("outpasses_per_second", "worker_cpu_ms_per_outpass", "database_cpu_ms_per_outpass")


def compare(args: argparse.Namespace, server: Server, work: Path) -> dict[str, Any]:
    """This checkout (a) and the other one (b), interleaved; each rep's a/b ratios and their median."""
    reps: list[dict[str, Any]] = []
    this: Side = (sys.executable, None)
    for rep in range(args.reps):
        order = [("a", this), ("b", other_side(args))]
        if rep % 2:
            order.reverse()  # neither side always runs first on a machine that warms or tires
        runs = {key: run(args, server, side, f"outpass_{key}_{rep}", work) for key, side in order}
        ratios = {k: round(runs["a"][k] / runs["b"][k], 3) for k in RATIOS if runs["a"][k] and runs["b"][k]}
        print(f"rep {rep + 1}: a/b {ratios}", file=sys.stderr)
        reps.append({"a": runs["a"], "b": runs["b"], "ratios": ratios})
    medians = {k: statistics.median(r["ratios"][k] for r in reps) for k in reps[0]["ratios"]}
    return {"reps": reps, "median_ratios": medians, "b": describe_side(other_side(args))}


def describe_side(side: Side) -> str:
    python, source = side
    return f"{python} with PYTHONPATH={source}" if source else python


def describe(result: dict[str, Any]) -> str:
    database = result["database_cpu_ms_per_outpass"]
    return (
        f"Outpass jobs: {result['outpasses_per_second']} outpasses/s "
        f"({result['jobs_per_second']} jobs/s; {result['outpasses']} outpasses = QR code + PDF + email "
        f"to the file backend in {result['seconds']} s with {result['workers']} workers x "
        f"{result['concurrency']}); flow latency p50 {result['flow_latency_p50_seconds']} s, "
        f"p95 {result['flow_latency_p95_seconds']} s; CPU per outpass: workers "
        f"{result['worker_cpu_ms_per_outpass']} ms"
        + (f", PostgreSQL {database} ms" if database is not None else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outpasses", type=int, default=200, help="measured outpasses (default 200)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=4, help="jobs per worker at once (default 4)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=8,
        help="warm-up outpasses per worker (default 8: every PDF process warm)",
    )
    parser.add_argument("--compare", metavar="PYTHON", help="A/B against the passito-jobs of this Python")
    parser.add_argument(
        "--compare-src", metavar="SRC", help="A/B against another checkout's src/ (run by this Python)"
    )
    parser.add_argument("--reps", type=int, default=3, help="interleaved reps of an A/B (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.compare_src:
        try:
            other_side(args)  # a wrong folder fails now, not after the server has started
        except SystemExit as exc:
            parser.error(str(exc))
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="passito-outpass-bench-") as folder, server_for_bench() as server:
        if args.compare or args.compare_src:
            result = {**compare(args, server, Path(folder)), **machine}
        else:
            result = {**run(args, server, (sys.executable, None), "outpass_bench", Path(folder)), **machine}
    if args.json:
        print(json.dumps(result))
    elif args.compare or args.compare_src:
        for number, rep in enumerate(result["reps"], 1):
            print(f"rep {number}: a: {describe(rep['a'])}")
            print(f"       b: {describe(rep['b'])}\n       a/b {rep['ratios']}")
        print(f"median a/b ratios: {result['median_ratios']} (a = this checkout, b = {result['b']})")
    else:
        print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
