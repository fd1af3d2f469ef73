"""The engine's own job types, for tests, demos and benchmarks: Noop and Sleep.

Every worker runs them: the worker runtime imports this module, which registers them.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from passito_jobs.registry import JobContext, PermanentError, job_type


@job_type("Noop")
async def noop(ctx: JobContext) -> None:
    """Does nothing: measures the queue itself."""


@job_type("Sleep")
async def sleep(ctx: JobContext) -> dict[str, Any]:
    """Sleeps `seconds` (default 0.5): stands in for I/O-bound work."""
    seconds = ctx.payload.get("seconds", 0.5)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise PermanentError(f"payload field 'seconds' must be a non-negative number, got {seconds!r}")
    await asyncio.sleep(seconds)
    return {"slept": seconds}
