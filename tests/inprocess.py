"""A real Worker run inside the test process: its event loop on a background thread.

The worker talks to the test's real PostgreSQL like a worker process does; the test can read
its state (health, abandoned attempts, metrics) directly and feed handlers in-process.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

from prometheus_client import CollectorRegistry

from passito_jobs.registry import Registry
from passito_jobs.registry import registry as default_registry
from passito_jobs.worker.metrics import WorkerMetrics
from passito_jobs.worker.runtime import Worker
from passito_jobs.worker.settings import MaintenanceSettings, WorkerSettings
from tests.helpers import wait_for

_names = itertools.count(1)
# Loops left with an abandoned handler that ignores cancellation: kept, never closed or collected,
# as a worker process leaves them to os._exit.
_abandoned_loops: list[tuple[asyncio.AbstractEventLoop, set[asyncio.Task[Any]]]] = []


class InProcessWorker:
    """`Worker.run()` on its own event loop in a daemon thread, started and stopped by the test."""

    def __init__(
        self,
        database_url: str,
        *,
        registry: Registry | None = None,
        maintenance: dict[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        """`settings`: fields of WorkerSettings; `maintenance`: fields of MaintenanceSettings."""
        base = {"worker_name": f"inprocess-{next(_names)}", "metrics_port": 0, "log_jobs": False}
        self.settings = WorkerSettings().replace(**{**base, **settings})
        self.maintenance = MaintenanceSettings().replace(**(maintenance or {}))
        self.metrics_registry = CollectorRegistry()
        self.worker = Worker(
            self.settings,
            self.maintenance,
            database_url=database_url,
            registry=registry or default_registry,
            metrics=WorkerMetrics(self.metrics_registry),
        )
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=self.settings.worker_name, daemon=True)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self.worker.run())
        except BaseException as exc:  # the test asserts on it
            self.error = exc
        finally:
            # Like `passito-jobs worker`: an abandoned handler that ignores cancellation is left
            # behind (the thread is a daemon), never waited for.
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            leftover = asyncio.all_tasks(loop)
            if leftover:
                _abandoned_loops.append((loop, leftover))
            else:
                loop.close()

    def __enter__(self) -> InProcessWorker:
        self._thread.start()
        wait_for(lambda: self.worker.ready or not self._thread.is_alive(), message="the worker to connect")
        assert self._thread.is_alive(), f"the worker did not start: {self.error!r}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 60) -> None:
        if self._thread.is_alive():
            self.worker.stop()
            self._thread.join(timeout)
        assert not self._thread.is_alive(), "the worker did not stop"
        assert self.error is None, f"the worker failed: {self.error!r}"

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        value = self.metrics_registry.get_sample_value(name, labels or {})
        return 0.0 if value is None else value
