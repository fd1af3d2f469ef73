"""Retry delays: exponential backoff with jitter."""

from __future__ import annotations

import math
import random

MAX_RETRY_DELAY = 100 * 365 * 86400.0
"""The longest retry delay the worker asks for (100 years). PostgreSQL's interval tops out near
292,000 years and a job's run_at must stay a readable date, so longer settings are clamped."""


def retry_delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    The delay doubles with each attempt up to `cap`; "equal jitter" then picks a point in the
    upper half, so retries of many jobs that failed together spread out but never come early.
    The result is clamped to 0..MAX_RETRY_DELAY whatever the settings say.
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    draw = (rng or random).random()
    return clamp_delay(ceiling / 2 + draw * ceiling / 2)


def clamp_delay(seconds: float) -> float:
    """`seconds` within 0..MAX_RETRY_DELAY (NaN and infinities included)."""
    if math.isnan(seconds):
        return MAX_RETRY_DELAY
    return min(max(seconds, 0.0), MAX_RETRY_DELAY)
