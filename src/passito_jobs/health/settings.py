"""The Health settings group: the checks of `passito-jobs health` and the queue exporter.
Defaults are the thresholds' (checks.py); how long a job may go without a heartbeat is
PASSITO_STUCK_AFTER, the maintenance setting the rescue uses too."""

from __future__ import annotations

from dataclasses import dataclass

from passito_jobs.health import checks
from passito_jobs.settings import (
    SettingsGroup,
    between,
    parse_duration,
    parse_float,
    parse_int,
    port_number,
    positive,
    setting,
)


@dataclass(frozen=True)
class HealthSettings(SettingsGroup):
    GROUP = "Health"

    stale_after: float = setting(
        "PASSITO_HEALTH_STALE_AFTER",
        checks.STALE_AFTER,
        "A job ready but not started for this long is stale (workers down or too few); "
        "`health --stale-after` overrides it.",
        parse=parse_duration,
        check=positive,
    )
    max_failure_ratio: float = setting(
        "PASSITO_HEALTH_MAX_FAILURE_RATIO",
        checks.MAX_FAILURE_RATIO,
        "Highest healthy failure ratio: failed jobs among those finished within "
        "PASSITO_HEALTH_WINDOW (0 to 1); `health --max-failure-ratio` overrides it.",
        parse=parse_float,
        check=between(0, 1, "must be between 0 and 1"),
        deprecated_env=("PASSITO_HEALTH_MAX_FAILURE_RATE",),
    )
    window: float = setting(
        "PASSITO_HEALTH_WINDOW",
        checks.WINDOW,
        "Recent history the failure ratio and the exporter's finished-job counts cover; "
        "`health --window` overrides it.",
        parse=parse_duration,
        check=positive,
    )
    port: int = setting(
        "PASSITO_HEALTH_PORT",
        9101,
        "Port of the queue exporter (`health serve`: /metrics, /healthz, /readyz); 0 picks a free one.",
        parse=parse_int,
        check=port_number,
    )
    query_timeout: float = setting(
        "PASSITO_HEALTH_QUERY_TIMEOUT",
        5.0,
        "Statement timeout of the health query (each check, each scrape of the exporter).",
        parse=parse_duration,
        # PostgreSQL's statement_timeout is an int of milliseconds (24.8 days at most).
        check=(positive, between(0, 86400, "must be at most 1d")),
    )
