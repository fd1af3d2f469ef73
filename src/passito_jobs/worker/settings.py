"""The worker's settings groups: Worker (`PASSITO_CONCURRENCY`, ...) and Maintenance (rescue and
pruning, which every worker runs while it holds the maintenance lease)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from passito_jobs.queue import limits, maintenance
from passito_jobs.queue.errors import InvalidJobError
from passito_jobs.settings import (
    MAX_WORKERS,
    SettingsGroup,
    between,
    loop_interval,
    not_negative,
    one_of,
    parse_bool,
    parse_duration,
    parse_int,
    parse_list,
    parse_lower,
    parse_optional_path,
    port_number,
    positive,
    setting,
)

SYNC_ISOLATION = ("thread", "process")
MAX_INT4 = 2**31 - 1


def _queue_names(queues: tuple[str, ...]) -> str | None:
    for queue in queues:
        try:
            limits.check_name("queue", queue)
        except InvalidJobError as exc:
            return f"holds a bad queue name: {exc}"
    return None


def _worker_name(name: str) -> str | None:
    """The name starts every log line and worker id: a line break in it could forge log lines."""
    if not name:
        return None  # the host name
    if len(name) > limits.MAX_NAME_LENGTH:
        return f"must be at most {limits.MAX_NAME_LENGTH} characters"
    try:
        limits.check_name("worker name", name)
    except InvalidJobError as exc:
        return str(exc).removeprefix("worker name ")
    return None


@dataclass(frozen=True)
class WorkerSettings(SettingsGroup):
    """How one worker process claims and runs jobs."""

    GROUP = "Worker"

    queues: tuple[str, ...] = setting(
        "PASSITO_QUEUES",
        (),
        "Comma-separated queues a worker takes jobs from; empty means all.",
        parse=parse_list,
        check=_queue_names,
    )
    concurrency: int = setting(
        "PASSITO_CONCURRENCY",
        10,
        "Jobs one worker process runs at the same time.",
        parse=parse_int,
        check=between(1, MAX_WORKERS),
    )
    batch_size: int = setting(
        "PASSITO_BATCH_SIZE",
        100,
        "Most jobs claimed in one round trip (never more than the free concurrency).",
        parse=parse_int,
        check=between(1, limits.MAX_CLAIM_BATCH),
    )
    job_modules: tuple[str, ...] = setting(
        "PASSITO_JOB_MODULES",
        (),
        "Comma-separated Python modules to import at worker start; they register job types "
        "(`passito_jobs.outpass`: Passito's).",
        parse=parse_list,
    )
    poll_interval: float = setting(
        "PASSITO_POLL_INTERVAL",
        2.0,
        "Seconds between polls when no notification arrives (LISTEN/NOTIFY wakes workers "
        "at once; polling is the guarantee).",
        parse=parse_duration,
        check=loop_interval,
    )
    heartbeat_interval: float = setting(
        "PASSITO_HEARTBEAT_INTERVAL",
        10.0,
        "Seconds between heartbeats of in-flight jobs.",
        parse=parse_duration,
        check=loop_interval,
    )
    shutdown_timeout: float = setting(
        "PASSITO_SHUTDOWN_TIMEOUT",
        30.0,
        "On SIGTERM, seconds to let in-flight jobs finish before they are returned to pending.",
        parse=parse_duration,
        check=not_negative,
    )
    job_timeout: float = setting(
        "PASSITO_JOB_TIMEOUT",
        900.0,
        "Default limit for one attempt of a job (a job type may set its own).",
        parse=parse_duration,
        check=positive,
    )
    retry_backoff_base: float = setting(
        "PASSITO_RETRY_BACKOFF_BASE",
        2.0,
        "Retry delay after the first failed attempt; doubles with each attempt, with jitter.",
        parse=parse_duration,
        check=not_negative,
    )
    retry_backoff_cap: float = setting(
        "PASSITO_RETRY_BACKOFF_CAP", 3600.0, "Longest retry delay.", parse=parse_duration
    )
    max_payload_bytes: int = setting(
        "PASSITO_MAX_PAYLOAD_BYTES",
        limits.DEFAULT_MAX_PAYLOAD_BYTES,
        "Largest payload or result of one job, in bytes of JSON text.",
        parse=parse_int,
        check=between(
            1, limits.MAX_PAYLOAD_BYTES_SETTING, f"must be between 1 and {limits.MAX_PAYLOAD_BYTES_SETTING}"
        ),
    )
    sync_isolation: str = setting(
        "PASSITO_SYNC_ISOLATION",
        "thread",
        "Where sync handlers run: `thread` (a thread pool; a timed-out attempt's thread runs on) "
        "or `process` (a pool of child processes; a timed-out attempt's process is killed).",
        parse=parse_lower,
        check=one_of(*SYNC_ISOLATION),
    )
    max_abandoned_attempts: int = setting(
        "PASSITO_MAX_ABANDONED_ATTEMPTS",
        10,
        "Timed-out attempts whose handler still runs (a sync handler's thread, an async handler "
        "that ignores cancellation) at which the worker stops claiming, drains and exits 1.",
        parse=parse_int,
        check=between(1, MAX_WORKERS),
    )
    stall_timeout: float = setting(
        "PASSITO_STALL_TIMEOUT",
        60.0,
        "/healthz turns unhealthy when the claim loop made no round trip for this long while it "
        "had free slots, or the event loop did not run (at least 3 poll intervals).",
        parse=parse_duration,
        check=positive,
    )
    metrics_port: int = setting(
        "PASSITO_METRICS_PORT",
        9100,
        "Port of the worker's HTTP server (/metrics, /healthz, /readyz); 0 disables it.",
        parse=parse_int,
        check=port_number,
    )
    log_jobs: bool = setting(
        "PASSITO_LOG_JOBS", True, "Log a line when each job starts and ends.", parse=parse_bool
    )
    schedules_file: Path | None = setting(
        "PASSITO_SCHEDULES_FILE",
        None,
        "A YAML file of periodic jobs (docs/schedules.md), besides those job modules register "
        "with `periodic()`; the chart's `worker.schedules` renders it.",
        parse=parse_optional_path,
    )
    worker_name: str = setting(
        "PASSITO_WORKER_NAME",
        "",
        "The worker name: the first part of worker ids (`<worker name>:<pid>`) and log lines; "
        "defaults to the host name (the pod name in Kubernetes). At most 128 characters, no "
        "control characters.",
        parse=str.strip,
        check=_worker_name,
    )

    def checks(self) -> list[tuple[bool, str, str]]:
        return [
            (
                self.retry_backoff_cap >= self.retry_backoff_base,
                "retry_backoff_cap",
                "{retry_backoff_cap} must not be shorter than {retry_backoff_base}",
            )
        ]

    @property
    def name(self) -> str:
        """The worker name: PASSITO_WORKER_NAME, else the host name."""
        return self.worker_name or socket.gethostname()


@dataclass(frozen=True)
class MaintenanceSettings(SettingsGroup):
    """Rescue of stuck jobs and pruning of finished ones (queue/maintenance.py)."""

    GROUP = "Maintenance"

    stuck_after: float = setting(
        "PASSITO_STUCK_AFTER",
        maintenance.STUCK_AFTER,
        "A processing job without a heartbeat for this long is rescued (back to pending, or "
        "failed on its last attempt).",
        parse=parse_duration,
        check=positive,
        deprecated_env=("PASSITO_STUCK_TIMEOUT",),
    )
    interval: float = setting(
        "PASSITO_MAINTENANCE_INTERVAL",
        maintenance.INTERVAL,
        "Seconds between maintenance runs (rescue, prune) by the lease holder.",
        parse=parse_duration,
        check=loop_interval,
    )
    lease_ttl: float = setting(
        "PASSITO_MAINTENANCE_LEASE_TTL",
        0.0,
        "How long the maintenance lease outlives its last renewal: a dead holder's rescue, pruning "
        "and schedules move to another worker after it; 0: three maintenance intervals, at least 30s.",
        parse=parse_duration,
        check=not_negative,
    )
    keep_completed: float = setting(
        "PASSITO_KEEP_COMPLETED",
        maintenance.KEEP_COMPLETED,
        "How long completed jobs are kept.",
        parse=parse_duration,
        check=not_negative,
    )
    keep_failed: float = setting(
        "PASSITO_KEEP_FAILED",
        maintenance.KEEP_FAILED,
        "How long failed and cancelled jobs are kept.",
        parse=parse_duration,
        check=not_negative,
    )
    batch_size: int = setting(
        "PASSITO_PRUNE_BATCH_SIZE",
        maintenance.BATCH_SIZE,
        "Rows rescued or deleted per statement.",
        parse=parse_int,
        check=between(1, MAX_INT4),
    )

    def checks(self) -> list[tuple[bool, str, str]]:
        return [
            (
                self.lease_ttl == 0 or self.lease_ttl > self.interval,
                "lease_ttl",
                "{lease_ttl} must be longer than {interval}",
            )
        ]

    def config(self, **changes: Any) -> maintenance.MaintenanceConfig:
        """The queue's MaintenanceConfig of these settings."""
        values = {
            "stuck_after": self.stuck_after,
            "keep_completed": self.keep_completed,
            "keep_failed": self.keep_failed,
            "batch_size": self.batch_size,
            "interval": self.interval,
            "lease_ttl": self.lease_ttl,
        }
        return maintenance.MaintenanceConfig(**{**values, **changes})
