"""Retry delays: exponential backoff with jitter."""

from __future__ import annotations

import random


def retry_delay(attempt: int, *, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based).

    The delay doubles with each attempt up to `cap`; "equal jitter" then picks a point in the
    upper half, so retries of many jobs that failed together spread out but never come early.
    """
    if attempt < 1:
        raise ValueError("attempt numbers start at 1")
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 62))
    draw = (rng or random).random()
    return ceiling / 2 + draw * ceiling / 2
