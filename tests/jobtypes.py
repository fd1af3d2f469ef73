"""Job types the tests run in real worker processes (`--import tests.jobtypes`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from passito_jobs import JobContext, PermanentError, Snooze, job_type

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


@job_type("RecordSpan")
async def record_span(ctx: JobContext) -> dict[str, float]:
    """Sleeps `seconds`; its result records when the handler started and ended (wall clock, the
    same for every process on this machine): the flow control proofs sample overlaps from it."""
    start = time.time()
    await asyncio.sleep(float(ctx.payload.get("seconds", 0)))
    return {"start": start, "end": time.time()}


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


# ---------------------------------------------------------------- poison (tests/integration/test_poison.py)
# Each poison job takes {"kind": ...}; with {"hold": true} its first attempt blocks, so that a
# worker can be killed while it holds the job (the next worker then gets the poison).


class Opaque:
    """A value JSON cannot encode."""


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this exception cannot be printed")


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


POISON_RESULTS: dict[str, Any] = {
    "nan": lambda: {"r": float("nan")},
    "infinity": lambda: [1, float("inf")],
    "set": lambda: {"s": {1, 2}},
    "object": Opaque,
    "bytes": lambda: {"b": b"\x00\xff"},
    "nul": lambda: {"text": "a\x00b"},
    "nul_key": lambda: {"a\x00": 1},
    "surrogate": lambda: {"text": "x\ud800y"},
    "oversized": lambda: "x" * (2 * 1024 * 1024),
    "deep": lambda: _nested(5000),
}

POISON_ERRORS: dict[str, Any] = {
    "nul": lambda: ValueError("bad\x00byte"),
    "surrogate": lambda: ValueError("bad\udc80byte"),
    "unprintable": Unprintable,
    "huge": lambda: RuntimeError("x" * 10_000_000),
    "system_exit": lambda: SystemExit(3),
}

POISON_PROGRESS: dict[str, Any] = {
    "datetime": lambda: {"at": datetime(2024, 1, 2, tzinfo=UTC)},
    "nul": lambda: "step\x00one",
    "surrogate": lambda: {"\udfff": 1},
    "nan": lambda: [float("nan")],
}


def _hold(ctx: JobContext) -> None:
    if ctx.payload.get("hold") and ctx.attempt == 1:
        time.sleep(3600)


@job_type("PoisonResult")
def poison_result(ctx: JobContext) -> Any:
    _hold(ctx)
    return POISON_RESULTS[ctx.payload["kind"]]()


@job_type("PoisonError")
def poison_error(ctx: JobContext) -> None:
    _hold(ctx)
    raise POISON_ERRORS[ctx.payload["kind"]]()


@job_type("PoisonProgress")
def poison_progress(ctx: JobContext) -> str:
    """Sets a progress value the database cannot store. With `catch`, reports the refusal as
    progress and runs on for `seconds` (heartbeats carry on); without, the error fails the job."""
    _hold(ctx)
    value = POISON_PROGRESS[ctx.payload["kind"]]()
    if not ctx.payload.get("catch"):
        ctx.set_progress(value)
    try:
        ctx.set_progress(value)
    except ValueError as exc:
        ctx.set_progress({"refused": str(exc)})
    time.sleep(float(ctx.payload.get("seconds", 1.0)))
    return "survived"


@job_type("NeverReturns", timeout=0.5)
def never_returns(ctx: JobContext) -> None:
    time.sleep(1000)


@job_type("IgnoresCancellation", timeout=0.5)
async def ignores_cancellation(ctx: JobContext) -> str:
    """Swallows every cancellation and sleeps on: only abandoning it frees its slot."""
    until = time.monotonic() + float(ctx.payload.get("seconds", 1000))
    while time.monotonic() < until:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(until - time.monotonic())
    return "finally done"


@job_type("SyncEcho")
def sync_echo(ctx: JobContext) -> Any:
    """Returns its payload: the normal job of the poison suite (sync, as Passito's types are)."""
    return ctx.payload


@job_type("SyncProgress")
def sync_progress(ctx: JobContext) -> str:
    ctx.set_progress({"step": 1, "of": 2})
    time.sleep(float(ctx.payload.get("seconds", 1.0)))
    return "done"


@job_type("ExitProcess")
def exit_process(ctx: JobContext) -> None:
    """Ends the process running it: in PASSITO_SYNC_ISOLATION=process, a crashed child."""
    os._exit(int(ctx.payload.get("code", 7)))


@job_type("SnoozeTimes")
def snooze_times(ctx: JobContext) -> dict[str, int]:
    """Snoozes `times` times (a line per run in `file`), then returns how often it ran."""
    path = ctx.payload["file"]
    with open(path, "a") as file:
        file.write(f"{ctx.attempt}\n")
    with open(path) as file:
        runs = len(file.read().splitlines())
    if runs <= ctx.payload["times"]:
        raise Snooze(ctx.payload.get("seconds", 0.05))
    return {"runs": runs, "attempt": ctx.attempt}


@job_type("SnoozeForever", max_snoozes=3)
async def snooze_forever(ctx: JobContext) -> None:
    raise Snooze(0)


# ---------------------------------------------------------------- cancellation (test_cancellation.py)


@job_type("WatchesCancelled")
def watches_cancelled(ctx: JobContext) -> str:
    """Runs `seconds` (default 60) after noting its process in the test's table cancel_probe.
    With `poll`, it waits on ctx.cancelled and notes when it saw it (the database's clock);
    without, it ignores it."""
    _conn().execute("INSERT INTO cancel_probe (job_id, pid) VALUES (%s, %s)", (ctx.id, os.getpid()))
    seconds = float(ctx.payload.get("seconds", 60))
    if not ctx.payload.get("poll"):
        time.sleep(seconds)
        return "ignored the cancellation"
    if ctx.cancelled.wait(seconds):
        _conn().execute("UPDATE cancel_probe SET seen_at = clock_timestamp() WHERE job_id = %s", (ctx.id,))
        return "stopped"
    return "never cancelled"
