"""One measured drain: fill, VACUUM ANALYZE and CHECKPOINT, a start line, the drain, the check.

The workers start while the harness holds a lock on the queue table (EXCLUSIVE mode: reads pass,
claims wait). Once every worker's connection waits on that lock, the harness reads its counters
(WAL position, buffers, CPU of the workers and of the server) and lets go: all workers start
claiming at the same moment, and neither their start-up nor their imports are counted. The
drain rate comes from the table (first claim to last completion, on the database's clock).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from benchlib.procs import Proc, stop_all, tree_cpu_seconds
from benchlib.server import HARNESS_TAG, Server
from benchlib.systems import BenchError, Conn, System, WorkerSpec

START_LINE_TIMEOUT = 120.0  # eight workers importing at once on a busy 2-core machine are slow


@dataclass
class Counters:
    at: float
    wal: int
    buffers: int | None
    commits: int
    server_cpu: float | None
    worker_cpu: float


@dataclass
class DrainResult:
    system: str
    jobs: int
    workers: int
    rate: float  # jobs/s, first claim to last completion
    dispatch_rate: float | None  # jobs/s of the fill through the system's own batch API
    wal_per_job: float
    buffers_per_job: float | None
    commits_per_1k: float  # transactions committed in the system's database per 1,000 jobs
    worker_cpu_per_1k: float  # CPU seconds of the worker processes per 1,000 jobs
    server_cpu_per_1k: float | None  # CPU seconds of PostgreSQL's processes per 1,000 jobs
    speed_ms: float  # the machine-speed probe just before this drain (lower is faster)
    history: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def speed_probe_ms() -> float:
    """Milliseconds for a fixed pure-Python loop: how fast this machine is right now."""
    started = time.perf_counter()
    total = 0
    for i in range(300_000):
        total += i * i % 7
    return (time.perf_counter() - started) * 1000


class Meter:
    """Reads the server-wide counters: WAL position, buffers of one database, server CPU.

    The WAL position is the insert position: the WAL generated so far, whether or not it has
    been written out yet (with synchronous_commit off the write position lags behind).
    """

    def __init__(self, server: Server) -> None:
        self.server = server

    def read(self, dbname: str, procs: list[Proc]) -> Counters:
        with self.server.admin() as admin:
            row = admin.execute(
                f"SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn /* {HARNESS_TAG} */"
            ).fetchone()
            wal = int(row[0]) if row else 0
            if self.server.pg_stat_statements:
                row = admin.execute(
                    "SELECT coalesce(sum(s.shared_blks_hit + s.shared_blks_read), 0)"
                    " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
                    " WHERE d.datname = %s AND s.query NOT LIKE %s",
                    (dbname, f"%{HARNESS_TAG}%"),
                ).fetchone()
            else:
                row = admin.execute(
                    "SELECT blks_hit + blks_read FROM pg_stat_database WHERE datname = %s", (dbname,)
                ).fetchone()
            buffers = int(row[0]) if row and row[0] is not None else None
            row = admin.execute(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,)
            ).fetchone()
            commits = int(row[0]) if row else 0
        pid = self.server.postmaster_pid
        server_cpu = tree_cpu_seconds(pid) if pid else None
        return Counters(time.time(), wal, buffers, commits, server_cpu, sum(p.cpu() for p in procs))


def _waiting_at_start_line(conn: Conn, table: str) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        f" WHERE l.locktype = 'relation' AND l.relation = %s::regclass AND NOT l.granted /* {HARNESS_TAG} */",
        (table,),
    ).fetchall()
    return {str(row[0]) for row in rows}


def _check_alive(procs: list[Proc], what: str) -> None:
    failed = [(p.name, p.returncode) for p in procs if p.returncode not in (None, 0)]
    if failed:
        raise BenchError(f"{what}: worker(s) exited early {failed}; see their output above")


def _start_workers(system: System, spec: WorkerSpec) -> list[Proc]:
    procs = []
    for index in range(spec.workers):
        argv, env = system.worker(index, spec)
        procs.append(Proc(argv, env, name=system.app_name(index)))
    return procs


def _wait_start_line(system: System, monitor: Conn, procs: list[Proc], spec: WorkerSpec) -> None:
    expected = {system.app_name(i) for i in range(spec.workers)}
    deadline = time.monotonic() + START_LINE_TIMEOUT
    while not expected <= _waiting_at_start_line(monitor, system.table):
        _check_alive(procs, system.label)
        if any(p.returncode == 0 for p in procs):
            raise BenchError(f"{system.label}: a worker exited before the start line")
        if time.monotonic() > deadline:
            raise BenchError(f"{system.label}: workers not at the start line after {START_LINE_TIMEOUT:.0f}s")
        time.sleep(0.05)


def _wait_drained(system: System, monitor: Conn, procs: list[Proc], jobs: int) -> None:
    deadline = time.monotonic() + max(300.0, jobs / 200)
    while True:
        _check_alive(procs, system.label)
        if system.exits_when_drained:
            if all(p.returncode == 0 for p in procs):
                return
        elif not system.unfinished(monitor):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{system.label}: the drain did not finish in {max(300.0, jobs / 200):.0f}s")
        time.sleep(0.05)


def measured_drain(system: System, spec: WorkerSpec, jobs: int, meter: Meter) -> DrainResult:
    """Drain `jobs` no-op jobs with `spec`'s workers; raises BenchError if any job was lost."""
    system.reset()
    fill_seconds = system.fill(jobs)
    with system.connect() as conn:
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    speed = speed_probe_ms()
    procs: list[Proc] = []
    try:
        with system.connect() as gate, system.connect() as monitor:
            with gate.transaction():
                gate.execute(f"LOCK TABLE {system.table} IN EXCLUSIVE MODE")
                procs = _start_workers(system, spec)
                _wait_start_line(system, monitor, procs, spec)
                before = meter.read(system.dbname, procs)
            _wait_drained(system, monitor, procs, jobs)
            stop_all(procs)
            after = meter.read(system.dbname, procs)
            check = system.check(monitor, jobs)
    finally:
        stop_all(procs)
    if check.problem:
        raise BenchError(f"{system.label}: jobs lost or run twice: {check.problem}")
    if check.span <= 0:
        raise BenchError(f"{system.label}: no drain span in the table")
    per_job = 1 / jobs
    return DrainResult(
        system=system.key,
        jobs=jobs,
        workers=spec.workers,
        rate=jobs / check.span,
        dispatch_rate=jobs / fill_seconds if fill_seconds else None,
        wal_per_job=(after.wal - before.wal) * per_job,
        buffers_per_job=(
            (after.buffers - before.buffers) * per_job
            if after.buffers is not None and before.buffers is not None
            else None
        ),
        commits_per_1k=(after.commits - before.commits) * per_job * 1000,
        worker_cpu_per_1k=(after.worker_cpu - before.worker_cpu) * per_job * 1000,
        server_cpu_per_1k=(
            (after.server_cpu - before.server_cpu) * per_job * 1000
            if after.server_cpu is not None and before.server_cpu is not None
            else None
        ),
        speed_ms=speed,
    )
