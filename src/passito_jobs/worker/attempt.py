# Longer than 400 lines: the whole life of an attempt (start, outcome, span, timeout, abandoning it).
"""Attempts: one run of one job, from its claim to its outcome, with an explicit state.

    RUNNING ──handler returned──▶ COMPLETED
       │  ──handler raised──────▶ FAILED (retried later, or for good)
       ├─ the watchdog: past the job type's timeout ──▶ TIMED_OUT ─┐
       ├─ a heartbeat: the job was cancelled ─────────▶ CANCELLED ─┤ ctx.cancelled is set and the
       ├─ a heartbeat: the job is no longer ours ─────▶ LOST ──────┤ handler stopped; the slot is
       └─ shutdown past PASSITO_SHUTDOWN_TIMEOUT ─────▶ RELEASED ──┤ freed when it ends, or
                                                                    └▶ ABANDONED after CANCEL_GRACE

`Attempts` runs them: sync handlers in a thread pool (or child processes: isolation.py), async
handlers on the event loop; each result is encoded (limits.encode_json: a sync handler's in
its own thread or process, off the loop) before it is buffered in `outcomes`, which the claim
loop sends with its next round trip. A timed-out attempt is recorded as failed
(`AttemptTimeoutError`), one that ignores cancellation is ABANDONED: its slot is free, its late
result discarded, and it is counted until its handler really ends.

Stopping an attempt cancels an async handler's task and kills a child process at once. A sync
handler on a thread cannot be stopped: it sees `ctx.cancelled`; at a timeout or shutdown it is
abandoned at once (as before there was a `ctx.cancelled`), and when its job was cancelled or
lost it gets CANCEL_GRACE to return first.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from passito_jobs.logs import job_fields
from passito_jobs.queue.backoff import retry_delay
from passito_jobs.queue.limits import UnstorableValueError, encode_json
from passito_jobs.queue.models import ClaimedJob
from passito_jobs.registry import DEFAULT_MAX_SNOOZES, JobContext, JobType, PermanentError, Registry, Snooze
from passito_jobs.settings import format_duration
from passito_jobs.tracing import Tracing, trace_id_of
from passito_jobs.worker.failures import AttemptTimeoutError, OutcomeRefusedError, describe, format_error
from passito_jobs.worker.isolation import ChildConfig, ProcessPool, isolated, pool_size
from passito_jobs.worker.metrics import WorkerMetrics
from passito_jobs.worker.outcomes import Outcomes
from passito_jobs.worker.settings import WorkerSettings
from passito_jobs.worker.threads import JobThreads

log = logging.getLogger("passito_jobs.worker")

CANCEL_GRACE = 1.0  # seconds a cancelled async handler gets before the worker gives up on it


class AttemptState(enum.Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SNOOZED = "snoozed"  # the handler raised Snooze: back to pending later, attempt not counted
    TIMED_OUT = "timed_out"  # the watchdog cancelled it: recorded as a failed attempt
    CANCELLED = "cancelled"  # the job was cancelled (jobs cancel): nothing is recorded
    LOST = "lost"  # the database says another party holds the job now: nothing is recorded
    RELEASED = "released"  # shutdown gave the job back to the queue, attempt not counted
    ABANDONED = "abandoned"  # cancelled, but the handler runs on: slot free, outcome discarded


# A sync handler on a thread stopped for these reasons gets CANCEL_GRACE to see ctx.cancelled.
GRACEFUL = frozenset({AttemptState.CANCELLED, AttemptState.LOST})


@dataclass(slots=True, eq=False)
class Attempt:
    job: ClaimedJob
    ctx: JobContext
    job_type: JobType | None
    started: float  # perf_counter
    deadline: float  # time.monotonic() after which the watchdog cancels the attempt
    state: AttemptState = AttemptState.RUNNING
    task: asyncio.Task[None] | None = None
    future: Future[Any] | None = None  # a sync attempt's work in the thread pool
    in_thread: bool = False
    in_child: bool = False  # the thread waits on a child process (process isolation)
    cancelled_at: float = 0.0  # when the worker stopped it (TIMED_OUT, CANCELLED, LOST, RELEASED)
    span: Any = None  # its OpenTelemetry span, when the worker traces

    @property
    def log_extra(self) -> dict[str, Any]:
        job, ctx = self.job, self.ctx
        attempt = f"{job.attempt}/{job.max_attempts}"
        return {"job": job_fields(job.id, job.type, job.queue, attempt, ctx.worker_id, trace_id=ctx.trace_id)}


class Attempts:
    """The attempts one worker runs, at most `settings.concurrency` at once (claimed for free slots)."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        worker_id: str,
        registry: Registry,
        metrics: WorkerMetrics,
        on_finish: Callable[[], None],
        on_fatal: Callable[[str], None],
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.tracing = tracing
        self.worker_id = worker_id
        self.registry = registry
        self.metrics = metrics
        self.running: dict[int, Attempt] = {}
        self.outcomes = Outcomes()
        self._on_finish = on_finish
        self._on_fatal = on_fatal
        self._log_jobs = settings.log_jobs
        self._max_bytes = settings.max_payload_bytes
        # Abandoned threads (timed-out sync handlers) keep theirs; the extra threads keep
        # `concurrency` of them free for new attempts until the bound stops the worker.
        self._threads = JobThreads(settings.concurrency + settings.max_abandoned_attempts)
        self.processes: ProcessPool | None = None  # made by open() when a job type needs it
        self._abandoned_lock = threading.Lock()
        self.abandoned = 0  # abandoned attempts whose handler still runs
        self.released: list[tuple[int, int]] = []  # (id, attempt) to give back at shutdown
        self.watchdog_ran_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self.running)

    def __iter__(self) -> Iterator[Attempt]:
        return iter(list(self.running.values()))

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        size = pool_size(self.settings.sync_isolation, self.settings.concurrency, self.registry)
        if size:
            self.processes = ProcessPool(size, ChildConfig(self.settings.job_modules, self.worker_id))
            await asyncio.to_thread(self.processes.start)

    async def close(self) -> None:
        if self.processes is not None:
            await asyncio.to_thread(self.processes.close)
        self._threads.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------ running one attempt

    def start(self, job: ClaimedJob) -> None:
        assert self._loop is not None
        ctx = JobContext(
            job.id,
            job.type,
            job.queue,
            job.payload,
            job.attempt,
            job.max_attempts,
            self.worker_id,
            job.parents,
        )
        ctx.max_bytes = self._max_bytes
        job_type = self.registry.get(job.type)
        timeout = (job_type.timeout if job_type else None) or self.settings.job_timeout
        attempt = Attempt(job, ctx, job_type, time.perf_counter(), time.monotonic() + timeout)
        if self.tracing is not None:
            attempt.span = self.tracing.start(job)
            ctx.trace_id = self.tracing.trace_id(attempt.span)
        elif job.metadata is not None:
            ctx.trace_id = trace_id_of(job.metadata)
        self.running[job.id] = attempt
        self.metrics.picked_up(job.queue, job.waited_seconds)
        attempt.task = self._loop.create_task(self._execute(attempt))

    async def _execute(self, attempt: Attempt) -> None:
        job = attempt.job
        if attempt.span is not None and self.tracing is not None:
            # This task's own context: the handler's spans and dispatches join the attempt's trace.
            self.tracing.enter(attempt.span)
        if self._log_jobs:
            log.info("Processing Job #%d (%s)", job.id, job.type, extra=attempt.log_extra)
        outcome = "lost"
        result: str | None = None
        error: BaseException | None = None
        cancelled = False
        try:
            try:
                value = await self._begin(attempt)
                # A sync handler's thread (or child process) encoded its result already.
                result = value if attempt.in_thread else self._encode(value)
            except asyncio.CancelledError as exc:
                if attempt.cancelled_at:
                    cancelled = True  # the worker stopped it
                else:
                    task = asyncio.current_task()
                    if task is None or task.cancelling():
                        raise  # not the worker's doing (the loop is shutting down)
                    error = exc  # the handler raised it itself: an ordinary failure
            except OutcomeRefusedError as exc:
                # Made here, not raised: the worker's own traceback would say nothing.
                error = PermanentError(str(exc))
            except BaseException as exc:  # a handler's SystemExit fails its job, not the worker
                error = exc
            if attempt.state is not AttemptState.ABANDONED:
                outcome = self._conclude(attempt, result, error, cancelled=cancelled)
        finally:
            if attempt.state is not AttemptState.ABANDONED:
                self._finish(attempt, outcome)

    def _begin(self, attempt: Attempt) -> Awaitable[Any]:
        """Start the handler: a coroutine for an async one, a future for a sync one (a thread,
        or a thread waiting on a child process). Not a coroutine itself: one fewer per job."""
        job, job_type = attempt.job, attempt.job_type
        if job.unreadable is not None:
            raise OutcomeRefusedError(job.unreadable)
        if job_type is None:
            raise LookupError(
                f"no handler for job type {job.type!r} on worker {self.worker_id} "
                f"(registered: {', '.join(self.registry.names()) or 'none'}); "
                "load its module with --import or PASSITO_JOB_MODULES"
            )
        if job_type.settings is not None:
            attempt.ctx.settings = self.registry.settings_for(job_type)
        if job_type.is_async:
            return job_type.handler(attempt.ctx)
        attempt.in_thread = True
        if self.processes is not None and isolated(job_type, self.settings.sync_isolation):
            attempt.in_child = True
            attempt.future = self._threads.submit(
                self.processes.run, (job.id, job.attempt), job_type, attempt.ctx
            )
        elif attempt.span is not None:  # the thread runs in the attempt's trace context
            attempt.future = self._threads.submit(
                contextvars.copy_context().run, self._run_sync, job_type.handler, attempt.ctx
            )
        else:
            attempt.future = self._threads.submit(self._run_sync, job_type.handler, attempt.ctx)
        return asyncio.wrap_future(attempt.future)

    def _run_sync(self, handler: Callable[[JobContext], Any], ctx: JobContext) -> str | None:
        """In the handler's thread: run it and encode its result there, so that a slow encode
        (a huge value, a container whose methods block) holds this thread, not the event loop,
        and the job type's timeout covers it."""
        return self._encode(handler(ctx))

    def _encode(self, value: Any) -> str | None:
        """A result as JSON text the database takes; OutcomeRefusedError says why not."""
        if value is None:
            return None
        try:
            return encode_json(value, what="result", max_bytes=self._max_bytes)
        except UnstorableValueError as exc:
            raise OutcomeRefusedError(str(exc)) from None

    def _conclude(
        self, attempt: Attempt, result: str | None, error: BaseException | None, *, cancelled: bool
    ) -> str:
        """Buffer the attempt's outcome; return it for the metrics."""
        job = attempt.job
        if attempt.state is AttemptState.TIMED_OUT:  # even if the handler swallowed the cancellation
            return self._record_failure(attempt, self._timeout_error(attempt))
        if attempt.state is AttemptState.CANCELLED:
            if self._log_jobs:
                elapsed = _ms(time.perf_counter() - attempt.started)
                log.info(
                    "Cancelled Job #%d (%s) after %s", job.id, job.type, elapsed, extra=attempt.log_extra
                )
            return "cancelled"
        if attempt.state is AttemptState.LOST:
            log.warning(
                "Abandoned Job #%d (%s): it was cancelled or rescued by another worker",
                job.id,
                job.type,
                extra={"tag": "FAIL", **attempt.log_extra},
            )
            return "lost"
        if cancelled or attempt.state is AttemptState.RELEASED:
            return "lost"  # shutdown gave it back to the queue
        if isinstance(error, Snooze):  # pending again later, attempt not counted (SQL: max_snoozes)
            attempt.state = AttemptState.SNOOZED
            limit = attempt.job_type.max_snoozes if attempt.job_type else DEFAULT_MAX_SNOOZES
            self.outcomes.snoozed.append((job.id, job.attempt, error.seconds, limit))
            if self._log_jobs:
                log.info(
                    "Snoozed Job #%d (%s) for %gs", job.id, job.type, error.seconds, extra=attempt.log_extra
                )
            return "snoozed"
        if error is not None:
            return self._record_failure(attempt, error)
        attempt.state = AttemptState.COMPLETED
        self.outcomes.completed.append((job.id, job.attempt, result))
        if self._log_jobs:
            elapsed = _ms(time.perf_counter() - attempt.started)
            extra = {"tag": "DONE", **attempt.log_extra}
            log.info("Completed Job #%d (%s) in %s", job.id, job.type, elapsed, extra=extra)
        return "completed"

    def _finish(self, attempt: Attempt, outcome: str) -> None:
        if attempt.span is not None:
            Tracing.end(attempt.span, outcome)
        if self.running.get(attempt.job.id) is attempt:  # a job rescued and claimed again is a new one
            del self.running[attempt.job.id]
        self.metrics.finished(
            attempt.job.type, attempt.job.queue, outcome, time.perf_counter() - attempt.started
        )
        self._on_finish()

    def _timeout_error(self, attempt: Attempt) -> AttemptTimeoutError:
        if attempt.in_thread and not attempt.in_child:
            self._abandon_thread(attempt)  # the thread runs on; its late result is discarded
        timeout = (attempt.job_type.timeout if attempt.job_type else None) or self.settings.job_timeout
        return AttemptTimeoutError(
            f"attempt exceeded the {format_duration(timeout)} timeout of job type {attempt.job.type}"
        )

    def _record_failure(self, attempt: Attempt, exc: BaseException) -> str:
        job = attempt.job
        permanent = isinstance(exc, PermanentError)
        retry_in: float | None = None
        if not permanent and job.attempt < job.max_attempts:
            retry_in = retry_delay(
                job.attempt, base=self.settings.retry_backoff_base, cap=self.settings.retry_backoff_cap
            )
        if attempt.state is AttemptState.RUNNING:
            attempt.state = AttemptState.FAILED
        self.outcomes.failed.append((job.id, job.attempt, format_error(exc), retry_in))
        what = describe(exc)
        if attempt.span is not None:
            try:
                Tracing.failed(attempt.span, exc, what)
            except Exception:  # a hostile exception (its traceback raises) is recorded anyway
                log.debug("Could not record the exception of Job #%d on its span", job.id)
        elapsed = _ms(time.perf_counter() - attempt.started)
        extra = {"tag": "FAIL", **attempt.log_extra}
        if retry_in is not None:
            log.warning(
                "Job #%d (%s) failed on attempt %d/%d after %s: %s; retrying in %.1fs",
                *(job.id, job.type, job.attempt, job.max_attempts, elapsed, what, retry_in),
                extra=extra,
            )
            return "retried"
        reason = "permanent error" if permanent else f"attempt {job.attempt}/{job.max_attempts}"
        log.error(
            "Failed Job #%d (%s) after %s (%s): %s", job.id, job.type, elapsed, reason, what, extra=extra
        )
        return "failed"

    # ------------------------------------------------------------ stopping attempts

    def stop(self, attempt: Attempt, state: AttemptState, now: float) -> None:
        """Stop a running attempt (TIMED_OUT, CANCELLED, LOST or RELEASED): set its
        ctx.cancelled, cancel its task, kill its child process if any."""
        attempt.state = state
        attempt.cancelled_at = now
        attempt.ctx.cancelled.set()
        in_thread = attempt.in_thread and not attempt.in_child
        if state is AttemptState.RELEASED:
            self.released.append((attempt.job.id, attempt.job.attempt))
            if in_thread:
                self._abandon_thread(attempt)
        if attempt.in_child and self.processes is not None:
            self.processes.kill((attempt.job.id, attempt.job.attempt))
        if in_thread and state in GRACEFUL:
            # Not started yet (all threads busy): it never starts, and its task ends at once.
            # Running: it may see ctx.cancelled and return; the watchdog gives up after CANCEL_GRACE.
            if attempt.future is not None:
                attempt.future.cancel()
            return
        if attempt.task is not None:
            attempt.task.cancel()

    def lost(self, job_ids: set[int], now: float, cancelled: Collection[int] = ()) -> None:
        """The database says these jobs are no longer held by this worker: stop them, as
        CANCELLED those of `cancelled` (the job's state), as LOST the others (rescued and
        held by another worker now)."""
        for job_id in job_ids:
            attempt = self.running.get(job_id)
            if attempt is not None and attempt.state is AttemptState.RUNNING:
                state = AttemptState.CANCELLED if job_id in cancelled else AttemptState.LOST
                self.stop(attempt, state, now)

    def release_all(self) -> int:
        """Shutdown timeout: stop waiting for the running attempts and give their jobs back."""
        now = time.monotonic()
        given_up = 0
        for attempt in self:
            if attempt.state is AttemptState.RUNNING:
                given_up += 1
                self.stop(attempt, AttemptState.RELEASED, now)
            elif attempt.state is AttemptState.TIMED_OUT:  # cancelled already; its failure is recorded
                given_up += 1
                self.released.append((attempt.job.id, attempt.job.attempt))
        if given_up:
            log.warning("Shutdown timeout: returning %d unfinished job(s) to the queue", given_up)
        return given_up

    def held(self) -> list[tuple[int, int, str | None]]:
        """(id, attempt, progress as JSON text or None) of every job to heart-beat."""
        return [
            (a.job.id, a.job.attempt, a.ctx.take_progress_json())
            for a in self.running.values()
            if a.state is not AttemptState.RELEASED
        ]

    def sweep(self) -> None:
        """One watchdog tick: cancel attempts past their timeout; abandon cancelled ones still running."""
        now = self.watchdog_ran_at = time.monotonic()
        for attempt in self:
            if attempt.cancelled_at:
                if now - attempt.cancelled_at >= CANCEL_GRACE and attempt.state is not AttemptState.ABANDONED:
                    self._abandon_task(attempt)
            elif now >= attempt.deadline and attempt.state is AttemptState.RUNNING:
                self.stop(attempt, AttemptState.TIMED_OUT, now)

    def watchdog_tick(self) -> float:
        """Timeouts are enforced within a tenth of the shortest one (and within a second): one
        periodic sweep instead of a timer per job keeps the hot path cheap."""
        shortest = min([t.timeout for t in self.registry if t.timeout] + [self.settings.job_timeout])
        return min(1.0, max(0.02, shortest / 10))

    # ------------------------------------------------------------ abandoned attempts

    def _abandon_task(self, attempt: Attempt) -> None:
        """A cancelled handler runs on: free its slot, record its outcome, count it."""
        outcome = "cancelled" if attempt.state is AttemptState.CANCELLED else "lost"
        if attempt.state is AttemptState.TIMED_OUT:
            outcome = self._record_failure(attempt, self._timeout_error(attempt))
        attempt.state = AttemptState.ABANDONED
        log.warning(
            "Job #%d (%s) ignores cancellation: its handler runs on, and whatever it returns is discarded",
            attempt.job.id,
            attempt.job.type,
            extra=attempt.log_extra,
        )
        self._count_abandoned(attempt)
        if attempt.task is not None:
            attempt.task.add_done_callback(lambda _: self._abandoned_done())
        self._finish(attempt, outcome)

    def _abandon_thread(self, attempt: Attempt) -> None:
        future = attempt.future
        if future is None or future.done():
            return
        self._count_abandoned(attempt)
        future.add_done_callback(lambda _: self._abandoned_done())

    def _count_abandoned(self, attempt: Attempt) -> None:
        self.metrics.abandoned_attempts.labels(attempt.job.type).inc()
        with self._abandoned_lock:
            self.abandoned += 1
            count = self.abandoned
        limit = self.settings.max_abandoned_attempts
        if count >= limit:
            self._on_fatal(
                f"{count} abandoned attempts still run (PASSITO_MAX_ABANDONED_ATTEMPTS={limit}): "
                "the worker drains and exits so that a fresh one replaces it"
            )

    def _abandoned_done(self) -> None:
        """An abandoned handler finished after all (runs in its thread, or on the loop)."""
        with self._abandoned_lock:
            self.abandoned -= 1


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"
