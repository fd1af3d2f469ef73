"""Job types the tests run in real worker processes (`--import tests.jobtypes`)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import psycopg

from passito_jobs import JobContext, PermanentError, job_type

_local = threading.local()


def _conn() -> psycopg.Connection[Any]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(os.environ["PASSITO_DATABASE_URL"], autocommit=True)
    return conn


@job_type("RecordSideEffect")
def record_side_effect(ctx: JobContext) -> dict[str, int]:
    """Inserts one row per run: tests count them to prove each job ran exactly once."""
    _conn().execute("CREATE TABLE IF NOT EXISTS side_effects (job_id bigint, attempt int, worker text)")
    _conn().execute("INSERT INTO side_effects VALUES (%s, %s, %s)", (ctx.id, ctx.attempt, ctx.worker_id))
    return {"recorded": ctx.id}


@job_type("FailUntilAttempt")
def fail_until_attempt(ctx: JobContext) -> str:
    """Raises until attempt `succeed_on` (payload)."""
    if ctx.attempt < int(ctx.payload.get("succeed_on", 99)):
        raise RuntimeError(f"boom on attempt {ctx.attempt}")
    return "ok"


@job_type("FailUntilFlag")
def fail_until_flag(ctx: JobContext) -> str:
    """Raises until the file named in the payload exists."""
    if not os.path.exists(ctx.payload["flag"]):
        raise ValueError(f"flag {ctx.payload['flag']} is not there yet")
    return "flag found"


@job_type("AlwaysPermanent")
def always_permanent(ctx: JobContext) -> None:
    raise PermanentError("the payload is wrong and retrying will not help")


@job_type("Hang", timeout=0.5)
async def hang(ctx: JobContext) -> None:
    await asyncio.sleep(3600)


@job_type("SyncSlow", timeout=0.3)
def sync_slow(ctx: JobContext) -> str:
    time.sleep(float(ctx.payload.get("seconds", 1.0)))
    return "late"


@job_type("SlowFirstAttempt")
async def slow_first_attempt(ctx: JobContext) -> dict[str, int]:
    """Hangs on attempt 1 (so it can be killed mid-job), finishes at once later."""
    if ctx.attempt == 1:
        await asyncio.sleep(3600)
    return {"attempt": ctx.attempt}


@job_type("SyncSleep")
def sync_sleep(ctx: JobContext) -> float:
    seconds = float(ctx.payload.get("seconds", 0.5))
    time.sleep(seconds)
    return seconds


@job_type("Progress")
async def progress(ctx: JobContext) -> str:
    ctx.set_progress({"step": 1, "of": 2})
    await asyncio.sleep(float(ctx.payload.get("seconds", 1.5)))
    return "done"
