"""The claim loop: finished attempts and the next claim travel in one pipelined round trip.

Each round sends the outcomes buffered since the last one with a claim for as many jobs as
there are free slots (at most PASSITO_BATCH_SIZE), starts the jobs claimed, then waits for
"a job finished", "a notification arrived" (the listener wakes it) or the poll interval (or the
moment the next delayed job is due). After a failed round trip it tells the two kinds of errors
apart: a lost connection reconnects and sends the same outcomes again; a statement the database
refused has the outcomes recorded one by one (outcomes.py), so the one refused fails its own
job. On stop it claims nothing more, waits up to PASSITO_SHUTDOWN_TIMEOUT for the running
attempts, gives the rest back, and returns.

Handoff (migration 0014): while the listener holds its lock, a claim that comes back short
leaves the free slots in waiting_workers, and a dispatch may then hand this worker a job on its
own channel. `receive_handoff` starts it in a free slot, or gives it back in the next round
when there is none; each claim also returns the handed jobs the worker has not seen (a
notification lost with the listener's connection), and every handed attempt starts once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from passito_jobs.queue.asyncstore import AsyncStore, handed_job
from passito_jobs.queue.connection import AsyncConnectionHandle
from passito_jobs.queue.errors import DatabaseUnavailableError, first_line
from passito_jobs.queue.models import ClaimedJob
from passito_jobs.settings import format_duration
from passito_jobs.worker.attempt import Attempts
from passito_jobs.worker.metrics import WorkerMetrics
from passito_jobs.worker.outcomes import Outcomes, settle_one_by_one
from passito_jobs.worker.settings import WorkerSettings

log = logging.getLogger("passito_jobs.worker")

SEEN_HANDED = 4096  # handed attempts remembered, so that one arriving twice starts once


class ClaimLoop:
    """One worker's claim loop; `run()` returns once it stopped and gave back what it held."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        worker_id: str,
        handle: AsyncConnectionHandle,
        attempts: Attempts,
        metrics: WorkerMetrics,
        on_round: Callable[[], None] | None = None,
        handoff: Callable[[], tuple[str, int] | None] | None = None,
    ) -> None:
        """`handoff()`: this worker's channel for handed jobs and the key of the lock its
        listener holds now, or None (then a claim leaves no free slots to fill); None: the worker
        never takes handed jobs."""
        self.settings = settings
        self.worker_id = worker_id
        self.handle = handle
        self.attempts = attempts
        self.metrics = metrics
        self.queues: list[str] | None = list(settings.queues) or None
        self.wake = asyncio.Event()
        self.stopping = False
        self.stop_deadline = 0.0
        self.reconnecting = False
        self.db_ok_at = 0.0  # the last time the database answered
        self.claimed_at = 0.0  # the last successful round trip
        self._on_round = on_round
        self._store: AsyncStore | None = None
        self._next_run_at: float | None = None
        self._handoff = handoff
        self._seen_handed: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._give_back: list[tuple[int, int]] = []  # handed jobs with no free slot
        self._waiting_stopped = handoff is None

    async def open(self) -> None:
        self._store = AsyncStore(await self.handle.connection(), self.worker_id)
        self.db_ok_at = self.claimed_at = time.monotonic()

    def stop(self) -> None:
        """Claim nothing more; running attempts get PASSITO_SHUTDOWN_TIMEOUT to finish."""
        if self.stopping:
            return
        self.stopping = True
        self.stop_deadline = time.monotonic() + self.settings.shutdown_timeout
        log.info(
            "Stopping: no new jobs; waiting up to %s for %d in-flight job(s)",
            format_duration(self.settings.shutdown_timeout),
            len(self.attempts),
        )
        self.wake.set()

    def receive_handoff(self, message: str) -> None:
        """A message on this worker's handoff channel (the listener passes it on)."""
        job = handed_job(message)
        if isinstance(job, ClaimedJob):
            self._take_handed(job)
        elif job is not None:
            self.wake.set()  # too long to send: the next claim returns it

    def _take_handed(self, job: ClaimedJob) -> None:
        """Start a handed job in a free slot, once; without one, give it back next round."""
        key = (job.id, job.attempt)
        if key in self._seen_handed or job.id in self.attempts.running:
            return
        self._seen_handed[key] = None
        if len(self._seen_handed) > SEEN_HANDED:
            self._seen_handed.popitem(last=False)
        if self.stopping or len(self.attempts) >= self.settings.concurrency:
            self.metrics.handed_jobs.labels("returned").inc()
            self._give_back.append(key)
            self.wake.set()
            return
        self.metrics.handed_jobs.labels("started").inc()
        self.attempts.start(job)

    async def run(self) -> None:
        wake, attempts = self.wake, self.attempts
        batch_size, concurrency = self.settings.batch_size, self.settings.concurrency
        while True:
            wake.clear()
            if self.stopping and not self._waiting_stopped:
                await self._stop_waiting()
            if self.stopping and attempts.running and time.monotonic() >= self.stop_deadline:
                attempts.release_all()
            want = 0 if self.stopping else min(batch_size, concurrency - len(attempts))
            outcomes, give_back = attempts.outcomes, self._give_back
            if outcomes or give_back or want > 0:
                attempts.outcomes, self._give_back = Outcomes(), []
                try:
                    jobs = await self._round_trip(outcomes, want, give_back)
                except Exception as exc:
                    attempts.outcomes.restore(outcomes)
                    self._give_back[:0] = give_back
                    if not await self._recover(exc):
                        return  # stopping, and the database is gone
                    continue
                if jobs:
                    self.metrics.claim_batch.observe(len(jobs))
                    for job in jobs:
                        if job.handed:
                            self._take_handed(job)
                        elif len(attempts) < concurrency:
                            attempts.start(job)
                        else:
                            # A job handed to this worker started while the claim was on its
                            # way (the claim found its waiting row busy with that dispatch).
                            self._give_back.append((job.id, job.attempt))
                            wake.set()
                if want and len(jobs) == want:
                    continue  # a full batch: more may be ready
                if want and not self.stopping:
                    if jobs:
                        # Let the jobs just started reach their handlers before the lookup
                        # below takes its round trip: an idle worker's pickup is this path.
                        await asyncio.sleep(0)
                    # Short of a full batch: the queue ran dry, or a rate paces it; either
                    # way wake when the next job is due, not a poll later.
                    await self._schedule_next_poll(paced_only=bool(jobs))
            if self.stopping and not attempts.running and not attempts.outcomes and not self._give_back:
                if not self._waiting_stopped:
                    # A claim on its way when stop() came may have left a waiting row again.
                    await self._stop_waiting()
                await self._release()
                return
            await self._sleep(self._wait_timeout(want))

    async def _round_trip(
        self, outcomes: Outcomes, want: int, give_back: list[tuple[int, int]]
    ) -> list[ClaimedJob]:
        assert self._store is not None
        handoff = self._handoff() if self._handoff is not None else None
        jobs = await self._store.settle_and_claim(
            outcomes.completed,
            outcomes.failed,
            self.queues,
            want,
            snoozed=outcomes.snoozed,
            released=give_back,
            known=list(self.attempts.running),
            handoff=handoff,
        )
        self.db_ok_at = self.claimed_at = time.monotonic()
        if self._on_round is not None:
            self._on_round()
        return jobs

    async def _stop_waiting(self) -> None:
        """Stopping: dispatches hand this worker nothing more, and the jobs handed to it that
        it has not started go back to pending now, not after PASSITO_STUCK_AFTER. Also once a
        round trip that was on its way when stop() came has returned: its claim may have left
        a waiting row again."""
        assert self._store is not None
        self._waiting_stopped = True
        try:
            count = await self._store.stop_waiting(list(self.attempts.running))
        except Exception as exc:
            log.warning(
                "Could not stop taking handed jobs (%s); a job handed meanwhile is rescued after "
                "PASSITO_STUCK_AFTER",
                first_line(exc),
            )
            return
        if count:
            log.info("Returned %d handed job(s) to pending", count)

    async def _recover(self, exc: Exception) -> bool:
        """After a failed round trip: reconnect when the connection is lost; when the database
        refused a statement, record the buffered outcomes one by one so the outcome it refuses
        fails its own job. Re-raises a refused claim (the task supervisor restarts the loop).
        False when the loop should end now (stopping, past the deadline, no database)."""
        assert self._store is not None
        while True:
            if isinstance(exc, DatabaseUnavailableError):
                if self.stopping and time.monotonic() >= self.stop_deadline:
                    self._abandon_at_shutdown(exc)
                    return False
                await self._reconnect(exc)
                return True
            self.metrics.database_errors.inc()
            if not self.attempts.outcomes:
                raise exc
            log.warning(
                "The database refused a round trip (%s); recording each of %d outcome(s) on its own",
                first_line(exc),
                len(self.attempts.outcomes),
            )
            pending, self.attempts.outcomes = self.attempts.outcomes, Outcomes()
            unsent, lost = await settle_one_by_one(self._store, pending)
            self.attempts.outcomes.restore(unsent)
            if lost is None:
                self.db_ok_at = time.monotonic()
                return True
            exc = lost

    async def _reconnect(self, exc: BaseException) -> None:
        self.metrics.database_errors.inc()
        self.db_ok_at = 0.0
        self.reconnecting = True
        log.warning("Database error, reconnecting: %s", first_line(exc))
        try:
            conn = await self.handle.reconnect(
                give_up=lambda: self.stopping and time.monotonic() >= self.stop_deadline
            )
            if conn is not None:
                self._store = AsyncStore(conn, self.worker_id)
                self.db_ok_at = self.claimed_at = time.monotonic()
                log.info("Database connection restored")
        finally:
            self.reconnecting = False

    def _wait_timeout(self, want: int) -> float | None:
        if self.stopping:
            if not self.attempts.running:
                return 0.0
            # Past the deadline everything was given up: finishing tasks and the watchdog wake us.
            return max(self.stop_deadline - time.monotonic(), 0.1)
        if want == 0:
            return None  # full: a finishing job wakes us
        timeout = self.settings.poll_interval
        if self._next_run_at is not None:
            timeout = min(timeout, max(0.0, self._next_run_at - time.time()))
        return timeout

    async def _sleep(self, timeout: float | None) -> None:
        if self.wake.is_set():
            return
        if timeout is None:
            await self.wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self.wake.wait()

    async def _schedule_next_poll(self, *, paced_only: bool = False) -> None:
        """Remember when the next delayed job is due, or a rate-limited queue may start its next
        job (docs/flow-control.md), so the loop wakes for it, not a poll later. `paced_only`
        (after a partial batch) asks only the second, a look at the small queues table.
        Whatever goes wrong here (a run_at of 'infinity', a lost connection: the next round
        trip notices), the loop falls back to the poll interval."""
        assert self._store is not None
        self._next_run_at = None
        try:
            if paced_only:
                due = await self._store.next_paced_at(self.queues)
            else:
                due = await self._store.next_run_at(self.queues)
        except Exception as exc:
            log.warning("Could not read when the next delayed job is due: %s", first_line(exc))
            return
        if due is not None and math.isfinite(due):
            self._next_run_at = due

    def _abandon_at_shutdown(self, exc: BaseException) -> None:
        """Shutting down, past the timeout, and the database does not answer: exit anyway.

        What could not be recorded is not lost: the jobs stay `processing` until their heartbeat
        is older than PASSITO_STUCK_AFTER, then the rescue runs them again.
        """
        self.attempts.release_all()
        unrecorded = len(self.attempts.outcomes) + len(self.attempts.released)
        log.error(
            "Database unreachable at shutdown (%s): %d job(s) not recorded or returned; they are "
            "rescued after PASSITO_STUCK_AFTER",
            first_line(exc),
            unrecorded,
        )

    async def _release(self) -> None:
        held = self.attempts.released
        if not held:
            return
        assert self._store is not None
        try:
            count = await self._store.release(held)
            log.info("Returned %d job(s) to pending: %s", count, ", ".join(f"#{i}" for i, _ in held))
        except Exception as exc:
            log.error(
                "Could not return jobs %s to pending (%s); they will be rescued after PASSITO_STUCK_AFTER",
                [i for i, _ in held],
                first_line(exc),
            )
