"""The health report: the numbers read from the database (`run_checks`, with `--rescue` the
stuck jobs rescued as the workers' maintenance does), printed as the old `jobs:health` text or
as JSON with a per-queue breakdown."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from passito_jobs.health.checks import LIMITS, HealthReport, Problem, Thresholds, evaluate
from passito_jobs.queue.errors import (
    DatabaseUnavailableError,
    QueryTimeoutError,
    QueueError,
    SchemaMissingError,
    cause,
)
from passito_jobs.queue.limits import printable
from passito_jobs.queue.maintenance import Maintenance, MaintenanceConfig
from passito_jobs.queue.migrate import schema_problem
from passito_jobs.queue.models import QueueStats
from passito_jobs.queue.store import Store
from passito_jobs.settings import format_duration

TITLE = "Job Queue Health Check"
RULE = "=" * 50
HEALTHY = "✓ Job queue is healthy"


def _ids(ids: list[int]) -> str:
    shown = ", ".join(f"#{i}" for i in ids[:20])
    return f" ({shown}{', ...' if len(ids) > 20 else ''})" if ids else ""


def _queues(problem: Problem) -> str:
    # A queue name is shown as one safe line: a name written by hand may hold anything.
    return ", ".join(
        f"{printable(queue, 200)} {f'{value:.1%}' if isinstance(value, float) else value}"
        for queue, value in problem.queues.items()
    )


def render_text(report: HealthReport) -> str:
    totals = report.totals
    lines = [
        TITLE,
        RULE,
        f"{'Pending Jobs:':<17}{totals.pending}",
        f"{'Processing Jobs:':<17}{totals.processing}",
        f"{'Failed Jobs:':<17}{totals.failed}",
        f"{'Stale Jobs:':<17}{totals.stale} (older than {format_duration(report.thresholds.stale_after)})",
    ]
    paused = [printable(q.queue, 40) for q in report.queues if q.paused]
    if totals.held_back or paused:
        # Flow control (docs/flow-control.md): shown only when a queue is paused or limited.
        lines.append(f"{'Held Back:':<17}{totals.held_back} (paused queues: {', '.join(paused) or 'none'})")
    if report.unserved:
        shown = ", ".join(
            f"{printable(name, 128)} ({', '.join(f'{n} in {printable(q, 128)}' for q, n in queues.items())})"
            for name, queues in report.unserved.items()
        )
        lines.append(f"Ready jobs whose type no live worker runs on their queue: {shown}")
    lines.append("")
    if report.healthy:
        lines.append(HEALTHY)
    else:
        count = len(report.problems)
        lines.append(f"✗ Job queue is unhealthy: {count} problem{'' if count == 1 else 's'} found")
        for problem in report.problems:
            lines += [
                "",
                f"⚠ {problem.message}",
                f"  Queues: {_queues(problem)}",
                f"  Likely cause: {problem.likely_cause}",
            ]
    rescued = report.rescued
    if rescued is not None:
        lines += [
            "",
            f"Rescued: returned {len(rescued.rescued)} stuck job(s) to pending"
            f"{_ids(rescued.rescued)}, failed {len(rescued.failed)} on their last attempt"
            f"{_ids(rescued.failed)}",
        ]
    return "\n".join(lines)


def _numbers(stats: QueueStats) -> dict[str, Any]:
    data = asdict(stats)
    for name in ("queue", *LIMITS):  # limits: `queues list` and the exporter show them
        data.pop(name)
    data["oldest_ready_age"] = round(_finite(stats.oldest_ready_age), 3)
    data["failure_ratio"] = round(stats.failure_ratio, 4)
    data["failure_rate"] = data["failure_ratio"]  # deprecated name, removed in the next release
    return data


def _finite(value: float) -> float:
    """JSON has no NaN or Infinity: a non-finite number (from rows written by hand) reads as the
    largest float, which every JSON parser accepts."""
    if math.isnan(value):
        return 0.0
    return value if math.isfinite(value) else math.copysign(1.7976931348623157e308, value)


def to_json(report: HealthReport) -> dict[str, Any]:
    thresholds = report.thresholds
    data: dict[str, Any] = {
        "healthy": report.healthy,
        "checked_at": report.checked_at.isoformat(),
        "thresholds": {
            "stale_after_seconds": thresholds.stale_after,
            "stuck_after_seconds": thresholds.stuck_after,
            "max_failure_ratio": thresholds.max_failure_ratio,
            "max_failure_rate": thresholds.max_failure_ratio,  # deprecated name
            "window_seconds": thresholds.window,
        },
        "totals": _numbers(report.totals),
        "queues": {stats.queue: _numbers(stats) for stats in report.queues},
        "problems": [asdict(problem) for problem in report.problems],
        "blocked_orphans": {
            "total": sum(report.blocked_orphans.values()),
            "queues": dict(report.blocked_orphans),
        },
        "unserved_ready_jobs": {name: sum(queues.values()) for name, queues in report.unserved.items()},
        "unserved_ready_jobs_by_queue": {name: dict(queues) for name, queues in report.unserved.items()},
    }
    if report.rescued is not None:
        data["rescued"] = {"pending": report.rescued.rescued, "failed": report.rescued.failed}
        # Deprecated (`--recover`'s key), removed in the next release: the same jobs.
        data["recovered"] = {"requeued": report.rescued.rescued, "failed": report.rescued.failed}
    return data


class HealthCheckError(QueueError):
    """The checks could not run (query timeout, missing schema); the message says why."""


def run_checks(
    store: Store,
    thresholds: Thresholds,
    *,
    timeout: float,
    rescue: bool = False,
    worker_id: str = "health",
) -> HealthReport:
    """Check the queue; with `rescue`, then return stuck jobs to pending as maintenance does.

    Raises HealthCheckError when the schema is missing or the query times out, and
    DatabaseUnavailableError when the connection fails midway.
    """
    try:
        problem = schema_problem(store.schema_version())
        if problem:
            raise HealthCheckError(problem)
        queues = store.queue_stats(
            stale_after=thresholds.stale_after,
            stuck_after=thresholds.stuck_after,
            window=thresholds.window,
            timeout=timeout,
        )
        orphans = store.blocked_orphans(timeout=timeout)
        # A worker registers its types every heartbeat; one silent for stuck_after is gone.
        unserved = store.unserved_ready_jobs(live_within=thresholds.stuck_after, timeout=timeout)
        report = HealthReport(
            thresholds=thresholds,
            queues=queues,
            problems=evaluate(queues, thresholds, orphans),
            checked_at=datetime.now(UTC),
            blocked_orphans=orphans,
            unserved=unserved,
        )
        if rescue:
            config = MaintenanceConfig(stuck_after=thresholds.stuck_after)
            report.rescued = Maintenance(store, worker_id, config).rescue()
    except QueryTimeoutError:
        raise HealthCheckError(
            f"the health query did not finish within {format_duration(timeout)} "
            "(PASSITO_HEALTH_QUERY_TIMEOUT)"
        ) from None
    except DatabaseUnavailableError as exc:
        raise DatabaseUnavailableError(
            f"lost the database connection during the health check: {cause(exc)}"
        ) from None
    except (SchemaMissingError, HealthCheckError):
        raise
    except QueueError as exc:  # permissions, a damaged schema: one line, not a traceback
        raise HealthCheckError(f"the health query failed: {cause(exc)}") from None
    return report
