"""PgQueuer's side of the benchmark (needs the `bench` extra: pgqueuer, asyncpg, uvloop).

    python -m benchlib.pgq_side install URL     (re)install PgQueuer's schema
    python -m benchlib.pgq_side fill URL N      enqueue N jobs with one batch `enqueue` call
    python -m benchlib.pgq_side produce URL     for each line on stdin, enqueue one pickup job
    python -m benchlib.pgq_side run BATCH [drain|continuous]    one worker process

A worker runs exactly what PgQueuer's `pgq run create --batch-size BATCH --mode drain` runs:
`pgqueuer.run(...)`, the function behind that command ("run a worker as `pgq run` does"), on
uvloop, with PgQueuer's log set-up at its default level. (The command itself cannot start with
the current typer: its `--log-level` parser hands a str where an enum is expected.) `create` is
the factory: a QueueManager on one asyncpg connection (the driver PgQueuer's own benchmark uses
by default) with a no-op entrypoint and the pickup probe. BENCH_PGQ_URL names its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import asyncpg
import pgqueuer
import uvloop
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.core import logconfig
from pgqueuer.types import QueueExecutionMode

from benchlib.pickup import report_pickup

URL_ENV = "BENCH_PGQ_URL"
APP_ENV = "BENCH_APPLICATION_NAME"


async def _connect(url: str) -> asyncpg.Connection:
    app = os.environ.get(APP_ENV, "bench-pgqueuer")
    return await asyncpg.connect(url, server_settings={"application_name": app})


@contextlib.asynccontextmanager
async def create() -> AsyncIterator[QueueManager]:
    conn = await _connect(os.environ[URL_ENV])
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        """Does nothing: measures the queue itself."""

    @qm.entrypoint("pickup")
    async def pickup(job: Job) -> None:
        first_line = time.time()
        report_pickup(float(job.payload or b"0"), first_line)

    try:
        yield qm
    finally:
        await conn.close()


async def install(url: str) -> None:
    conn = await _connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        if await queries.schema_is_installed():
            await queries.uninstall()
        await queries.install()
    finally:
        await conn.close()


async def fill(url: str, jobs: int) -> None:
    conn = await _connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        entrypoints = ["noop"] * jobs
        payloads: list[bytes | None] = [json.dumps({"n": i}).encode() for i in range(jobs)]
        started = time.perf_counter()
        await queries.enqueue(entrypoints, payloads, [0] * jobs)
        print(json.dumps({"seconds": time.perf_counter() - started}), flush=True)
    finally:
        await conn.close()


async def produce(url: str) -> None:
    conn = await _connect(url)
    queries = Queries(AsyncpgDriver(conn))
    loop = asyncio.get_running_loop()
    await queries.queue_size()  # connect and warm up before the first measured call
    print("ready", flush=True)
    try:
        while await loop.run_in_executor(None, sys.stdin.readline):
            t0 = time.time()
            await queries.enqueue("pickup", repr(t0).encode(), 0)
    finally:
        await conn.close()


def main() -> int:
    command, url = sys.argv[1], sys.argv[2]
    work: Coroutine[Any, Any, None]
    if command == "install":
        work = install(url)
    elif command == "fill":
        work = fill(url, int(sys.argv[3]))
    elif command == "produce":
        work = produce(url)
    elif command == "run":  # here `url` is the batch size: the factory reads BENCH_PGQ_URL
        logconfig.setup_fancy_logger(logconfig.LogLevel.INFO)
        mode = QueueExecutionMode[sys.argv[3]]
        work = pgqueuer.run(create, batch_size=int(url), mode=mode)
    else:
        raise SystemExit(f"unknown command {command!r}")
    uvloop.run(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
