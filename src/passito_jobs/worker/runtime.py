"""The worker: claims jobs in batches, runs their handlers, records the outcomes.

One asyncio loop with named tasks, each supervised (worker/supervision.py: an unexpected
exception is logged with its traceback and the task restarts with backoff):

- the claim loop: sends the finished attempts and the next claim in one pipelined round trip,
  then waits for "a job finished", "a notification arrived" or the poll interval;
- the listener: LISTEN on its own connection, wakes the claim loop when jobs become ready;
- the heartbeat: every PASSITO_HEARTBEAT_INTERVAL marks in-flight jobs alive (with their
  progress) and abandons jobs the database says this worker no longer holds;
- maintenance: rescue and pruning, done by whichever worker holds the lease;
- the watchdog: cancels attempts past their timeout, gives up on those that ignore it.

Concurrency is bounded by claiming only as many jobs as there are free slots. Sync handlers
run in a thread pool (or child processes: worker/isolation.py), async handlers on the loop.
Outcomes are per job: a value the database cannot store fails that job, and a round trip the
database refuses is replayed one outcome at a time so the one it refuses is found. On stop the
worker claims nothing more, lets in-flight jobs finish within PASSITO_SHUTDOWN_TIMEOUT and
returns the rest to pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import threading
import time
from collections.abc import Awaitable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from passito_jobs.config import Settings, format_duration
from passito_jobs.jobs.registry import JobContext, JobType, PermanentError, Registry
from passito_jobs.jobs.registry import registry as default_registry
from passito_jobs.queue.backoff import retry_delay
from passito_jobs.queue.maintenance import Maintenance, MaintenanceConfig
from passito_jobs.queue.models import ClaimedJob
from passito_jobs.queue.storable import UnstorableValueError, encode_json
from passito_jobs.queue.store import (
    AsyncStore,
    Store,
    StoreHandle,
    connect_async,
    is_connection_error,
    migrations,
)
from passito_jobs.worker.failures import (
    AttemptTimeoutError,
    OutcomeRefusedError,
    describe,
    first_line,
    format_error,
)
from passito_jobs.worker.isolation import ChildConfig, ProcessPool
from passito_jobs.worker.metrics import WorkerMetrics
from passito_jobs.worker.outcomes import Outcomes, settle_one_by_one
from passito_jobs.worker.supervision import Supervisor
from passito_jobs.worker.threads import JobThreads

__all__ = ["AttemptTimeoutError", "SchemaMissingError", "Worker", "format_error"]

log = logging.getLogger("passito_jobs.worker")

RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
CANCEL_GRACE = 1.0  # seconds a cancelled async handler gets before the worker gives up on it


class SchemaMissingError(RuntimeError):
    """The database has no (or an outdated) passito_jobs schema."""


@dataclass(slots=True)
class _Running:
    job: ClaimedJob
    ctx: JobContext
    job_type: JobType | None
    started: float
    deadline: float  # time.monotonic() after which the watchdog cancels the attempt
    task: asyncio.Task[None] | None = None
    future: Future[Any] | None = None  # a sync attempt's work in the thread pool
    lost: bool = False  # the database says another party owns the job now
    released: bool = False  # shutdown gave it back to the queue
    timed_out: bool = False  # the watchdog cancelled it
    in_thread: bool = False
    cancelled_at: float = 0.0  # when the worker cancelled it (timeout, lost, shutdown)
    abandoned: bool = False  # cancelled but still running: its slot is free, its outcome discarded


class Worker:
    """A worker process's job runtime. `await run()` returns after `stop()` completes."""

    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str,
        registry: Registry = default_registry,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.database_url = database_url
        self.registry = registry
        self.metrics = metrics or WorkerMetrics()
        self.id = f"{settings.worker_host}:{os.getpid()}"
        self.queues: list[str] | None = list(settings.queues) or None
        self._queue_set = frozenset(settings.queues)
        self._log_jobs = settings.log_jobs
        self._max_bytes = settings.max_payload_bytes
        self._running: dict[int, _Running] = {}
        self._outcomes = Outcomes()
        # Abandoned threads (timed-out sync handlers) keep theirs; the extra threads keep
        # `concurrency` of them free for new attempts until the bound stops the worker.
        self._executor = JobThreads(settings.concurrency + settings.max_abandoned_attempts)
        self._processes = (
            ProcessPool(
                settings.concurrency,
                ChildConfig(settings.job_modules, self.id, settings.log_level, settings.log_format),
            )
            if settings.sync_isolation == "process"
            else None
        )
        self._supervisor = Supervisor(on_restart=lambda task: self.metrics.task_restarts.labels(task).inc())
        self._stall_after = max(settings.stall_timeout, 3 * settings.poll_interval)
        self._stopping = False
        self._stop_deadline = 0.0
        self._db_ok_at = 0.0
        self._claimed_at = 0.0  # the claim loop's last successful round trip
        self._loop_ran_at = 0.0  # the watchdog's last tick: the event loop runs
        self._reconnecting = False
        self._next_run_at: float | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: AsyncStore | None = None
        self._sync = StoreHandle.to(database_url, timeout=settings.connect_timeout)  # maintenance
        self._abandoned_lock = threading.Lock()
        self._abandoned = 0  # abandoned attempts whose handler still runs
        self._fatal: str | None = None
        self._to_release: list[tuple[int, int]] = []
        self.metrics.concurrency.set(settings.concurrency)
        self.metrics.in_flight.set_function(lambda: len(self._running))

    # ------------------------------------------------------------ public

    @property
    def ready(self) -> bool:
        """Ready while the database answered recently (the claim loop talks to it at least
        every poll interval)."""
        window = max(3 * self.settings.poll_interval, 5.0) + 1.0
        return self._db_ok_at > 0 and time.monotonic() - self._db_ok_at < window

    def health_problem(self) -> str | None:
        """Why this worker should be restarted (`/healthz` answers 503), or None.

        Unhealthy: too many abandoned attempts still running; a task that keeps failing; an
        event loop that does not run; a claim loop without a round trip for PASSITO_STALL_TIMEOUT
        while it has free slots. A database that cannot be reached is not a reason: a new pod
        would not reach it either (`/readyz` reports it).
        """
        if self._fatal is not None:
            return self._fatal
        problem = self._supervisor.problem()
        if problem is not None:
            return problem
        if self._loop_ran_at <= 0:
            return None  # not started yet
        now = time.monotonic()
        if now - self._loop_ran_at > self._stall_after:
            return f"the event loop has not run for {now - self._loop_ran_at:.0f}s (a handler blocks it?)"
        free = not self._stopping and len(self._running) < self.settings.concurrency
        if free and not self._reconnecting and now - self._claimed_at > self._stall_after:
            return f"the claim loop made no round trip for {now - self._claimed_at:.0f}s with free slots"
        return None

    @property
    def abandoned(self) -> int:
        """Abandoned attempts whose handler still runs (threads cannot be stopped)."""
        return self._abandoned

    @property
    def exit_reason(self) -> str | None:
        """Set when the worker stopped itself because it cannot go on (exit non-zero)."""
        return self._fatal

    def stop(self) -> None:
        """Stop claiming; in-flight jobs get PASSITO_SHUTDOWN_TIMEOUT to finish. Thread-safe."""
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._begin_stop)
        else:
            self._begin_stop()

    def check_schema(self) -> None:
        """Fail with a clear message unless the schema is migrated (runs before `run`)."""
        version = self._sync.run(Store.schema_version)
        latest = migrations()[-1].version
        if version is None:
            raise SchemaMissingError("the passito_jobs schema is not installed: run `passito-jobs migrate`")
        if version < latest:
            raise SchemaMissingError(
                f"the passito_jobs schema is at migration {version}, this worker needs {latest}: "
                "run `passito-jobs migrate`"
            )

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._main = AsyncStore(
            await connect_async(self.database_url, timeout=self.settings.connect_timeout), self.id
        )
        if self._processes is not None:
            await asyncio.to_thread(self._processes.start)
        self._db_ok_at = self._claimed_at = self._loop_ran_at = time.monotonic()
        listening = self._loop.create_future()
        supervise = self._supervisor.run
        side = [
            asyncio.create_task(supervise("listener", lambda: self._listen(listening)), name="listener"),
            asyncio.create_task(supervise("heartbeat", self._heartbeat), name="heartbeat"),
            asyncio.create_task(supervise("maintenance", self._maintain), name="maintenance"),
            asyncio.create_task(supervise("watchdog", self._watchdog), name="watchdog"),
        ]
        # Claim only once LISTEN is in place: a job dispatched in between would otherwise
        # wait for the next poll.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.connect_timeout):
                await listening
        log.info(
            "Worker started: queues=%s concurrency=%d batch=%d",
            ",".join(self.queues or ["*"]),
            self.settings.concurrency,
            self.settings.batch_size,
            extra={"kv": {"worker": self.id}},
        )
        try:
            await supervise("claim loop", self._claim_loop, returns=True)
        finally:
            for task in side:
                task.cancel()
            for ended in await asyncio.gather(*side, return_exceptions=True):
                if isinstance(ended, BaseException) and not isinstance(ended, asyncio.CancelledError):
                    log.error("A worker task ended with an error: %s", describe(ended), exc_info=ended)
            await self._close()
        log.info("Worker stopped")

    # ------------------------------------------------------------ claim loop

    def _begin_stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._stop_deadline = time.monotonic() + self.settings.shutdown_timeout
        log.info(
            "Stopping: no new jobs; waiting up to %s for %d in-flight job(s)",
            format_duration(self.settings.shutdown_timeout),
            len(self._running),
        )
        if self._wake is not None:
            self._wake.set()

    async def _claim_loop(self) -> None:
        assert self._wake is not None
        wake = self._wake
        batch_size = self.settings.batch_size
        concurrency = self.settings.concurrency
        while True:
            wake.clear()
            if self._stopping and self._running and time.monotonic() >= self._stop_deadline:
                self._give_up_in_flight()
            want = 0 if self._stopping else min(batch_size, concurrency - len(self._running))
            outcomes = self._outcomes
            if outcomes or want > 0:
                self._outcomes = Outcomes()
                try:
                    jobs = await self._settle_and_claim(outcomes, want)
                except Exception as exc:
                    self._outcomes.restore(outcomes)
                    if not await self._recover(exc):
                        return  # stopping, and the database is gone
                    continue
                if jobs:
                    self.metrics.claim_batch.observe(len(jobs))
                    for job in jobs:
                        self._start(job)
                if want and len(jobs) == want:
                    continue  # a full batch: more may be ready
                if want and not jobs and not self._stopping:
                    await self._schedule_next_poll()
            if self._stopping and not self._running and not self._outcomes:
                await self._release_given_up()
                return
            await self._sleep(self._wait_timeout(want))

    async def _settle_and_claim(self, outcomes: Outcomes, want: int) -> list[ClaimedJob]:
        assert self._main is not None
        jobs = await self._main.settle_and_claim(outcomes.completed, outcomes.failed, self.queues, want)
        self._db_ok_at = self._claimed_at = time.monotonic()
        self._supervisor.ok("claim loop")
        return jobs

    async def _recover(self, exc: Exception) -> bool:
        """After a failed round trip: reconnect when the connection is lost; when the database
        refused a statement, record the buffered outcomes one by one so the outcome it refuses
        fails its own job. Re-raises a refused claim (the supervisor restarts the loop). False
        when the worker should exit now (stopping, past the deadline, no database)."""
        assert self._main is not None
        while True:
            if is_connection_error(exc, self._main.conn):
                if self._stopping and time.monotonic() >= self._stop_deadline:
                    self._abandon_at_shutdown(exc)
                    return False
                await self._reconnect(exc)
                return True
            self.metrics.database_errors.inc()
            if not self._outcomes:
                raise exc
            log.warning(
                "The database refused a round trip (%s); recording each of %d outcome(s) on its own",
                first_line(exc),
                len(self._outcomes),
            )
            pending, self._outcomes = self._outcomes, Outcomes()
            unsent, lost = await settle_one_by_one(self._main, pending)
            self._outcomes.restore(unsent)
            if lost is None:
                self._db_ok_at = time.monotonic()
                return True
            exc = lost

    def _wait_timeout(self, want: int) -> float | None:
        if self._stopping:
            if not self._running:
                return 0.0
            # Past the deadline everything was given up: finishing tasks and the watchdog wake us.
            return max(self._stop_deadline - time.monotonic(), 0.1)
        if want == 0:
            return None  # full: a finishing job wakes us
        timeout = self.settings.poll_interval
        if self._next_run_at is not None:
            timeout = min(timeout, max(0.0, self._next_run_at - time.time()))
        return timeout

    async def _sleep(self, timeout: float | None) -> None:
        assert self._wake is not None
        if self._wake.is_set():
            return
        if timeout is None:
            await self._wake.wait()
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _schedule_next_poll(self) -> None:
        """Remember when the next delayed job is due so the loop wakes for it, not a poll later.
        Whatever goes wrong here (a run_at of 'infinity', a lost connection: the next round
        trip notices), the loop falls back to the poll interval."""
        assert self._main is not None
        self._next_run_at = None
        try:
            due = await self._main.next_run_at(self.queues)
        except Exception as exc:
            log.warning("Could not read when the next delayed job is due: %s", first_line(exc))
            return
        if due is not None and math.isfinite(due):
            self._next_run_at = due

    async def _reconnect(self, exc: BaseException) -> None:
        self.metrics.database_errors.inc()
        self._db_ok_at = 0.0
        self._reconnecting = True
        log.warning("Database error, reconnecting: %s", first_line(exc))
        attempt = 0
        try:
            while not (self._stopping and time.monotonic() >= self._stop_deadline):
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter
                try:
                    conn = await connect_async(self.database_url, timeout=self.settings.connect_timeout)
                except Exception as again:
                    if not is_connection_error(again):
                        raise
                    log.warning("Still no database: %s", again)
                    continue
                assert self._main is not None
                with contextlib.suppress(Exception):
                    await self._main.conn.close()
                self._main = AsyncStore(conn, self.id)
                self._db_ok_at = self._claimed_at = time.monotonic()
                log.info("Database connection restored")
                return
        finally:
            self._reconnecting = False

    # ------------------------------------------------------------ running one job

    def _start(self, job: ClaimedJob) -> None:
        assert self._loop is not None
        ctx = JobContext(job.id, job.type, job.queue, job.payload, job.attempt, job.max_attempts, self.id)
        ctx.max_bytes = self._max_bytes
        job_type = self.registry.get(job.type)
        timeout = (job_type.timeout if job_type else None) or self.settings.job_timeout
        entry = _Running(job, ctx, job_type, time.perf_counter(), time.monotonic() + timeout)
        self._running[job.id] = entry
        self.metrics.picked_up(job.queue, job.waited_seconds)
        entry.task = self._loop.create_task(self._execute(entry))

    async def _execute(self, entry: _Running) -> None:
        job = entry.job
        if self._log_jobs:
            log.info(
                "Processing Job #%d (%s)",
                job.id,
                job.type,
                extra={"kv": {"attempt": f"{job.attempt}/{job.max_attempts}", "queue": job.queue}},
            )
        outcome = "lost"
        result: str | None = None
        error: BaseException | None = None
        cancelled = False
        try:
            try:
                value = await self._begin(entry)
                # A child process sends its result already encoded (and checked).
                result = value if entry.in_thread and self._processes is not None else self._encode(value)
            except asyncio.CancelledError:
                if not entry.cancelled_at:
                    raise  # not the worker's doing (the loop is shutting down)
                cancelled = True
            except OutcomeRefusedError as exc:
                # Made here, not raised: the worker's own traceback would say nothing.
                error = PermanentError(str(exc))
            except BaseException as exc:  # a handler's SystemExit fails its job, not the worker
                error = exc
            if not entry.abandoned:
                outcome = self._conclude(entry, result, error, cancelled=cancelled)
        finally:
            if not entry.abandoned:
                self._finish(entry, outcome)

    def _conclude(
        self, entry: _Running, result: str | None, error: BaseException | None, *, cancelled: bool
    ) -> str:
        """Buffer the attempt's outcome; return it for the metrics."""
        job = entry.job
        if entry.timed_out:  # even if the handler swallowed the cancellation and returned
            return self._record_failure(entry, self._timeout_error(entry))
        if entry.lost:
            log.warning(
                "Abandoned Job #%d (%s): it was cancelled or rescued by another worker",
                job.id,
                job.type,
                extra={"tag": "FAIL"},
            )
            return "lost"
        if cancelled:
            return "lost"  # shutdown gave it back to the queue
        if error is not None:
            return self._record_failure(entry, error)
        self._outcomes.completed.append((job.id, job.attempt, result))
        if self._log_jobs:
            log.info(
                "Completed Job #%d (%s) in %s",
                job.id,
                job.type,
                _ms(time.perf_counter() - entry.started),
                extra={"tag": "DONE"},
            )
        return "completed"

    def _begin(self, entry: _Running) -> Awaitable[Any]:
        """Start the handler: a coroutine for an async one, a future for a sync one (a thread,
        or a thread waiting on a child process). Not a coroutine itself: one fewer per job."""
        job, job_type = entry.job, entry.job_type
        if job.unreadable is not None:
            raise OutcomeRefusedError(job.unreadable)
        if job_type is None:
            raise LookupError(
                f"no handler for job type {job.type!r} on worker {self.id} "
                f"(registered: {', '.join(self.registry.names()) or 'none'}); "
                "load its module with --import or PASSITO_JOB_MODULES"
            )
        if job_type.is_async:
            return job_type.handler(entry.ctx)
        entry.in_thread = True
        if self._processes is not None:
            entry.future = self._executor.submit(
                self._processes.run, (job.id, job.attempt), job_type, entry.ctx
            )
        else:
            entry.future = self._executor.submit(job_type.handler, entry.ctx)
        return asyncio.wrap_future(entry.future)

    def _encode(self, value: Any) -> str | None:
        """A result as JSON text the database takes; OutcomeRefusedError says why not."""
        if value is None:
            return None
        try:
            return encode_json(value, what="result", max_bytes=self._max_bytes)
        except UnstorableValueError as exc:
            raise OutcomeRefusedError(str(exc)) from None

    def _finish(self, entry: _Running, outcome: str) -> None:
        if self._running.get(entry.job.id) is entry:  # a job rescued and claimed again is a new entry
            del self._running[entry.job.id]
        self.metrics.finished(entry.job.type, entry.job.queue, outcome, time.perf_counter() - entry.started)
        assert self._wake is not None
        self._wake.set()

    def _timeout_error(self, entry: _Running) -> AttemptTimeoutError:
        if entry.in_thread and self._processes is None:
            self._abandon_thread(entry)  # the thread runs on; its late result is discarded
        timeout = (entry.job_type.timeout if entry.job_type else None) or self.settings.job_timeout
        return AttemptTimeoutError(
            f"attempt exceeded the {format_duration(timeout)} timeout of job type {entry.job.type}"
        )

    def _record_failure(self, entry: _Running, exc: BaseException) -> str:
        job = entry.job
        permanent = isinstance(exc, PermanentError)
        retry_in: float | None = None
        if not permanent and job.attempt < job.max_attempts:
            retry_in = retry_delay(
                job.attempt,
                base=self.settings.retry_backoff_base,
                cap=self.settings.retry_backoff_cap,
            )
        self._outcomes.failed.append((job.id, job.attempt, format_error(exc), retry_in))
        what = describe(exc)
        elapsed = _ms(time.perf_counter() - entry.started)
        if retry_in is not None:
            log.warning(
                "Job #%d (%s) failed on attempt %d/%d after %s: %s; retrying in %s",
                job.id,
                job.type,
                job.attempt,
                job.max_attempts,
                elapsed,
                what,
                f"{retry_in:.1f}s",
                extra={"tag": "FAIL"},
            )
            return "retried"
        reason = "permanent error" if permanent else f"attempt {job.attempt}/{job.max_attempts}"
        log.error(
            "Failed Job #%d (%s) after %s (%s): %s",
            job.id,
            job.type,
            elapsed,
            reason,
            what,
            extra={"tag": "FAIL"},
        )
        return "failed"

    # ------------------------------------------------------------ giving up on attempts

    def _cancel(self, entry: _Running, now: float) -> None:
        """Stop an attempt: cancel its task and kill its child process, if it has one."""
        entry.cancelled_at = now
        if entry.in_thread and self._processes is not None:
            self._processes.kill((entry.job.id, entry.job.attempt))
        if entry.task is not None:
            entry.task.cancel()

    async def _watchdog(self) -> None:
        """Cancel attempts that outlive their job type's timeout; give up on cancelled ones
        that keep running (an async handler that ignores cancellation).

        One periodic sweep instead of a timer per job keeps the hot path cheap; timeouts are
        enforced within a tenth of the shortest one (and within a second). Each tick also
        shows that the event loop runs (health_problem).
        """
        shortest = min([t.timeout for t in self.registry if t.timeout] + [self.settings.job_timeout])
        tick = min(1.0, max(0.02, shortest / 10))
        while True:
            await asyncio.sleep(tick)
            now = self._loop_ran_at = time.monotonic()
            for entry in list(self._running.values()):
                if entry.cancelled_at:
                    if now - entry.cancelled_at >= CANCEL_GRACE and not entry.abandoned:
                        self._abandon_task(entry)
                elif now >= entry.deadline and not (entry.lost or entry.released):
                    entry.timed_out = True
                    self._cancel(entry, now)
            self._supervisor.ok("watchdog")

    def _abandon_task(self, entry: _Running) -> None:
        """A cancelled handler runs on: free its slot, record its outcome, count it."""
        entry.abandoned = True
        outcome = "lost"
        if entry.timed_out:
            outcome = self._record_failure(entry, self._timeout_error(entry))
        log.warning(
            "Job #%d (%s) ignores cancellation: its handler runs on, and whatever it returns is discarded",
            entry.job.id,
            entry.job.type,
        )
        self._count_abandoned(entry)
        if entry.task is not None:
            entry.task.add_done_callback(lambda _: self._abandoned_done())
        self._finish(entry, outcome)

    def _abandon_thread(self, entry: _Running) -> None:
        future = entry.future
        if future is None or future.done():
            return
        self._count_abandoned(entry)
        future.add_done_callback(lambda _: self._abandoned_done())

    def _count_abandoned(self, entry: _Running) -> None:
        self.metrics.abandoned_attempts.labels(entry.job.type).inc()
        with self._abandoned_lock:
            self._abandoned += 1
            count = self._abandoned
        limit = self.settings.max_abandoned_attempts
        if count >= limit and not self._stopping:
            self._fatal = (
                f"{count} abandoned attempts still run (PASSITO_MAX_ABANDONED_ATTEMPTS={limit}): "
                "the worker drains and exits so that a fresh one replaces it"
            )
            log.error("Stopping: %s", self._fatal)
            self._begin_stop()

    def _abandoned_done(self) -> None:
        """An abandoned handler finished after all (runs in its thread, or on the loop)."""
        with self._abandoned_lock:
            self._abandoned -= 1

    # ------------------------------------------------------------ shutdown

    def _give_up_in_flight(self) -> None:
        """The shutdown timeout passed: stop waiting for in-flight jobs and give them back."""
        now = time.monotonic()
        given_up = 0
        for entry in list(self._running.values()):
            if entry.released:
                continue
            entry.released = True
            given_up += 1
            self._to_release.append((entry.job.id, entry.job.attempt))
            if entry.in_thread and self._processes is None:
                self._abandon_thread(entry)
            self._cancel(entry, now)
        if given_up:
            log.warning("Shutdown timeout: returning %d unfinished job(s) to the queue", given_up)

    def _abandon_at_shutdown(self, exc: BaseException) -> None:
        """Shutting down, past the timeout, and the database does not answer: exit anyway.

        What could not be recorded is not lost: the jobs stay `processing` until their heartbeat
        is older than PASSITO_STUCK_TIMEOUT, then the rescue runs them again.
        """
        self._give_up_in_flight()
        unrecorded = len(self._outcomes) + len(self._to_release)
        log.error(
            "Database unreachable at shutdown (%s): %d job(s) not recorded or returned; they are "
            "rescued after PASSITO_STUCK_TIMEOUT",
            first_line(exc),
            unrecorded,
        )

    async def _release_given_up(self) -> None:
        held = self._to_release
        if not held:
            return
        assert self._main is not None
        try:
            count = await self._main.release(held)
            log.info("Returned %d job(s) to pending: %s", count, ", ".join(f"#{i}" for i, _ in held))
        except Exception as exc:
            log.error(
                "Could not return jobs %s to pending (%s); they will be rescued after PASSITO_STUCK_TIMEOUT",
                [i for i, _ in held],
                first_line(exc),
            )

    # ------------------------------------------------------------ side tasks

    async def _listen(self, listening: asyncio.Future[None]) -> None:
        assert self._wake is not None
        attempt = 0
        while True:
            try:
                conn = await connect_async(self.database_url, timeout=self.settings.connect_timeout)
                async with conn:
                    store = AsyncStore(conn, self.id)
                    await store.listen()
                    attempt = 0
                    self._supervisor.ok("listener")
                    if not listening.done():
                        listening.set_result(None)
                    self._wake.set()  # notifications may have been missed while disconnected
                    async for notify in store.notifications():
                        if not self._queue_set or notify.payload in self._queue_set:
                            self._wake.set()
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                log.debug("Listener reconnecting in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)

    async def _heartbeat(self) -> None:
        store: AsyncStore | None = None
        try:
            while True:
                await asyncio.sleep(self.settings.heartbeat_interval)
                held = [
                    (e.job.id, e.job.attempt, e.ctx.take_progress_json())
                    for e in self._running.values()
                    if not e.released
                ]
                if not held:
                    self._supervisor.ok("heartbeat")
                    continue
                try:
                    if store is None or store.conn.closed:
                        store = AsyncStore(
                            await connect_async(self.database_url, timeout=self.settings.connect_timeout),
                            self.id,
                        )
                    still = await self._beat(store, held)
                except Exception as exc:
                    if not is_connection_error(exc, store.conn if store else None):
                        raise
                    log.warning("Heartbeat failed: %s", first_line(exc))
                    if store is not None:
                        with contextlib.suppress(Exception):
                            await store.conn.close()
                    store = None
                    continue
                self._supervisor.ok("heartbeat")
                now = time.monotonic()
                for job_id, _, _ in held:
                    entry = self._running.get(job_id)
                    if job_id not in still and entry is not None and not (entry.lost or entry.cancelled_at):
                        entry.lost = True
                        self._cancel(entry, now)
        finally:
            if store is not None:
                with contextlib.suppress(Exception):
                    await store.conn.close()

    async def _beat(self, store: AsyncStore, held: list[tuple[int, int, str | None]]) -> set[int]:
        """One heartbeat. Progress is checked when it is set, so the database should take it;
        if it refuses anyway, the jobs are still heart-beaten, without this round's progress."""
        try:
            return await store.heartbeat_json(held)
        except Exception as exc:
            if is_connection_error(exc, store.conn) or all(p is None for _, _, p in held):
                raise
            log.warning(
                "The database refused the progress of jobs %s (%s); heart-beating them without it",
                ", ".join(f"#{i}" for i, _, p in held if p is not None),
                first_line(exc),
            )
            return await store.heartbeat_json([(i, a, None) for i, a, _ in held])

    async def _maintain(self) -> None:
        config = MaintenanceConfig(
            stuck_timeout=self.settings.stuck_timeout,
            keep_completed=self.settings.keep_completed,
            keep_failed=self.settings.keep_failed,
            batch_size=self.settings.prune_batch_size,
            interval=self.settings.maintenance_interval,
        )
        while True:
            # Spread workers' attempts so they do not all race for the lease at once.
            await asyncio.sleep(config.interval * (0.75 + random.random() / 2))  # noqa: S311
            try:
                await asyncio.to_thread(self._maintenance_once, config)
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                log.warning("Maintenance failed: %s", first_line(exc))
                continue
            self._supervisor.ok("maintenance")

    def _maintenance_once(self, config: MaintenanceConfig) -> None:
        self._sync.run(lambda store: Maintenance(store, self.id, config).run_once())

    async def _close(self) -> None:
        if self._main is not None:
            with contextlib.suppress(Exception):
                await self._main.conn.close()
        with contextlib.suppress(Exception):
            self._sync.run(lambda store: Maintenance(store, self.id, MaintenanceConfig()).release())
        self._sync.close()
        if self._processes is not None:
            await asyncio.to_thread(self._processes.close)
        self._executor.shutdown(wait=False, cancel_futures=True)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
