"""`passito-jobs worker`: run a Worker with signals, probes and metrics wired up."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from passito_jobs.config import Settings
from passito_jobs.httpserver import ProbeServer
from passito_jobs.jobs import registry
from passito_jobs.jobs.tokens import signing_key
from passito_jobs.worker.runtime import SchemaMissingError, Worker

log = logging.getLogger("passito_jobs.worker")


def _run_until_stopped(main: Coroutine[Any, Any, None]) -> None:
    """asyncio.run without its final "cancel every task and wait for it": an abandoned async
    handler that ignores cancellation would make that wait forever."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()  # a well-behaved leftover ends here; the others are left to os._exit
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def run_worker(settings: Settings, database_url: str) -> int:
    """Run until SIGTERM/SIGINT; a second signal exits at once. Returns the exit code."""
    # Every worker can run the signing job types: refuse to start without a key (ConfigError).
    signing_key(settings, warn=True)
    worker = Worker(settings, database_url=database_url, registry=registry)
    try:
        worker.check_schema()
    except SchemaMissingError as exc:
        print(f"passito-jobs: error: {exc}", file=sys.stderr)
        return 2
    probes = None
    if settings.metrics_port:
        try:
            probes = ProbeServer(
                settings.metrics_port, ready=lambda: worker.ready, live=worker.health_problem
            )
        except OSError as exc:
            print(
                f"passito-jobs: error: cannot serve metrics on port {settings.metrics_port}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
        log.info("Serving /metrics, /healthz and /readyz on port %d", probes.port)
    log.info("Job types: %s", ", ".join(registry.names()))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        signals_seen = 0

        def on_signal(signum: int) -> None:
            nonlocal signals_seen
            signals_seen += 1
            if signals_seen == 1:
                log.info("Received %s", signal.Signals(signum).name)
                worker.stop()
            else:
                log.warning(
                    "Second signal: exiting now; unfinished jobs are rescued after PASSITO_STUCK_TIMEOUT"
                )
                logging.shutdown()
                os._exit(1)

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        await worker.run()

    try:
        _run_until_stopped(main())
    finally:
        if probes is not None:
            probes.close()
    code = 1 if worker.exit_reason else 0
    if worker.abandoned:
        # Threads of timed-out sync handlers cannot be stopped, nor can an async handler that
        # ignores cancellation; do not wait for them at exit.
        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    return code
