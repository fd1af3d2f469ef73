"""Maintenance: rescue jobs of workers that stopped heart-beating, prune finished jobs.

Every worker runs this loop, but only the holder of the `maintenance` lease does the work, so
one process at a time touches the table. A run is bounded (a few batches) to stay short.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from passito_jobs.queue.store import Store

log = logging.getLogger("passito_jobs.maintenance")

LEASE = "maintenance"


@dataclass(frozen=True)
class MaintenanceConfig:
    """How maintenance behaves; validated at construction."""

    stuck_timeout: float = 60.0
    keep_completed: float = 7 * 86400.0
    keep_failed: float = 30 * 86400.0
    batch_size: int = 1000
    interval: float = 15.0
    max_batches: int = 20  # per run and per kind, so one run stays short

    def __post_init__(self) -> None:
        if self.stuck_timeout <= 0 or self.interval <= 0:
            raise ValueError("stuck_timeout and interval must be positive")
        if self.keep_completed < 0 or self.keep_failed < 0:
            raise ValueError("retention periods must not be negative")
        if self.batch_size < 1 or self.max_batches < 1:
            raise ValueError("batch sizes must be at least 1")

    @property
    def lease_ttl(self) -> float:
        # Long enough to cover a run, short enough that a dead holder is replaced quickly.
        return max(3 * self.interval, 30.0)


@dataclass
class MaintenanceResult:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    pruned: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.requeued or self.failed or self.pruned)


class Maintenance:
    """One maintenance participant, identified by `holder` (a worker id)."""

    def __init__(self, store: Store, holder: str, config: MaintenanceConfig) -> None:
        self.store = store
        self.holder = holder
        self.config = config

    def run_once(self) -> MaintenanceResult:
        result = MaintenanceResult()
        if not self.store.acquire_lease(LEASE, self.holder, self.config.lease_ttl):
            return result
        self.rescue(result)
        self.prune(result)
        if result.changed:
            log.info(
                "Maintenance: requeued %d stuck job(s)%s, failed %d%s, pruned %d finished job(s)",
                len(result.requeued),
                _ids(result.requeued),
                len(result.failed),
                _ids(result.failed),
                result.pruned,
            )
        return result

    def rescue(self, result: MaintenanceResult | None = None) -> MaintenanceResult:
        """Return stuck jobs to pending (attempt counted) or fail them on their last attempt."""
        result = result or MaintenanceResult()
        for _ in range(self.config.max_batches):
            rows = self.store.rescue(self.config.stuck_timeout, self.config.batch_size)
            for job_id, state, _worker in rows:
                (result.failed if state == "failed" else result.requeued).append(job_id)
            if len(rows) < self.config.batch_size:
                break
        return result

    def prune(self, result: MaintenanceResult | None = None) -> MaintenanceResult:
        result = result or MaintenanceResult()
        for _ in range(self.config.max_batches):
            deleted = self.store.prune(
                self.config.keep_completed, self.config.keep_failed, self.config.batch_size
            )
            result.pruned += deleted
            if deleted < self.config.batch_size:
                break
        return result

    def release(self) -> None:
        """Give the lease up (clean shutdown), so another worker takes over at once."""
        self.store.release_lease(LEASE, self.holder)


def _ids(ids: list[int]) -> str:
    shown = ", ".join(f"#{i}" for i in ids[:10])
    return f" ({shown}{', ...' if len(ids) > 10 else ''})" if ids else ""
