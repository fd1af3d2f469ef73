"""The worker: claims jobs in batches, runs their handlers, records the outcomes.

One asyncio loop with named side tasks:

- the claim loop: sends the finished attempts and the next claim in one pipelined round trip,
  then waits for "a job finished", "a notification arrived" or the poll interval;
- the listener: LISTEN on its own connection, wakes the claim loop when jobs become ready;
- the heartbeat: every PASSITO_HEARTBEAT_INTERVAL marks in-flight jobs alive (with their
  progress) and abandons jobs the database says this worker no longer holds;
- maintenance: rescue and pruning, done by whichever worker holds the lease.

Concurrency is bounded by claiming only as many jobs as there are free slots. Sync handlers
run in a thread pool, async handlers on the loop. On stop the worker claims nothing more,
lets in-flight jobs finish within PASSITO_SHUTDOWN_TIMEOUT and returns the rest to pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from passito_jobs.config import Settings, format_duration
from passito_jobs.jobs.registry import JobContext, JobType, PermanentError, Registry
from passito_jobs.jobs.registry import registry as default_registry
from passito_jobs.queue.backoff import retry_delay
from passito_jobs.queue.maintenance import Maintenance, MaintenanceConfig
from passito_jobs.queue.models import ClaimedJob, DatabaseUnavailableError
from passito_jobs.queue.store import AsyncStore, Store, StoreHandle, connect_async, migrations
from passito_jobs.worker.metrics import WorkerMetrics

log = logging.getLogger("passito_jobs.worker")

ERROR_TAIL_LINES = 12
ERROR_MAX_CHARS = 4000
RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)


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
    lost: bool = False  # the database says another party owns the job now
    released: bool = False  # shutdown gave it back to the queue
    timed_out: bool = False  # the watchdog cancelled it
    in_thread: bool = False


@dataclass
class _Outcomes:
    completed: list[tuple[int, int, str | None]] = field(default_factory=list)
    failed: list[tuple[int, int, str, float | None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.completed or self.failed)


def format_error(exc: BaseException) -> str:
    """`Type: message` and the tail of the traceback, bounded for the last_error column."""
    head = f"{type(exc).__name__}: {exc}".rstrip(": ")
    lines = traceback.format_exception(exc)
    tail = "".join(lines[-ERROR_TAIL_LINES:]).rstrip()
    text = f"{head}\n{tail}"
    return text if len(text) <= ERROR_MAX_CHARS else text[: ERROR_MAX_CHARS - 3] + "..."


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
        self._running: dict[int, _Running] = {}
        self._outcomes = _Outcomes()
        self._executor = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="job")
        self._stopping = False
        self._stop_deadline = 0.0
        self._db_ok_at = 0.0
        self._next_run_at: float | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: AsyncStore | None = None
        self._sync = StoreHandle.to(database_url, timeout=settings.connect_timeout)  # maintenance
        self._threads_abandoned = 0
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

    @property
    def abandoned_threads(self) -> int:
        """Sync handlers still running after shutdown gave their jobs back."""
        return self._threads_abandoned

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
        self._db_ok_at = time.monotonic()
        listening = self._loop.create_future()
        side = [
            asyncio.create_task(self._listen(listening), name="listener"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._maintain(), name="maintenance"),
            asyncio.create_task(self._watchdog(), name="watchdog"),
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
            await self._claim_loop()
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
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
                self._outcomes = _Outcomes()
                try:
                    jobs = await self._settle_and_claim(outcomes, want)
                except (psycopg.Error, DatabaseUnavailableError, OSError) as exc:
                    self._outcomes.completed[:0] = outcomes.completed
                    self._outcomes.failed[:0] = outcomes.failed
                    if self._stopping and time.monotonic() >= self._stop_deadline:
                        self._abandon_at_shutdown(exc)
                        return
                    await self._reconnect(exc)
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

    async def _settle_and_claim(self, outcomes: _Outcomes, want: int) -> list[ClaimedJob]:
        assert self._main is not None
        jobs = await self._main.settle_and_claim(outcomes.completed, outcomes.failed, self.queues, want)
        self._db_ok_at = time.monotonic()
        return jobs

    def _wait_timeout(self, want: int) -> float | None:
        if self._stopping:
            return max(0.0, self._stop_deadline - time.monotonic()) if self._running else 0.0
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
        """Remember when the next delayed job is due so the loop wakes for it, not a poll later."""
        assert self._main is not None
        due: datetime | None = await self._main.next_run_at(self.queues)
        self._next_run_at = None if due is None else due.timestamp()

    async def _reconnect(self, exc: BaseException) -> None:
        self.metrics.database_errors.inc()
        self._db_ok_at = 0.0
        log.warning(
            "Database error, reconnecting: %s",
            str(exc).strip().splitlines()[0] if str(exc) else exc,
        )
        for attempt in range(1_000_000):
            if self._stopping and time.monotonic() >= self._stop_deadline:
                return
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
            await asyncio.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter
            try:
                conn = await connect_async(self.database_url, timeout=self.settings.connect_timeout)
            except DatabaseUnavailableError as again:
                log.warning("Still no database: %s", again)
                continue
            assert self._main is not None
            with contextlib.suppress(Exception):
                await self._main.conn.close()
            self._main = AsyncStore(conn, self.id)
            self._db_ok_at = time.monotonic()
            log.info("Database connection restored")
            return

    # ------------------------------------------------------------ running one job

    def _start(self, job: ClaimedJob) -> None:
        assert self._loop is not None
        ctx = JobContext(job.id, job.type, job.queue, job.payload, job.attempt, job.max_attempts, self.id)
        job_type = self.registry.get(job.type)
        timeout = (job_type.timeout if job_type else None) or self.settings.job_timeout
        entry = _Running(job, ctx, job_type, time.perf_counter(), time.monotonic() + timeout)
        self._running[job.id] = entry
        self.metrics.picked_up(job.queue, job.waited_seconds)
        entry.task = self._loop.create_task(self._execute(entry))

    async def _execute(self, entry: _Running) -> None:
        job = entry.job
        job_type = entry.job_type
        if self._log_jobs:
            log.info(
                "Processing Job #%d (%s)",
                job.id,
                job.type,
                extra={"kv": {"attempt": f"{job.attempt}/{job.max_attempts}", "queue": job.queue}},
            )
        outcome = "lost"
        try:
            if job_type is None:
                raise LookupError(
                    f"no handler for job type {job.type!r} on worker {self.id} "
                    f"(registered: {', '.join(self.registry.names()) or 'none'}); "
                    "load its module with --import or PASSITO_JOB_MODULES"
                )
            if job_type.is_async:
                result = await job_type.handler(entry.ctx)
            else:
                entry.in_thread = True
                assert self._loop is not None
                result = await self._loop.run_in_executor(self._executor, job_type.handler, entry.ctx)
            encoded = None if result is None else _encode_result(job, result)
            self._outcomes.completed.append((job.id, job.attempt, encoded))
            outcome = "completed"
            if self._log_jobs:
                log.info(
                    "Completed Job #%d (%s) in %s",
                    job.id,
                    job.type,
                    _ms(time.perf_counter() - entry.started),
                    extra={"tag": "DONE"},
                )
        except asyncio.CancelledError:
            if entry.timed_out:
                outcome = self._record_failure(entry, self._timeout_error(entry))
            elif entry.lost:
                log.warning(
                    "Abandoned Job #%d (%s): it was cancelled or rescued by another worker",
                    job.id,
                    job.type,
                    extra={"tag": "FAIL"},
                )
            elif not entry.released:
                raise
        except Exception as exc:
            outcome = self._record_failure(entry, exc)
        finally:
            del self._running[job.id]
            self.metrics.finished(job.type, job.queue, outcome, time.perf_counter() - entry.started)
            assert self._wake is not None
            self._wake.set()

    def _timeout_error(self, entry: _Running) -> AttemptTimeoutError:
        if entry.in_thread:
            self._threads_abandoned += 1  # the thread runs on; its late result is discarded
        timeout = (entry.job_type.timeout if entry.job_type else None) or self.settings.job_timeout
        return AttemptTimeoutError(
            f"attempt exceeded the {format_duration(timeout)} timeout of job type {entry.job.type}"
        )

    async def _watchdog(self) -> None:
        """Cancel attempts that outlive their job type's timeout.

        One periodic sweep instead of a timer per job keeps the hot path cheap; timeouts are
        enforced within a tenth of the shortest one (and within a second).
        """
        shortest = min([t.timeout for t in self.registry if t.timeout] + [self.settings.job_timeout])
        tick = min(1.0, max(0.02, shortest / 10))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for entry in list(self._running.values()):
                if now >= entry.deadline and not (entry.timed_out or entry.lost or entry.released):
                    entry.timed_out = True
                    if entry.task is not None:
                        entry.task.cancel()

    def _record_failure(self, entry: _Running, exc: Exception) -> str:
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
        what = f"{type(exc).__name__}: {exc}"
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

    # ------------------------------------------------------------ shutdown

    def _give_up_in_flight(self) -> None:
        """The shutdown timeout passed: stop waiting for in-flight jobs and give them back."""
        for entry in self._running.values():
            if entry.released:
                continue
            entry.released = True
            self._to_release.append((entry.job.id, entry.job.attempt))
            if entry.in_thread:
                self._threads_abandoned += 1
            if entry.task is not None:
                entry.task.cancel()
        log.warning("Shutdown timeout: returning %d unfinished job(s) to the queue", len(self._running))

    def _abandon_at_shutdown(self, exc: BaseException) -> None:
        """Shutting down, past the timeout, and the database does not answer: exit anyway.

        What could not be recorded is not lost: the jobs stay `processing` until their heartbeat
        is older than PASSITO_STUCK_TIMEOUT, then the rescue runs them again.
        """
        self._give_up_in_flight()
        unrecorded = len(self._outcomes.completed) + len(self._outcomes.failed) + len(self._to_release)
        log.error(
            "Database unreachable at shutdown (%s): %d job(s) not recorded or returned; they are "
            "rescued after PASSITO_STUCK_TIMEOUT",
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__,
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
        except (psycopg.Error, OSError) as exc:
            log.error(
                "Could not return jobs %s to pending (%s); they will be rescued after PASSITO_STUCK_TIMEOUT",
                [i for i, _ in held],
                exc,
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
                    if not listening.done():
                        listening.set_result(None)
                    self._wake.set()  # notifications may have been missed while disconnected
                    async for notify in store.notifications():
                        if not self._queue_set or notify.payload in self._queue_set:
                            self._wake.set()
            except (psycopg.Error, DatabaseUnavailableError, OSError) as exc:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                log.debug("Listener reconnecting in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)

    async def _heartbeat(self) -> None:
        store: AsyncStore | None = None
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            held = [
                (e.job.id, e.job.attempt, e.ctx.take_progress())
                for e in self._running.values()
                if not e.released
            ]
            if not held:
                continue
            try:
                if store is None or store.conn.closed:
                    store = AsyncStore(
                        await connect_async(self.database_url, timeout=self.settings.connect_timeout),
                        self.id,
                    )
                still = await store.heartbeat(held)
            except (psycopg.Error, DatabaseUnavailableError, OSError) as exc:
                log.warning("Heartbeat failed: %s", exc)
                if store is not None:
                    with contextlib.suppress(Exception):
                        await store.conn.close()
                store = None
                continue
            for job_id, _, _ in held:
                entry = self._running.get(job_id)
                if job_id not in still and entry is not None and not entry.lost:
                    entry.lost = True
                    if entry.task is not None:
                        entry.task.cancel()

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
            except (psycopg.Error, DatabaseUnavailableError, OSError) as exc:
                log.warning("Maintenance failed: %s", exc)

    def _maintenance_once(self, config: MaintenanceConfig) -> None:
        self._sync.run(lambda store: Maintenance(store, self.id, config).run_once())

    async def _close(self) -> None:
        if self._main is not None:
            with contextlib.suppress(Exception):
                await self._main.conn.close()
        with contextlib.suppress(Exception):
            self._sync.run(lambda store: Maintenance(store, self.id, MaintenanceConfig()).release())
        self._sync.close()
        self._executor.shutdown(wait=False, cancel_futures=True)


class AttemptTimeoutError(TimeoutError):
    """An attempt ran longer than its job type's timeout."""


def _encode_result(job: ClaimedJob, result: Any) -> str:
    try:
        return json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"handler of {job.type} returned a value that is not JSON: {exc}") from None


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
