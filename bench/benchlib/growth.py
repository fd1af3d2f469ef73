"""How passito-jobs' drain rate grows with worker processes and with the history in its table.

Each history size has a database of its own, filled once with finished jobs that maintenance
has not pruned yet; the drains then go round the databases worker count by worker count, so
the sizes are compared in the same minutes of this machine. A drain's own jobs are deleted
again before the next one, so the history stays the size it says.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from benchlib.drain import DrainResult, Meter, measured_drain
from benchlib.server import HARNESS_TAG, Server
from benchlib.systems import Passito, WorkerSpec

TEMPLATE_JOBS = 2  # real jobs run by a real worker, whose row the history copies


def fill_history(system: Passito, finished: int, spec: WorkerSpec, meter: Meter) -> None:
    """Leave `finished` completed jobs in the table, as months of a busy system would.

    A real worker runs a couple of real jobs; the rest are copies of one of their rows made in
    SQL (INSERT ... SELECT generate_series), every column copied whatever the schema version
    has, the times spread a millisecond apart. Then VACUUM ANALYZE, as autovacuum would have.
    """
    measured_drain(system, WorkerSpec(1, spec.batch, spec.concurrency), TEMPLATE_JOBS, meter)
    with system.connect() as conn:
        columns = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'passito_jobs' AND table_name = 'jobs'"
            " AND is_identity = 'NO' AND is_generated = 'NEVER'"
            f" ORDER BY ordinal_position /* {HARNESS_TAG} */"
        ).fetchall()
        names = ", ".join(f'"{name}"' for name, _ in columns)
        values = ", ".join(
            f"\"{name}\" - g * interval '1 millisecond'" if str(kind).startswith("timestamp") else f'"{name}"'
            for name, kind in columns
        )
        row = conn.execute("SELECT max(id) FROM passito_jobs.jobs").fetchone()
        template = int(row[0]) if row and row[0] else 0
        copies = finished - TEMPLATE_JOBS
        step = 500_000
        for first in range(1, copies + 1, step):
            conn.execute(
                f"INSERT INTO passito_jobs.jobs ({names}) SELECT {values}"
                " FROM passito_jobs.jobs, generate_series(%s::bigint, %s::bigint) AS g WHERE id = %s",
                (first, min(first + step - 1, copies), template),
            )
        conn.execute("VACUUM ANALYZE passito_jobs.jobs")
        row = conn.execute("SELECT max(id), count(*) FROM passito_jobs.jobs").fetchone()
        assert row is not None
        system.history_top = int(row[0] or 0)
        if int(row[1]) != finished:
            raise RuntimeError(f"history fill left {row[1]} rows, not {finished}")


def run_growth(
    server: Server,
    *,
    worker_counts: list[int],
    histories: list[int],
    jobs: int,
    spec: WorkerSpec,
    reps: int,
    meter: Meter,
    progress: Callable[[str], None],
) -> list[DrainResult]:
    systems: dict[int, Passito] = {}
    for history in histories:
        system = Passito(f"passito-h{history}", f"passito-jobs, {history:,} finished jobs", sys.executable)
        system.prepare(server, f"bench_growth_{history}")
        if history:
            progress(f"growth: filling {history:,} finished jobs")
            fill_history(system, history, spec, meter)
        systems[history] = system
    results: list[DrainResult] = []
    for rep in range(reps):
        for workers in worker_counts:
            for history in histories:
                result = measured_drain(
                    systems[history], WorkerSpec(workers, spec.batch, spec.concurrency), jobs, meter
                )
                result.history = history
                results.append(result)
                progress(
                    f"growth rep {rep + 1}/{reps}: {workers} workers, {history:,} finished: "
                    f"{result.rate:,.0f} jobs/s"
                )
    return results
