"""The systems a benchmark measures, each in a database of its own on the one server.

A system knows how to install itself, fill its queue through its own API, start its worker
processes, tell when a drain is over, check that every job completed exactly once, and give the
drain's span on the database's clock (first claim to last completion), so process start-up is
never counted.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import psycopg

from benchlib import pickup
from benchlib.raw_side import FILL as RAW_FILL
from benchlib.raw_side import SCHEMA as RAW_SCHEMA
from benchlib.server import HARNESS_TAG, Server

BENCH_DIR = Path(__file__).resolve().parents[1]
Conn = psycopg.Connection[tuple[Any, ...]]


class BenchError(RuntimeError):
    """A benchmark step failed; the message says which and why."""


@dataclass(frozen=True)
class WorkerSpec:
    """How each system's workers run: processes, jobs per claim, jobs in flight per process."""

    workers: int = 2
    batch: int = 200
    concurrency: int = 200


@dataclass(frozen=True)
class Check:
    """What the table says after a drain."""

    jobs: int
    span: float  # seconds from the first claim to the last completion, on the database's clock
    problem: str | None  # None when every job completed exactly once


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PASSITO_", "BENCH_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update(extra)
    return env


def _run_json(argv: list[str], env: dict[str, str], what: str, timeout: float = 1800) -> dict[str, Any]:
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    if done.returncode != 0:
        raise BenchError(f"{what} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    lines = done.stdout.strip().splitlines()
    return dict(json.loads(lines[-1])) if lines else {}


class System:
    """One measured system; subclasses fill in the system-specific parts."""

    kind: ClassVar[str]
    table: ClassVar[str]  # the table whose lock holds the workers at the start line
    exits_when_drained: ClassVar[bool] = False

    def __init__(self, key: str, label: str, python: str = sys.executable) -> None:
        self.key = key
        self.label = label
        self.python = python
        self.url = ""
        self.dbname = ""

    def prepare(self, server: Server, dbname: str) -> None:
        """Create the system's database (named for this run: runs may share a server) and install."""
        self.dbname = f"{dbname}_{os.getpid()}"
        server.create_database(self.dbname)
        self.url = server.url(self.dbname)
        self.install()

    def connect(self) -> Conn:
        return psycopg.connect(self.url, autocommit=True, application_name=HARNESS_TAG)

    def app_name(self, index: int) -> str:
        return f"bench-{self.key}-w{index}"

    # --- to fill in

    def install(self) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        raise NotImplementedError

    def fill(self, jobs: int) -> float:
        """Put `jobs` no-op jobs in the queue through the system's own API; seconds taken."""
        raise NotImplementedError

    def worker(
        self, index: int, spec: WorkerSpec, *, pickup_addr: str = ""
    ) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def producer(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def unfinished(self, conn: Conn) -> bool:
        """Jobs are still waiting or running (for systems whose workers do not exit by themselves)."""
        raise NotImplementedError

    def check(self, conn: Conn, jobs: int) -> Check:
        raise NotImplementedError


class Passito(System):
    kind = "passito"
    table = "passito_jobs.jobs"

    def __init__(self, key: str, label: str, python: str = sys.executable) -> None:
        super().__init__(key, label, python)
        self.history_top = 0  # jobs up to this id are history the drains must leave alone

    def _env(self, url: str | None = None, **extra: str) -> dict[str, str]:
        return _env(
            PASSITO_DATABASE_URL=url or self.url,
            PASSITO_METRICS_PORT="0",
            PASSITO_LOG_LEVEL="WARNING",
            # Workers of this version refuse to start without a signing key; no-op jobs sign nothing.
            PASSITO_SECRET_KEY=secrets.token_urlsafe(48),
            **extra,
        )

    def install(self) -> None:
        done = subprocess.run(
            [self.python, "-m", "passito_jobs", "migrate"],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise BenchError(f"passito-jobs migrate ({self.python}) failed: {done.stderr.strip()[-2000:]}")

    def reset(self) -> None:
        with self.connect() as conn:
            if self.history_top:
                conn.execute("DELETE FROM passito_jobs.jobs WHERE id > %s", (self.history_top,))
            else:
                conn.execute("TRUNCATE passito_jobs.jobs CASCADE")

    def fill(self, jobs: int) -> float:
        argv = [self.python, "-m", "benchlib.passito_side", "fill", str(jobs)]
        return float(_run_json(argv, self._env(), f"{self.label}: dispatch_many")["seconds"])

    def worker(
        self, index: int, spec: WorkerSpec, *, pickup_addr: str = ""
    ) -> tuple[list[str], dict[str, str]]:
        argv = [self.python, "-m", "passito_jobs", "worker", "--no-log-jobs"]
        argv += ["--concurrency", str(spec.concurrency), "--batch-size", str(spec.batch)]
        extra: dict[str, str] = {}
        if pickup_addr:
            argv += ["--import", "pickup_jobs"]
            extra = {pickup.ADDR_ENV: pickup_addr, pickup.SYSTEM_ENV: self.key}
        # The application name tells the harness which worker's connections wait at the start line.
        url = f"{self.url}{'&' if '?' in self.url else '?'}application_name={self.app_name(index)}"
        return argv, self._env(url, **extra)

    def producer(self) -> tuple[list[str], dict[str, str]]:
        return [self.python, "-m", "benchlib.passito_side", "produce"], self._env()

    def unfinished(self, conn: Conn) -> bool:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM passito_jobs.jobs WHERE state = 'pending')"
            " OR EXISTS (SELECT 1 FROM passito_jobs.jobs WHERE state = 'processing')"
            f" /* {HARNESS_TAG} */"
        ).fetchone()
        return bool(row and row[0])

    def check(self, conn: Conn, jobs: int) -> Check:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'completed'),"
            " count(*) FILTER (WHERE attempts <> 1),"
            " extract(epoch FROM max(finished_at) - min(claimed_at))"
            f" FROM passito_jobs.jobs WHERE id > %s /* {HARNESS_TAG} */",
            (self.history_top,),
        ).fetchone()
        assert row is not None
        total, completed, rerun, span = int(row[0]), int(row[1]), int(row[2]), float(row[3] or 0)
        problem = None
        if total != jobs or completed != jobs or rerun:
            problem = f"{total} jobs in the table, {completed} completed, {rerun} claimed more than once"
        return Check(completed, span, problem)


