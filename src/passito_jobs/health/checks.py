"""The health checks: stale pending jobs, stuck processing jobs, the failure ratio.

Pure: `evaluate` takes the numbers (QueueStats) and returns the problems; report.py reads the
numbers from the database (`run_checks`) and prints the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime

from passito_jobs.queue import maintenance
from passito_jobs.queue.maintenance import MaintenanceResult
from passito_jobs.queue.models import QueueStats
from passito_jobs.settings import FieldError, format_duration

STALE = "stale"
STUCK = "stuck"
FAILURE_RATIO = "failure_ratio"
BLOCKED_ORPHANS = "blocked_orphans"

# The defaults, shared with the settings (PASSITO_HEALTH_STALE_AFTER, ...).
STALE_AFTER = 300.0
STUCK_AFTER = maintenance.STUCK_AFTER
MAX_FAILURE_RATIO = 0.10
WINDOW = 3600.0


@dataclass(frozen=True)
class Thresholds:
    """When a queue counts as unhealthy; validated at construction (FieldError names the field)."""

    stale_after: float = STALE_AFTER
    stuck_after: float = STUCK_AFTER
    max_failure_ratio: float = MAX_FAILURE_RATIO
    window: float = WINDOW

    def __post_init__(self) -> None:
        for name in ("stale_after", "stuck_after", "window"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise FieldError(name, f"{{{name}}} must be a positive duration, got {value!r}")
        if not 0 <= self.max_failure_ratio <= 1:
            raise FieldError(
                "max_failure_ratio",
                f"{{max_failure_ratio}} must be between 0 and 1, got {self.max_failure_ratio!r}",
            )


@dataclass(frozen=True)
class Problem:
    """One failed check: what was found, in which queues, and its likely cause."""

    check: str
    count: int
    message: str
    likely_cause: str
    queues: dict[str, int | float]


@dataclass
class HealthReport:
    thresholds: Thresholds
    queues: list[QueueStats]
    problems: list[Problem]
    checked_at: datetime
    rescued: MaintenanceResult | None = None
    """What `--rescue` did: jobs back to pending, and jobs failed on their last attempt."""
    blocked_orphans: dict[str, int] = field(default_factory=dict)
    """Blocked jobs with a failed or cancelled parent, by queue: they can never run."""
    unserved: dict[str, dict[str, int]] = field(default_factory=dict)
    """Ready jobs whose type no live worker runs on their queue (the job-type registry), by
    type, then by queue."""

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def totals(self) -> QueueStats:
        """Every queue added up (the oldest ready age is the oldest of all)."""
        return total(self.queues)


LIMITS = ("concurrency", "rate_per_second", "key_concurrency")
"""The fields of QueueStats that are a queue's settings, not counts (the exporter shows them)."""


def total(queues: Sequence[QueueStats]) -> QueueStats:
    counts: dict[str, int] = {}
    for spec in fields(QueueStats):
        if spec.name not in {"queue", "oldest_ready_age", "paused", *LIMITS}:
            counts[spec.name] = sum(getattr(q, spec.name) for q in queues)
    oldest = max((q.oldest_ready_age for q in queues), default=0.0)
    return QueueStats("*", oldest_ready_age=oldest, paused=any(q.paused for q in queues), **counts)


def age(seconds: float) -> str:
    """A wait, rounded for people: 42s, 12m, 3.5h, 2.1d."""
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f}m"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _jobs(count: int) -> str:
    return f"{count} job{'' if count == 1 else 's'}"


def evaluate(
    queues: Sequence[QueueStats], thresholds: Thresholds, blocked_orphans: Mapping[str, int] | None = None
) -> list[Problem]:
    """The problems these numbers show, in the order stale, stuck, failure ratio, blocked orphans."""
    problems: list[Problem] = []
    totals = total(queues)
    if totals.stale:
        problems.append(
            Problem(
                check=STALE,
                count=totals.stale,
                message=(
                    f"{_jobs(totals.stale)} ready but not started for more than "
                    f"{format_duration(thresholds.stale_after)} (the oldest has waited "
                    f"{age(totals.oldest_ready_age)})"
                ),
                likely_cause=(
                    "no worker is running, or too few workers for the load (check the worker "
                    "Deployment, its autoscaler and the workers' logs)"
                ),
                queues={q.queue: q.stale for q in queues if q.stale},
            )
        )
    if totals.stuck:
        problems.append(
            Problem(
                check=STUCK,
                count=totals.stuck,
                message=(
                    f"{_jobs(totals.stuck)} processing without a heartbeat for more than "
                    f"{format_duration(thresholds.stuck_after)}"
                ),
                likely_cause=(
                    "workers crashed or were killed mid-job (OOM kill, node loss) and no running "
                    "worker has rescued the jobs yet; `--rescue` returns them to pending"
                ),
                queues={q.queue: q.stuck for q in queues if q.stuck},
            )
        )
    finished = totals.completed_recently + totals.failed_recently
    if finished and totals.failure_ratio > thresholds.max_failure_ratio:
        problems.append(
            Problem(
                check=FAILURE_RATIO,
                count=totals.failed_recently,
                message=(
                    f"{totals.failure_ratio:.1%} of the jobs finished in the last "
                    f"{format_duration(thresholds.window)} failed ({totals.failed_recently} of "
                    f"{finished}), above {thresholds.max_failure_ratio:.1%}"
                ),
                likely_cause=(
                    "a job type fails on every run (a bad deploy or bad payloads) or a service the "
                    "jobs call is down (SMTP, storage); see `passito-jobs jobs list --state failed`"
                ),
                queues={
                    q.queue: round(q.failure_ratio, 4)
                    for q in queues
                    if q.failed_recently and q.failure_ratio > thresholds.max_failure_ratio
                },
            )
        )
    orphans = sum((blocked_orphans or {}).values())
    if orphans:
        problems.append(
            Problem(
                check=BLOCKED_ORPHANS,
                count=orphans,
                message=f"{_jobs(orphans)} blocked behind a failed or cancelled parent: they can never run",
                likely_cause=(
                    "a job was retried while its parent stayed failed (possible before schema "
                    "migration 0002), or rows were changed by hand; `passito-jobs jobs retry` the "
                    "parent and then the job, or `passito-jobs jobs cancel` the job"
                ),
                queues=dict(blocked_orphans or {}),
            )
        )
    return problems
