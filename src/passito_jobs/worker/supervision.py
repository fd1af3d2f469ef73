"""Supervised tasks: a worker task that raises is logged and restarted, never silently lost.

(The task supervisor of one worker process; the `supervisor` package scales worker processes.)

Each task reports every finished round of its work with `ok(name)` (a claim round trip, a
heartbeat, a maintenance run). A task that fails FAILURES_BEFORE_UNHEALTHY times in a row,
without a finished round in between, makes the worker unhealthy (`/healthz` answers 503, so
Kubernetes restarts the pod). It keeps being restarted meanwhile, with growing delays, and its
next finished round makes the worker healthy again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from passito_jobs.worker.failures import describe

log = logging.getLogger("passito_jobs.worker")

RESTART_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
FAILURES_BEFORE_UNHEALTHY = 5


class TaskSupervisor:
    """Runs named tasks, restarts one that raises, and says which keep failing."""

    def __init__(
        self,
        *,
        failures_before_unhealthy: int = FAILURES_BEFORE_UNHEALTHY,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self.failures_before_unhealthy = failures_before_unhealthy
        self._on_restart = on_restart
        self._failures: dict[str, int] = {}
        self._last_error: dict[str, str] = {}

    def ok(self, name: str) -> None:
        """`name` finished a round of its work: its failures in a row start again from 0."""
        if self._failures.get(name):
            self._failures[name] = 0

    def problem(self) -> str | None:
        """Why the supervised tasks make the worker unhealthy, or None. Thread-safe enough to be
        read by the probe server's thread (a snapshot of a dict)."""
        for name, count in list(self._failures.items()):
            if count >= self.failures_before_unhealthy:
                return f"the {name} task failed {count} times in a row (last: {self._last_error.get(name)})"
        return None

    async def run(self, name: str, body: Callable[[], Awaitable[None]], *, returns: bool = False) -> None:
        """Run `body()` until cancelled, restarting it after an exception. With `returns`, a
        normal return ends the supervision (the claim loop returns when the worker stops);
        otherwise a return is a failure too (a side task loops forever)."""
        while True:
            try:
                await body()
                if returns:
                    return
                raise RuntimeError(f"the {name} task returned; side tasks run until the worker stops")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                count = self._failures.get(name, 0) + 1
                self._failures[name] = count
                self._last_error[name] = describe(exc)
                delay = RESTART_DELAYS[min(count, len(RESTART_DELAYS)) - 1]
                log.error(
                    "The %s task failed (%d in a row); restarting it in %.1fs: %s",
                    name,
                    count,
                    delay,
                    self._last_error[name],
                    exc_info=exc,
                )
                if self._on_restart is not None:
                    self._on_restart(name)
            await asyncio.sleep(delay)