class PgQueuer(System):
    kind = "pgqueuer"
    table = "pgqueuer"
    exits_when_drained = True  # `pgq run --mode drain`

    def _env(self, **extra: str) -> dict[str, str]:
        return _env(BENCH_PGQ_URL=self.url, **extra)

    def install(self) -> None:
        argv = [sys.executable, "-m", "benchlib.pgq_side", "install", self.url]
        _run_json(argv, self._env(), "PgQueuer install", timeout=300)

    def reset(self) -> None:
        with self.connect() as conn:
            conn.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")

    def fill(self, jobs: int) -> float:
        argv = [sys.executable, "-m", "benchlib.pgq_side", "fill", self.url, str(jobs)]
        return float(_run_json(argv, self._env(), "PgQueuer enqueue")["seconds"])

    def worker(
        self, index: int, spec: WorkerSpec, *, pickup_addr: str = ""
    ) -> tuple[list[str], dict[str, str]]:
        # What `pgq run --batch-size B --mode drain` runs (see pgq_side), on uvloop.
        mode = "continuous" if pickup_addr else "drain"
        argv = [sys.executable, "-m", "benchlib.pgq_side", "run", str(spec.batch), mode]
        extra = {"BENCH_APPLICATION_NAME": self.app_name(index)}
        if pickup_addr:
            extra |= {pickup.ADDR_ENV: pickup_addr, pickup.SYSTEM_ENV: self.key}
        return argv, self._env(**extra)

    def producer(self) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "benchlib.pgq_side", "produce", self.url], self._env()

    def check(self, conn: Conn, jobs: int) -> Check:
        left = conn.execute(f"SELECT count(*) FROM pgqueuer /* {HARNESS_TAG} */").fetchone()
        row = conn.execute(
            "SELECT count(DISTINCT job_id) FILTER (WHERE status = 'successful'),"
            " count(*) FILTER (WHERE status = 'successful'),"
            " count(*) FILTER (WHERE status = 'picked'),"
            " count(*) FILTER (WHERE status NOT IN ('queued', 'picked', 'successful')),"
            " extract(epoch FROM max(created) FILTER (WHERE status = 'successful')"
            "   - min(created) FILTER (WHERE status = 'picked'))"
            f" FROM pgqueuer_log /* {HARNESS_TAG} */"
        ).fetchone()
        assert row is not None
        assert left is not None
        distinct, done, picked, other = (int(value or 0) for value in row[:4])
        span = float(row[4] or 0)
        problem = None
        if int(left[0]) or distinct != jobs or done != jobs or picked != jobs or other:
            problem = (
                f"{left[0]} jobs left in the queue; {distinct} distinct jobs logged successful "
                f"({done} log rows), {picked} picks, {other} other outcomes"
            )
        return Check(done, span, problem)


class RawSql(System):
    kind = "raw"
    table = "bench_raw.jobs"
    exits_when_drained = True

    def install(self) -> None:
        with self.connect() as conn:
            conn.execute(RAW_SCHEMA)

    def reset(self) -> None:
        with self.connect() as conn:
            conn.execute("TRUNCATE bench_raw.jobs, bench_raw.pings")

    def fill(self, jobs: int) -> float:
        with self.connect() as conn:
            conn.execute(RAW_FILL, {"jobs": jobs})
        return 0.0  # not a queue's dispatch: not reported

    def _url(self, index: int) -> str:
        return f"{self.url}{'&' if '?' in self.url else '?'}application_name={self.app_name(index)}"

    def worker(
        self, index: int, spec: WorkerSpec, *, pickup_addr: str = ""
    ) -> tuple[list[str], dict[str, str]]:
        if pickup_addr:
            argv = [sys.executable, "-m", "benchlib.raw_side", "listen", self._url(index)]
            return argv, _env(**{pickup.ADDR_ENV: pickup_addr, pickup.SYSTEM_ENV: self.key})
        argv = [sys.executable, "-m", "benchlib.raw_side", "drain", self._url(index), str(spec.batch)]
        return argv, _env()

    def producer(self) -> tuple[list[str], dict[str, str]]:
        return [sys.executable, "-m", "benchlib.raw_side", "produce", self.url], _env()

    def check(self, conn: Conn, jobs: int) -> Check:
        row = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE state = 'completed'),"
            " count(*) FILTER (WHERE attempts <> 1),"
            " extract(epoch FROM max(finished_at) - min(claimed_at))"
            f" FROM bench_raw.jobs /* {HARNESS_TAG} */"
        ).fetchone()
        assert row is not None
        total, completed, rerun, span = int(row[0]), int(row[1]), int(row[2]), float(row[3] or 0)
        problem = None
        if total != jobs or completed != jobs or rerun:
            problem = f"{total} rows, {completed} completed, {rerun} claimed more than once"
        return Check(completed, span, problem)
