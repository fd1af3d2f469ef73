"""Flow control: a queue's pause, concurrency, rate and key concurrency, held in
`passito_jobs.queues` and enforced by the SQL `claim` (docs/flow-control.md).

The checks here are the twins of the SQL functions' (`queue_limit_problem`, `rate_problem` in
migration 0007), with the same words, so the CLI, Python and the PHP app refuse the same values
the same way. A rate is written `N/PERIOD`: `50/1s`, `600/1m`, `5/250ms`, `10/s`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from passito_jobs.queue.errors import FlowControlError
from passito_jobs.queue.limits import number, printable

__all__ = [
    "UNCHANGED",
    "FlowControlError",
    "Rate",
    "Unchanged",
    "check_limit",
    "check_rate",
    "format_period",
    "parse_rate",
    "parse_setting",
]

NO_LIMIT = "none"
"""How a limit is removed where a value must be written: the command line, JSON, a form."""
LIMIT_NAMES = ("concurrency", "rate", "key_concurrency")
SETTING_NAMES = ("paused", *LIMIT_NAMES)

MAX_QUEUE_LIMIT = 1_000_000
"""The highest concurrency, key concurrency, or number of jobs per rate period."""
MIN_RATE_PERIOD = 0.001
MAX_RATE_PERIOD = 7 * 86400.0
MAX_RATE_PER_SECOND = 1_000_000  # starts at least a microsecond apart (timestamp precision)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"\s*(\d{1,20})\s*/\s*(\d{0,9}(?:\.\d{1,6})?)\s*(ms|s|m|h|d)\s*", re.ASCII)


class Unchanged:
    """The value of a queue limit that a call leaves as it is (FlowControl.set_limits)."""

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged()


@dataclass(frozen=True)
class Rate:
    """At most `limit` jobs started per `period` seconds, spaced evenly."""

    limit: int
    period: float

    def __str__(self) -> str:
        return f"{self.limit}/{format_period(self.period)}"


def format_period(seconds: float) -> str:
    """The shortest spelling of a rate period: 1 -> '1s', 60 -> '1m', 0.25 -> '250ms'."""
    for unit in ("d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size and math.isclose(seconds / size, round(seconds / size), abs_tol=1e-9):
            return f"{round(seconds / size)}{unit}"
    return f"{seconds * 1000:g}ms"


def check_limit(what: str, value: object) -> int | None:
    """A concurrency or key concurrency: a whole number from 1 to 1,000,000, or None (no limit)."""
    if value is None:
        return None
    if isinstance(value, str):  # a form's field, or a string in JSON
        raise FlowControlError(f"{what} must be a whole number, got '{printable(value.strip(), 40)}'")
    if not isinstance(value, int) or isinstance(value, bool):
        raise FlowControlError(f"{what} must be a whole number, got {type(value).__name__}")
    if value < 1:
        raise FlowControlError(f"{what} must be at least 1, got {number(value)}")
    if value > MAX_QUEUE_LIMIT:
        raise FlowControlError(f"{what} must be at most {MAX_QUEUE_LIMIT}, got {number(value)}")
    return value


def check_rate(rate: Rate | None) -> Rate | None:
    if rate is None:
        return None
    if not isinstance(rate.limit, int) or isinstance(rate.limit, bool):
        raise FlowControlError("rate must allow a whole number of jobs per period")
    if rate.limit < 1:
        raise FlowControlError(f"rate must allow at least 1 job per period, got {rate.limit}")
    if rate.limit > MAX_QUEUE_LIMIT:
        raise FlowControlError(f"rate must allow at most {MAX_QUEUE_LIMIT} jobs per period, got {rate.limit}")
    period = rate.period
    if not isinstance(period, int | float) or not MIN_RATE_PERIOD <= period <= MAX_RATE_PERIOD:
        raise FlowControlError("rate period must be from 1ms to 7d")
    if period * MAX_RATE_PER_SECOND < rate.limit:
        raise FlowControlError(f"rate must be at most {MAX_RATE_PER_SECOND} jobs per second")
    return rate


def parse_rate(text: str) -> Rate:
    """`50/1s`, `600/1m`, `5/250ms`, `10/s` as a checked Rate (FlowControlError otherwise)."""
    match = _RATE.fullmatch(text)
    if not match:
        shown = printable(text.strip(), 40)
        raise FlowControlError(f"rate must look like 50/1s or 600/1m (N/PERIOD), got '{shown}'")
    count, amount, unit = match.groups()
    limit = int(count)
    if limit > MAX_QUEUE_LIMIT:
        raise FlowControlError(f"rate must allow at most {MAX_QUEUE_LIMIT} jobs per period, got {count}")
    size = float(amount) if amount else 1.0
    rate = Rate(limit, size * _UNITS[unit])
    check_rate(rate)
    return rate


def parse_setting(name: str, value: object) -> bool | int | Rate | None:
    """One queue setting as JSON gives it (`migrate --queue-settings`, the admin API): `paused`
    true or false; `concurrency` and `key_concurrency` a whole number; `rate` a string like
    "50/1s". null or "none" removes a limit. FlowControlError otherwise, naming the setting."""
    if name not in SETTING_NAMES:
        shown = printable(name, 40)
        raise FlowControlError(f"unknown setting {shown!r} (known: {', '.join(SETTING_NAMES)})")
    if name == "paused":
        if not isinstance(value, bool):
            raise FlowControlError("paused must be true or false")
        return value
    if isinstance(value, str) and value.strip().lower() == NO_LIMIT:
        return None
    if name == "rate":
        if value is not None and not isinstance(value, str):
            raise FlowControlError('rate must be a string like "50/1s", or null')
        return None if value is None else parse_rate(value)
    return check_limit(name.replace("_", " "), value)
