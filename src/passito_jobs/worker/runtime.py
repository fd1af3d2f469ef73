"""The worker: the pieces of worker/ wired together, each run as a supervised task.

- the claim loop (claimloop.py): outcomes and the next claim in one round trip;
- the attempts (attempt.py): handlers in threads, child processes or on the loop;
- the listener (listener.py): LISTEN on its own connection, wakes the claim loop, and has the
  heartbeat check at once a job of this worker announced cancelled (none with `listen=False`,
  behind a transaction pooler: the claim loop polls, the heartbeat finds cancellations at its
  interval, and no connection prepares statements on the server);
- the heartbeat (heartbeat.py): marks running attempts alive, stops the ones cancelled or lost;
- the maintainer (maintainer.py): rescue and pruning while this worker holds the lease;
- the scheduler (scheduler.py): the slots of periodic jobs, while it holds the same lease;
- the watchdog: cancels attempts past their timeout, abandons those that ignore it.

Each task runs under the task supervisor (supervision.py): an unexpected exception is logged
with its traceback and the task restarts with backoff. `health_problem()` says when restarting
the process would help (`/healthz`); `ready` whether the database answers (`/readyz`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable

from passito_jobs import builtin  # noqa: F401 - Noop and Sleep: every worker runs them
from passito_jobs.queue.connection import AsyncConnectionHandle
from passito_jobs.queue.errors import SchemaMissingError, first_line
from passito_jobs.queue.migrate import schema_problem
from passito_jobs.queue.store import Store, StoreHandle
from passito_jobs.registry import Registry
from passito_jobs.registry import registry as default_registry
from passito_jobs.settings import format_duration
from passito_jobs.tracing import Tracing
from passito_jobs.worker.attempt import Attempts
from passito_jobs.worker.claimloop import ClaimLoop
from passito_jobs.worker.failures import AttemptTimeoutError, describe, format_error
from passito_jobs.worker.heartbeat import Heartbeat, HeartbeatConfig
from passito_jobs.worker.listener import Handoff, Listener, ListenerConfig
from passito_jobs.worker.maintainer import Maintainer
from passito_jobs.worker.metrics import WorkerMetrics
from passito_jobs.worker.scheduler import Scheduler
from passito_jobs.worker.settings import MaintenanceSettings, WorkerSettings
from passito_jobs.worker.supervision import TaskSupervisor

__all__ = ["AttemptTimeoutError", "SchemaMissingError", "Worker", "format_error"]

log = logging.getLogger("passito_jobs.worker")


class Worker:
    """A worker process's job runtime. `await run()` returns after `stop()` completes."""

    def __init__(
        self,
        settings: WorkerSettings,
        maintenance: MaintenanceSettings | None = None,
        *,
        database_url: str,
        connect_timeout: float = 5.0,
        listen: bool = True,
        registry: Registry = default_registry,
        metrics: WorkerMetrics | None = None,
        tracing: Callable[[str], Tracing | None] | None = None,
    ) -> None:
        """`tracing`: makes the worker's Tracing from its worker id (`Tracing.from_env` reads
        the OTEL_* variables); None, or a factory that returns None, traces nothing."""
        self.settings = settings
        self.database_url = database_url
        self.registry = registry
        self.metrics = metrics or WorkerMetrics()
        self.worker_id = f"{settings.name}:{os.getpid()}"
        self._fatal: str | None = None
        self._supervisor = TaskSupervisor(
            on_restart=lambda task: self.metrics.task_restarts.labels(task).inc()
        )
        self._stall_after = max(settings.stall_timeout, 3 * settings.poll_interval)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.tracing = tracing(self.worker_id) if tracing is not None else None
        self.attempts = Attempts(
            settings,
            worker_id=self.worker_id,
            registry=registry,
            metrics=self.metrics,
            on_finish=lambda: self.claim_loop.wake.set(),  # noqa: PLW0108 - the loop is made below
            on_fatal=self._stop_for_good,
            tracing=self.tracing,
        )

        def handle() -> AsyncConnectionHandle:
            return AsyncConnectionHandle(
                database_url, timeout=connect_timeout, prepare=listen, on_retry=_still_no_database
            )

        channel = new_handoff_channel() if listen else None
        self.claim_loop = ClaimLoop(
            settings,
            worker_id=self.worker_id,
            handle=handle(),
            attempts=self.attempts,
            metrics=self.metrics,
            on_round=lambda: self._supervisor.ok("claim loop"),
            handoff=(lambda: self.listener.handing() if self.listener is not None else None)
            if channel is not None
            else None,
        )
        self._listening = asyncio.Event()
        self.listener: Listener | None = None
        if channel is not None:
            self.listener = Listener(
                ListenerConfig(frozenset(settings.queues)),
                handle=handle(),
                worker_id=self.worker_id,
                wake=self.claim_loop.wake.set,
                on_listening=self._on_listening,
                on_cancel=self._on_cancel,
                handoff=Handoff(channel, receive=self.claim_loop.receive_handoff),
            )
        self.heartbeat = Heartbeat(
            HeartbeatConfig(settings.heartbeat_interval),
            handle=handle(),
            worker_id=self.worker_id,
            attempts=self.attempts,
            job_types=registry.names(),
            queues=settings.queues,
            on_round=lambda: self._supervisor.ok("heartbeat"),
        )
        self._side_services(maintenance, database_url, connect_timeout, listen)
        self.metrics.concurrency.set(settings.concurrency)
        self.metrics.in_flight.set_function(lambda: len(self.attempts))

    def _side_services(
        self,
        maintenance: MaintenanceSettings | None,
        database_url: str,
        connect_timeout: float,
        listen: bool,
    ) -> None:
        """The scheduler and the maintainer: both work while this worker holds the lease."""
        maintenance_config = (maintenance or MaintenanceSettings()).config()
        schedules = self.registry.schedules()
        # A connection of its own when it has slots to keep, so a long prune never delays one.
        maintainer_store = StoreHandle.to(database_url, timeout=connect_timeout, prepare=listen)
        self.scheduler = Scheduler(
            schedules,
            store=(
                StoreHandle.to(database_url, timeout=connect_timeout, prepare=listen)
                if schedules
                else maintainer_store
            ),
            worker_id=self.worker_id,
            lease_ttl=maintenance_config.lease_ttl,
            on_round=lambda: self._supervisor.ok("scheduler"),
        )
        self.maintainer = Maintainer(
            maintenance_config,
            store=maintainer_store,
            worker_id=self.worker_id,
            on_round=lambda: self._supervisor.ok("maintenance"),
            on_lease=None if schedules else self.scheduler.sync,
        )

    # ------------------------------------------------------------ public

    @property
    def id(self) -> str:
        """The worker id, `<worker name>:<pid>` (deprecated name of `worker_id`)."""
        return self.worker_id

    @property
    def ready(self) -> bool:
        """Ready while the database answered recently (the claim loop talks to it at least
        every poll interval)."""
        window = max(3 * self.settings.poll_interval, 5.0) + 1.0
        answered = self.claim_loop.db_ok_at
        return answered > 0 and time.monotonic() - answered < window

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
        ticked = self.attempts.watchdog_ran_at
        if ticked <= 0:
            return None  # not started yet
        now = time.monotonic()
        if now - ticked > self._stall_after:
            return f"the event loop has not run for {now - ticked:.0f}s (a handler blocks it?)"
        loop = self.claim_loop
        free = not loop.stopping and len(self.attempts) < self.settings.concurrency
        if free and not loop.reconnecting and now - loop.claimed_at > self._stall_after:
            return f"the claim loop made no round trip for {now - loop.claimed_at:.0f}s with free slots"
        return None

    @property
    def abandoned(self) -> int:
        """Abandoned attempts whose handler still runs (threads cannot be stopped)."""
        return self.attempts.abandoned

    @property
    def exit_reason(self) -> str | None:
        """Set when the worker stopped itself because it cannot go on (exit non-zero)."""
        return self._fatal

    def stop(self) -> None:
        """Stop claiming; in-flight jobs get PASSITO_SHUTDOWN_TIMEOUT to finish. Thread-safe."""
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self.claim_loop.stop)
        else:
            self.claim_loop.stop()

    def check_schema(self) -> None:
        """Fail with a clear message unless the schema is migrated (runs before `run`)."""
        problem = schema_problem(self.maintainer.store.run(Store.schema_version), "this worker")
        if problem:
            raise SchemaMissingError(problem)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.claim_loop.open()
        await self.attempts.open()
        self.attempts.watchdog_ran_at = time.monotonic()
        supervise = self._supervisor.run
        side = [
            asyncio.create_task(supervise("heartbeat", self.heartbeat.run), name="heartbeat"),
            asyncio.create_task(supervise("maintenance", self.maintainer.run), name="maintenance"),
            asyncio.create_task(supervise("watchdog", self._watchdog), name="watchdog"),
        ]
        if self.scheduler.schedules:
            side.append(asyncio.create_task(supervise("scheduler", self.scheduler.run), name="scheduler"))
        if self.listener is not None:
            side.append(asyncio.create_task(supervise("listener", self.listener.run), name="listener"))
            # Claim only once LISTEN is in place: a job dispatched in between would otherwise
            # wait for the next poll.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.claim_loop.handle.timeout):
                    await self._listening.wait()
        log.info(
            "Worker started: queues=%s concurrency=%d batch=%d wakeup=%s",
            ",".join(self.claim_loop.queues or ["*"]),
            self.settings.concurrency,
            self.settings.batch_size,
            "listen"
            if self.listener is not None
            else f"poll every {format_duration(self.settings.poll_interval)}",
            extra={"kv": {"worker_id": self.worker_id}},
        )
        try:
            await supervise("claim loop", self.claim_loop.run, returns=True)
        finally:
            for task in side:
                task.cancel()
            for ended in await asyncio.gather(*side, return_exceptions=True):
                if isinstance(ended, BaseException) and not isinstance(ended, asyncio.CancelledError):
                    log.error("A worker task ended with an error: %s", describe(ended), exc_info=ended)
            await self._close()
        log.info("Worker stopped")

    # ------------------------------------------------------------ internals

    def _on_listening(self) -> None:
        self._listening.set()
        self._supervisor.ok("listener")

    def _on_cancel(self, job_id: int) -> None:
        """A processing job was cancelled: if it runs here, a heartbeat round checks it and
        stops it now (jobs cancel reaches the handler in a round trip, not an interval)."""
        if job_id in self.attempts.running:
            self.heartbeat.beat_now()

    def _stop_for_good(self, reason: str) -> None:
        """The worker cannot go on (too many abandoned attempts): drain and exit 1."""
        if self._fatal is not None or self.claim_loop.stopping:
            return
        self._fatal = reason
        log.error("Stopping: %s", reason)
        self.claim_loop.stop()

    async def _watchdog(self) -> None:
        """Each tick also shows that the event loop runs (`health_problem`)."""
        tick = self.attempts.watchdog_tick()
        while True:
            await asyncio.sleep(tick)
            self.attempts.sweep()
            self._supervisor.ok("watchdog")

    async def _close(self) -> None:
        await self.claim_loop.handle.close()
        await asyncio.to_thread(self.maintainer.release)
        if self.scheduler.store is not self.maintainer.store:
            await asyncio.to_thread(self.scheduler.store.close)
        await self.attempts.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)


def new_handoff_channel() -> str:
    """Handoff (migration 0014): this worker's channel for handed jobs. Anyone may NOTIFY any
    channel, so the channel is a secret (64 random bits, kept in waiting_workers, which only the
    queue's roles read): a role that may merely connect cannot hand the worker a job to run."""
    return f"passito_jobs_handoff_{secrets.token_hex(8)}"


def _still_no_database(exc: BaseException) -> None:
    log.warning("Still no database: %s", first_line(exc))
