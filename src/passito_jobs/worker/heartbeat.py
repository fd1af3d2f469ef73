"""The heartbeat: every PASSITO_HEARTBEAT_INTERVAL, mark the running attempts alive (with their
latest progress) on a connection of its own; a job the database says this worker no longer
holds is stopped: as CANCELLED when it was cancelled, else as LOST (rescued after a long pause
and held by another worker now). `beat_now()` asks for a round at once: the listener calls it
when one of this worker's jobs is announced cancelled, so the attempt stops within a round
trip; the notification itself is never trusted, the round asks the database.

River's shape: a config validated when it is made, `run_once() -> HeartbeatResult`, a thin
loop; it logs only when it loses or regains the database, or a progress value is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from passito_jobs.queue.asyncstore import AsyncStore, Held
from passito_jobs.queue.connection import AsyncConnectionHandle
from passito_jobs.queue.errors import DatabaseUnavailableError, first_line
from passito_jobs.settings import FieldError
from passito_jobs.worker.attempt import Attempts

log = logging.getLogger("passito_jobs.worker")


@dataclass(frozen=True)
class HeartbeatConfig:
    interval: float = 10.0

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise FieldError("interval", f"{{interval}} must be positive, got {self.interval!r}")


@dataclass
class HeartbeatResult:
    beaten: int = 0  # jobs marked alive
    lost: set[int] = field(default_factory=set)  # jobs this worker no longer holds
    cancelled: set[int] = field(default_factory=set)  # those of them that were cancelled


class Heartbeat:
    def __init__(
        self,
        config: HeartbeatConfig,
        *,
        handle: AsyncConnectionHandle,
        worker_id: str,
        attempts: Attempts,
        job_types: Sequence[str] = (),
        queues: Sequence[str] = (),
        on_round: Callable[[], None] = lambda: None,
    ) -> None:
        self.config = config
        self.job_types = list(job_types)
        self.queues = list(queues)  # empty: every queue
        self.handle = handle
        self.worker_id = worker_id
        self.attempts = attempts
        self._on_round = on_round
        self._failing = False
        self._register_refused = False  # the last registration was refused (warned once)
        self._now = asyncio.Event()  # beat_now() was called

    async def run_once(self) -> HeartbeatResult:
        held = self.attempts.held()
        if not held:
            return HeartbeatResult()
        store = AsyncStore(await self.handle.connection(), self.worker_id)
        still = await self._beat(store, held)
        lost = {job_id for job_id, _, _ in held if job_id not in still}
        cancelled = await store.cancelled_among(sorted(lost)) if lost else set()
        self.attempts.lost(lost, time.monotonic(), cancelled)
        return HeartbeatResult(beaten=len(held) - len(lost), lost=lost, cancelled=cancelled)

    def beat_now(self) -> None:
        """Run the next round at once rather than at the interval (from the event loop's thread)."""
        self._now.set()

    async def _pause(self) -> None:
        """Until the interval passed or beat_now() was called."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.interval):
                await self._now.wait()
        self._now.clear()

    async def _beat(self, store: AsyncStore, held: list[Held]) -> set[int]:
        """One heartbeat. Progress is checked when it is set, so the database should take it;
        if it refuses anyway, the jobs are still heart-beaten, without this round's progress."""
        try:
            return await store.heartbeat_json(held)
        except Exception as exc:
            if isinstance(exc, DatabaseUnavailableError) or all(p is None for _, _, p in held):
                raise
            log.warning(
                "The database refused the progress of jobs %s (%s); heart-beating them without it",
                ", ".join(f"#{i}" for i, _, p in held if p is not None),
                first_line(exc),
            )
            return await store.heartbeat_json([(i, a, None) for i, a, _ in held])

    async def register(self) -> None:
        """Tell the job-type registry which types this worker runs, on which queues (each
        round: a worker is "live" for a type while its row is recent)."""
        if self.job_types:
            store = AsyncStore(await self.handle.connection(), self.worker_id)
            await store.register_job_types(self.job_types, self.queues)

    async def _register_or_warn(self) -> None:
        """`register`, except that a registration the database refuses (a statement error, not
        a lost connection) is logged once and the round goes on: the heartbeats of running jobs
        matter more, a job without them is rescued and runs twice."""
        try:
            await self.register()
        except DatabaseUnavailableError:
            raise
        except Exception as exc:
            if not self._register_refused:
                log.warning("The job types were not registered (heart-beating anyway): %s", first_line(exc))
            self._register_refused = True
        else:
            self._register_refused = False

    async def run(self) -> None:
        try:
            first = True
            while True:
                if not first:
                    await self._pause()
                first = False
                try:
                    await self._register_or_warn()
                    await self.run_once()
                except DatabaseUnavailableError as exc:
                    await self.handle.drop()
                    if not self._failing:
                        log.warning("Heartbeat failed: %s", first_line(exc))
                        self._failing = True
                    continue
                if self._failing:
                    log.info("Heartbeats reach the database again")
                    self._failing = False
                self._on_round()
        finally:
            await self.handle.close()
