"""The maintainer: every PASSITO_MAINTENANCE_INTERVAL (jittered, so workers do not race for the
lease together), run the queue's maintenance (rescue, prune) if this worker holds the lease
(and, in a worker without schedules, mark the schedules table's rows stale: scheduler.py).

River's shape: the config (queue.maintenance.MaintenanceConfig) is validated when it is made,
`run_once()` returns what changed (Maintenance logs a line only when rows changed), and the loop
is thin. It runs in a thread on a synchronous connection of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from passito_jobs.queue.errors import DatabaseUnavailableError, first_line
from passito_jobs.queue.maintenance import Maintenance, MaintenanceConfig, MaintenanceResult
from passito_jobs.queue.store import Store, StoreHandle

log = logging.getLogger("passito_jobs.worker")


class Maintainer:
    def __init__(
        self,
        config: MaintenanceConfig,
        *,
        store: StoreHandle,
        worker_id: str,
        on_round: Callable[[], None] = lambda: None,
        on_lease: Callable[[Store], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.worker_id = worker_id
        self._on_round = on_round
        self.on_lease = on_lease  # more work for the lease holder (the scheduler's table sync)
        self._failing = False

    def run_once(self) -> MaintenanceResult:
        return self.store.run(self._round)

    def _round(self, store: Store) -> MaintenanceResult:
        result = Maintenance(store, self.worker_id, self.config).run_once()
        if result.took_lease and self.on_lease is not None:
            self.on_lease(store)
        return result

    async def run(self) -> None:
        while True:
            # Spread workers' attempts so they do not all race for the lease at once.
            await asyncio.sleep(self.config.interval * (0.75 + random.random() / 2))  # noqa: S311
            try:
                await asyncio.to_thread(self.run_once)
            except DatabaseUnavailableError as exc:
                if not self._failing:
                    log.warning("Maintenance failed: %s", first_line(exc))
                    self._failing = True
                continue
            self._failing = False
            self._on_round()

    def release(self) -> None:
        """Give the lease up (clean shutdown), so another worker takes over at once."""
        with contextlib.suppress(Exception):
            self.store.run(lambda store: Maintenance(store, self.worker_id, self.config).release())
        self.store.close()
