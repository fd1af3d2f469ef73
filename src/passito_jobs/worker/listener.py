"""The listener: LISTEN on a connection of its own, and wake the claim loop when jobs of its
queues become ready (a dispatch notifies `passito_jobs` with the queue's name, on commit), and
pass on the processing jobs that were cancelled (`passito_jobs_cancel` with the job's id, on
commit: migration 0009), so the worker stops them at once rather than at its next heartbeat,
and the jobs a dispatch handed this worker on its own channel (handoff, migration 0014), so
it starts them without a claim. `handing()` says whether dispatches may hand it jobs now, and
under which lock key: its connection holds that lock (a fresh random key at each connection,
tried again when another session holds it).

River's shape: a config validated when it is made, `run_once()` (connect, LISTEN, pass the
notifications on until the connection breaks), and a thin loop that reconnects with growing
delays. It logs only when it loses or regains its connection; polling (PASSITO_POLL_INTERVAL)
is the guarantee meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
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


CANCEL_CHANNEL = "passito_jobs_cancel"


@dataclass
class ListenResult:
    notifications: int = 0  # notifications received for this worker's queues
    cancellations: int = 0  # processing jobs announced cancelled (anyone's)
    handoffs: int = 0  # messages on this worker's handoff channel


@dataclass(frozen=True)
class Handoff:
    """The worker's own channel for handed jobs (migration 0014); `receive` gets each message."""

    channel: str
    receive: Callable[[str], None]


LOCK_TRIES = 3  # fresh keys tried while another session holds one (a dispatch checking it)


class Listener:
    def __init__(
        self,
        config: ListenerConfig,
        *,
        handle: AsyncConnectionHandle,
        worker_id: str,
        wake: Callable[[], None],
        on_listening: Callable[[], None],
        on_cancel: Callable[[int], None] | None = None,
        handoff: Handoff | None = None,
    ) -> None:
        """`on_cancel(job_id)`: a processing job was cancelled (None: not listened for).
        `handoff`: take handed jobs on this channel (None: never)."""
        self.config = config
        self.handle = handle
        self.worker_id = worker_id
        self._wake = wake
        self._on_listening = on_listening
        self._on_cancel = on_cancel
        self.handoff = handoff
        self.lock_key: int | None = None  # the lock this connection holds: dispatches may hand jobs
        self.failures = 0  # connections lost in a row

    async def run_once(self) -> ListenResult:
        """Connect, LISTEN, and wake the claim loop per notification for one of its queues,
        until the connection breaks (DatabaseUnavailableError)."""
        store = AsyncStore(await self.handle.connection(), self.worker_id)
        await store.listen(cancellations=self._on_cancel is not None)
        handoff = self.handoff
        if handoff is not None and self.lock_key is None:
            for _ in range(LOCK_TRIES):
                key = secrets.randbelow(2**31)
                if await store.listen_handoff(handoff.channel, key):
                    self.lock_key = key
                    break
        if self.failures:
            log.info("The listener is connected again")
            self.failures = 0
        self._on_listening()
        self._wake()  # notifications may have been missed while disconnected
        result = ListenResult()
        queues = self.config.queues
        own = handoff.channel if handoff is not None and self.lock_key is not None else None
        async for notify in store.notifications():
            if notify.channel == own:
                assert handoff is not None
                result.handoffs += 1
                handoff.receive(notify.payload)
            elif notify.channel == CANCEL_CHANNEL:
                job_id = _job_id(notify.payload)
                if job_id is not None and self._on_cancel is not None:
                    result.cancellations += 1
                    self._on_cancel(job_id)
            elif not queues or notify.payload in queues:
                result.notifications += 1
                self._wake()
        return result

    def handing(self) -> tuple[str, int] | None:
        """(channel, lock key) while dispatches may hand this worker jobs; None otherwise."""
        if self.handoff is None or self.lock_key is None:
            return None
        return self.handoff.channel, self.lock_key

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.run_once()
                except DatabaseUnavailableError as exc:
                    # The lock went with the connection: dispatches hand this worker nothing
                    # now, and its next claim takes back what they did (migration 0014).
                    self.lock_key = None
                    self._wake()
                    await self.handle.drop()
                    if self.failures == 0:
                        log.warning(
                            "The listener lost its connection (polling meanwhile): %s", first_line(exc)
                        )
                    delay = reconnect_delay(self.failures)
                    self.failures += 1
                    await asyncio.sleep(delay)
        finally:
            self.lock_key = None
            await self.handle.close()


def _job_id(payload: str) -> int | None:
    """The job id a cancellation names; None for anything else (anyone may NOTIFY)."""
    if not payload.isascii() or not payload.isdigit() or len(payload) > 19:
        return None
    return int(payload)
