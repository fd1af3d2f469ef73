"""The listener: LISTEN on a connection of its own, and wake the claim loop when jobs of its
queues become ready (a dispatch notifies `passito_jobs` with the queue's name, on commit).

River's shape: a config validated when it is made, `run_once()` (connect, LISTEN, pass the
notifications on until the connection breaks), and a thin loop that reconnects with growing
delays. It logs only when it loses or regains its connection; polling (PASSITO_POLL_INTERVAL)
is the guarantee meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from passito_jobs.queue.asyncstore import AsyncStore
from passito_jobs.queue.connection import AsyncConnectionHandle, reconnect_delay
from passito_jobs.queue.errors import DatabaseUnavailableError, first_line
from passito_jobs.settings import FieldError

log = logging.getLogger("passito_jobs.worker")


@dataclass(frozen=True)
class ListenerConfig:
    queues: frozenset[str] = frozenset()  # empty: every queue

    def __post_init__(self) -> None:
        if not all(isinstance(queue, str) and queue for queue in self.queues):
            raise FieldError("queues", "{queues} must hold queue names")


@dataclass
class ListenResult:
    notifications: int = 0  # notifications received for this worker's queues


class Listener:
    def __init__(
        self,
        config: ListenerConfig,
        *,
        handle: AsyncConnectionHandle,
        worker_id: str,
        wake: Callable[[], None],
        on_listening: Callable[[], None],
    ) -> None:
        self.config = config
        self.handle = handle
        self.worker_id = worker_id
        self._wake = wake
        self._on_listening = on_listening
        self.failures = 0  # connections lost in a row

    async def run_once(self) -> ListenResult:
        """Connect, LISTEN, and wake the claim loop per notification for one of its queues,
        until the connection breaks (DatabaseUnavailableError)."""
        store = AsyncStore(await self.handle.connection(), self.worker_id)
        await store.listen()
        if self.failures:
            log.info("The listener is connected again")
            self.failures = 0
        self._on_listening()
        self._wake()  # notifications may have been missed while disconnected
        result = ListenResult()
        queues = self.config.queues
        async for notify in store.notifications():
            if not queues or notify.payload in queues:
                result.notifications += 1
                self._wake()
        return result

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.run_once()
                except DatabaseUnavailableError as exc:
                    await self.handle.drop()
                    if self.failures == 0:
                        log.warning(
                            "The listener lost its connection (polling meanwhile): %s", first_line(exc)
                        )
                    delay = reconnect_delay(self.failures)
                    self.failures += 1
                    await asyncio.sleep(delay)
        finally:
            await self.handle.close()
