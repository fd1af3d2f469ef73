"""The scheduler: while this worker holds the maintenance lease, dispatch the slots of the
periodic jobs it knows (`periodic()` in its job modules, PASSITO_SCHEDULES_FILE).

River's shape, like the maintainer: `run_once()` returns what it did (a line is logged only when
jobs were dispatched or slots skipped), and the loop is thin. It wakes at the next slot, at
least every second, renewing the lease each time, so a sub-minute schedule runs on time and a
dead holder is replaced after PASSITO_MAINTENANCE_LEASE_TTL. The holder writes its definitions
to the schedules table when it takes the lease (and every minute): rows its code no longer
defines are marked stale and not dispatched. Exactly-once per slot is the queue's business
(queue/schedules.py); the lease only keeps the other workers from trying.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from passito_jobs.queue.errors import DatabaseUnavailableError, first_line
from passito_jobs.queue.maintenance import LEASE
from passito_jobs.queue.schedules import Schedule, ScheduleError, ScheduleRound, run_round
from passito_jobs.queue.store import Store, StoreHandle

log = logging.getLogger("passito_jobs.worker")

TICK = 1.0
"""Longest sleep between rounds: how soon a new holder notices a dead one's lease expired."""
SYNC_EVERY = 60.0
MAX_FILE_BYTES = 1024 * 1024


class Scheduler:
    """The periodic jobs one worker knows, dispatched while it holds the maintenance lease."""

    def __init__(
        self,
        schedules: Sequence[Schedule],
        *,
        store: StoreHandle,
        worker_id: str,
        lease_ttl: float,
        on_round: Callable[[], None] = lambda: None,
    ) -> None:
        self.schedules = list(schedules)
        self.store = store
        self.worker_id = worker_id
        self.lease_ttl = lease_ttl
        self._on_round = on_round
        self._synced_at: float | None = None
        self._failing = False
        self._refused: dict[str, str] = {}

    def run_once(self) -> ScheduleRound:
        result = self.store.run(self._round)
        for name, ids in result.dispatched.items():
            shown = ", ".join(f"#{i}" for i in ids[:10]) + (", ..." if len(ids) > 10 else "")
            log.info("Schedule %s: dispatched %d job(s) (%s)", name, len(ids), shown)
        for name, count in result.skipped.items():
            log.info("Schedule %s: skipped %d missed slot(s) (catch_up)", name, count)
        for name, reason in result.refused.items():
            if self._refused.get(name) != reason:  # once per reason, not every second
                log.error("Schedule %s: the database refused its job: %s", name, reason)
        if result.took_lease:
            self._refused = result.refused
        return result

    def _round(self, store: Store) -> ScheduleRound:
        if not store.acquire_lease(LEASE, self.worker_id, self.lease_ttl):
            self._synced_at = None  # sync again when this worker takes the lease
            return ScheduleRound(took_lease=False)
        self.sync(store)
        return run_round(store, self.schedules)

    def sync(self, store: Store) -> None:
        """Write this worker's definitions to the schedules table (the caller holds the lease),
        when it took the lease and every minute. A worker without schedules runs no rounds: the
        maintainer calls this after each of its own, so removed schedules still become stale."""
        now = time.monotonic()
        if self._synced_at is None or now - self._synced_at > SYNC_EVERY:
            store.sync_schedules(self.schedules)
            self._synced_at = now

    def delay(self, now: datetime | None = None) -> float:
        """Seconds until the next round: the next slot (just after it), at most one tick."""
        if not self.schedules:
            return TICK
        now = now or datetime.now(UTC)
        soonest = min(s.next_slot(now) for s in self.schedules)
        return max(0.01, min(TICK, (soonest - now).total_seconds() + 0.01))

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.run_once)
            except DatabaseUnavailableError as exc:
                if not self._failing:
                    log.warning("Scheduling failed: %s", first_line(exc))
                    self._failing = True
            else:
                self._failing = False
                self._on_round()
            await asyncio.sleep(self.delay())


def read_schedules_file(path: Path) -> list[Schedule]:
    """The schedules of a YAML file: a list of schedules (or `schedules:` holding one), each with
    the fields of `periodic()`. ScheduleError says what is wrong, with the file's name."""
    where = f"schedules file {str(path)[:200]!r}"
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ScheduleError(f"cannot read {where}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ScheduleError(f"{where} is larger than {MAX_FILE_BYTES} bytes")
    try:
        loaded: Any = yaml.safe_load(data)
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        problem = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ScheduleError(f"{where} is not YAML: {problem[:200]}") from None
    if isinstance(loaded, dict) and set(loaded) == {"schedules"}:
        loaded = loaded["schedules"]
    if loaded is None:
        return []
    if not isinstance(loaded, list):
        raise ScheduleError(f"{where} must hold a list of schedules (or `schedules:` with one)")
    found: dict[str, Schedule] = {}
    for index, entry in enumerate(loaded):
        if not isinstance(entry, dict) or not all(isinstance(key, str) for key in entry):
            raise ScheduleError(f"{where}: entry {index} must be a mapping of periodic() fields")
        try:
            schedule = Schedule.of(**entry)
        except ScheduleError as exc:
            raise ScheduleError(f"{where}: entry {index}: {exc}") from None
        if schedule.name in found:
            raise ScheduleError(f"{where}: entry {index}: schedule {schedule.name!r} appears twice")
        found[schedule.name] = schedule
    return list(found.values())
