"""Maintenance: rescue the jobs of workers that stopped heart-beating, prune finished jobs.

Every worker runs it (worker/maintainer.py), but only the holder of the `maintenance` lease does
the work, so one process at a time touches the table; `passito-jobs jobs prune` and `health
--rescue` call the same methods by hand. River's shape: the config is validated when it is
made, `run_once()` returns what changed, and a line is logged only when rows changed. A run is
bounded (a few batches of each kind) to stay short.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from passito_jobs.settings import FieldError

if TYPE_CHECKING:  # the policy objects here stay importable without a database driver
    from passito_jobs.queue.store import Store

log = logging.getLogger("passito_jobs.maintenance")

LEASE = "maintenance"

# The defaults, shared with the settings (PASSITO_STUCK_AFTER, ...): one place for each number.
STUCK_AFTER = 60.0
INTERVAL = 15.0
KEEP_COMPLETED = 7 * 86400.0
KEEP_FAILED = 30 * 86400.0
BATCH_SIZE = 1000
MAX_BATCHES = 20


@dataclass(frozen=True)
class MaintenanceConfig:
    """How maintenance behaves; validated at construction (FieldError names the field)."""

    stuck_after: float = STUCK_AFTER
    keep_completed: float = KEEP_COMPLETED
    keep_failed: float = KEEP_FAILED
    batch_size: int = BATCH_SIZE
    interval: float = INTERVAL
    max_batches: int = MAX_BATCHES  # per run and per kind, so one run stays short
    lease_ttl: float = 0.0
    """How long the maintenance lease lasts unless renewed; 0: three intervals, at least 30 s
    (long enough to cover a run, short enough that a dead holder is replaced quickly). The
    holder renews it every interval, and every second while it runs schedules."""

    def __post_init__(self) -> None:
        if not self.lease_ttl >= 0:
            raise FieldError("lease_ttl", f"{{lease_ttl}} must not be negative, got {self.lease_ttl!r}")
        if self.lease_ttl == 0:
            object.__setattr__(self, "lease_ttl", max(3 * self.interval, 30.0))
        elif not self.lease_ttl > self.interval:
            raise FieldError("lease_ttl", "{lease_ttl} must be longer than {interval}")
        for name in ("stuck_after", "interval"):
            if not getattr(self, name) > 0:
                raise FieldError(name, f"{{{name}}} must be positive, got {getattr(self, name)!r}")
        for name in ("keep_completed", "keep_failed"):
            if not getattr(self, name) >= 0:
                raise FieldError(name, f"{{{name}}} must not be negative, got {getattr(self, name)!r}")
        for name in ("batch_size", "max_batches"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"{{{name}}} must be at least 1, got {getattr(self, name)!r}")


@dataclass
class MaintenanceResult:
    """What one run changed: jobs rescued back to pending, rescued jobs failed on their last
    attempt, finished jobs pruned. `took_lease` is False when another worker holds the lease."""

    rescued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    pruned: int = 0
    took_lease: bool = True

    @property
    def changed(self) -> bool:
        return bool(self.rescued or self.failed or self.pruned)


class Maintenance:
    """One maintenance participant, identified by the worker id that holds the lease."""

    def __init__(self, store: Store, worker_id: str, config: MaintenanceConfig) -> None:
        self.store = store
        self.worker_id = worker_id
        self.config = config

    def run_once(self) -> MaintenanceResult:
        """Take the lease (or find another worker holding it); then rescue and prune."""
        if not self.store.acquire_lease(LEASE, self.worker_id, self.config.lease_ttl):
            return MaintenanceResult(took_lease=False)
        result = self.rescue()
        self.prune(result)
        if result.changed:
            log.info(
                "Maintenance: rescued %d stuck job(s)%s, failed %d%s, pruned %d finished job(s)",
                len(result.rescued),
                _ids(result.rescued),
                len(result.failed),
                _ids(result.failed),
                result.pruned,
            )
        return result

    def rescue(self, result: MaintenanceResult | None = None) -> MaintenanceResult:
        """Return stuck jobs to pending (attempt counted) or fail them on their last attempt."""
        result = result or MaintenanceResult()
        for _ in range(self.config.max_batches):
            rows = self.store.rescue(self.config.stuck_after, self.config.batch_size)
            for job in rows:
                (result.failed if job.state == "failed" else result.rescued).append(job.id)
            if len(rows) < self.config.batch_size:
                break
        return result

    def prune(
        self, result: MaintenanceResult | None = None, *, until_done: bool = False
    ) -> MaintenanceResult:
        """Delete finished jobs past their retention, a batch at a time: at most `max_batches`
        of them, or (`until_done`, `passito-jobs jobs prune`) until none is left."""
        result = result or MaintenanceResult()
        batches = 0
        while until_done or batches < self.config.max_batches:
            batches += 1
            deleted = self.store.prune(
                self.config.keep_completed, self.config.keep_failed, self.config.batch_size
            )
            result.pruned += deleted
            if deleted < self.config.batch_size:
                break
        return result

    def release(self) -> None:
        """Give the lease up (clean shutdown), so another worker takes over at once."""
        self.store.release_lease(LEASE, self.worker_id)


def _ids(ids: list[int]) -> str:
    shown = ", ".join(f"#{i}" for i in ids[:10])
    return f" ({shown}{', ...' if len(ids) > 10 else ''})" if ids else ""
