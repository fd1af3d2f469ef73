"""`passito-jobs worker` and `passito-jobs supervise` (local workers scaled to the load).

Both take the worker process flags (`WORKER_PROCESS_FLAGS`, declared once): the queues, the
concurrency and the job modules of the workers they run.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from passito_jobs.cli.options import (
    CommandError,
    Flag,
    add_flags,
    apply_flags,
    database_url,
    duration,
    given_flags,
    import_job_modules,
    int_between,
    names,
    non_negative_number,
    port,
    positive_number,
    require_schema,
    spelling,
)
from passito_jobs.config import Settings
from passito_jobs.settings import MAX_WORKERS, FieldError
from passito_jobs.supervisor.policy import ScalingPolicy
from passito_jobs.supervisor.settings import POLICY_FIELDS

log = logging.getLogger("passito_jobs.worker")

WORKER_PROCESS_FLAGS = (
    Flag(
        "--queues", "worker", "queues", "queues to take jobs from, comma-separated; empty: all", names, "A,B"
    ),
    Flag(
        "--concurrency",
        "worker",
        "concurrency",
        "jobs one worker runs at once",
        int_between(1, MAX_WORKERS),
        "N",
    ),
)
WORKER_ONLY_FLAGS = (
    Flag(
        "--batch-size",
        "worker",
        "batch_size",
        "most jobs claimed per round trip",
        int_between(1, 10_000),
        "N",
    ),
    Flag(
        "--metrics-port",
        "worker",
        "metrics_port",
        "HTTP port for /metrics, /healthz, /readyz; 0 disables",
        port,
        "PORT",
    ),
    Flag(
        "--log-jobs",
        "worker",
        "log_jobs",
        "log a line per job start and end",
        action=argparse.BooleanOptionalAction,
    ),
    Flag(
        "--shutdown-timeout",
        "worker",
        "shutdown_timeout",
        "on SIGTERM, time for in-flight jobs to finish",
        duration,
        "DURATION",
    ),
)
SUPERVISE_FLAGS = (
    Flag(
        "--min-workers",
        "supervise",
        "min_workers",
        "fewest workers, 0 allowed",
        int_between(0, MAX_WORKERS),
        "N",
    ),
    Flag("--max-workers", "supervise", "max_workers", "most workers", int_between(1, MAX_WORKERS), "N"),
    Flag(
        "--scale-up-threshold",
        "supervise",
        "scale_up_threshold",
        "load per worker (ready plus in-flight jobs) above which workers are added",
        positive_number,
        "JOBS",
    ),
    Flag(
        "--scale-down-threshold",
        "supervise",
        "scale_down_threshold",
        "load per worker below which workers are stopped",
        non_negative_number,
        "JOBS",
    ),
    Flag("--check-interval", "supervise", "check_interval", "time between load checks", duration, "DURATION"),
    Flag(
        "--cooldown",
        "supervise",
        "cooldown",
        "least time between a scale and a scale-down",
        duration,
        "DURATION",
    ),
)


def _add_imports(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument(
        "--import", dest="imports", action="append", default=[], metavar="MODULE", help=help_text
    )


def add_commands(sub: Any) -> None:
    p = sub.add_parser("worker", help="run a worker process")
    add_flags(p, WORKER_PROCESS_FLAGS)
    _add_imports(
        p,
        "import a module that registers job types, e.g. passito_jobs.outpass "
        "(repeatable; PASSITO_JOB_MODULES, default: none)",
    )
    add_flags(p, WORKER_ONLY_FLAGS)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("supervise", help="run local worker processes scaled to the queue")
    add_flags(p, SUPERVISE_FLAGS)
    add_flags(p, WORKER_PROCESS_FLAGS)
    _add_imports(p, "module that registers job types, passed to each worker (repeatable; default: none)")
    p.set_defaults(func=cmd_supervise)


def _with_job_modules(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings with the flags, and the --import modules added to PASSITO_JOB_MODULES."""
    settings = apply_flags(args, settings)
    modules = tuple(dict.fromkeys([*settings.worker.job_modules, *args.imports]))
    return settings.replace(worker=settings.worker.replace(job_modules=modules))


def load_job_modules(modules: tuple[str, ...], schedules_file: Path | None = None) -> None:
    """Import the job modules and read the settings of their job types, once, and the schedules
    file: a module that does not import, a job type's missing setting (PASSITO_SECRET_KEY for
    Passito's) or a bad schedule stops the command here, with one line."""
    from passito_jobs.registry import registry  # noqa: PLC0415
    from passito_jobs.worker.scheduler import read_schedules_file  # noqa: PLC0415

    import_job_modules(modules)
    registry.configure()
    if schedules_file is not None:
        for schedule in read_schedules_file(schedules_file):
            registry.add_schedule(schedule)
    for schedule in registry.schedules():
        if schedule.type not in registry:
            log.warning(
                "Schedule %s dispatches job type %s, which this worker does not run",
                schedule.name,
                schedule.type,
            )


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    settings = _with_job_modules(args, settings)
    load_job_modules(settings.worker.job_modules, settings.worker.schedules_file)
    return run_worker(settings, database_url(settings))


def run_worker(settings: Settings, url: str) -> int:
    """Run until SIGTERM/SIGINT; a second signal exits at once. Returns the exit code."""
    from passito_jobs.cli import stop_on_signals  # noqa: PLC0415 - the package imports this module
    from passito_jobs.httpserver import ProbeServer  # noqa: PLC0415
    from passito_jobs.queue.errors import SchemaMissingError  # noqa: PLC0415
    from passito_jobs.registry import registry  # noqa: PLC0415
    from passito_jobs.tracing import Tracing, TracingConfigError  # noqa: PLC0415
    from passito_jobs.worker.runtime import Worker  # noqa: PLC0415 - keeps `dispatch` light

    worker_settings = settings.worker
    try:
        worker = Worker(
            worker_settings,
            settings.maintenance,
            database_url=url,
            connect_timeout=settings.database.connect_timeout,
            listen=settings.database.listen,
            registry=registry,
            tracing=Tracing.from_env,
        )
    except TracingConfigError as exc:
        raise CommandError(str(exc), code=2) from None
    try:
        worker.check_schema()
    except SchemaMissingError as exc:
        raise CommandError(str(exc), code=2) from None
    probes = None
    if worker_settings.metrics_port:
        try:
            probes = ProbeServer(
                worker_settings.metrics_port, ready=lambda: worker.ready, live=worker.health_problem
            )
        except OSError as exc:
            message = f"cannot serve metrics on port {worker_settings.metrics_port}: {exc.strerror or exc}"
            raise CommandError(message, code=2) from None
        log.info("Serving /metrics, /healthz and /readyz on port %d", probes.port)
    log.info("Job types: %s", ", ".join(registry.names()))
    if registry.schedules():
        log.info("Schedules: %s", ", ".join(s.name for s in registry.schedules()))

    def first(signum: int) -> None:
        log.info("Received %s", signal.Signals(signum).name)
        worker.stop()

    def second(signum: int) -> None:
        log.warning("Second signal: exiting now; unfinished jobs are rescued after PASSITO_STUCK_AFTER")
        logging.shutdown()
        os._exit(1)

    stop_on_signals(first, second)
    try:
        _run_until_stopped(worker.run())
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


def cmd_supervise(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.cli import stop_on_signals  # noqa: PLC0415 - the package imports this module
    from passito_jobs.supervisor.local import LocalSupervisor  # noqa: PLC0415

    policy = _policy(args, settings)
    settings = _with_job_modules(args, settings)
    load_job_modules(settings.worker.job_modules)  # fail here, once, rather than in every worker
    require_schema(settings)  # an unreachable or unmigrated database, too
    worker_args = [arg for module in settings.worker.job_modules for arg in ("--import", module)]
    if "concurrency" in given_flags(args).get("worker", {}):
        worker_args += ["--concurrency", str(settings.worker.concurrency)]
    supervisor = LocalSupervisor(
        policy,
        database_url=database_url(settings),
        check_interval=settings.supervise.check_interval,
        queues=settings.worker.queues,
        worker_args=worker_args,
        shutdown_timeout=settings.worker.shutdown_timeout,
        prepare=settings.database.prepare,
    )
    stop = threading.Event()
    stop_on_signals(lambda _: stop.set())
    return supervisor.run(stop)


def _policy(args: argparse.Namespace, settings: Settings) -> ScalingPolicy:
    """The scaling policy of the flags and settings, by the policy's own rules; a problem names
    each field as the user gave it (`--min-workers (5) must not exceed PASSITO_MAX_WORKERS (2)`)."""
    given = given_flags(args)
    values = {field: getattr(settings.supervise, field) for field in POLICY_FIELDS.values()}
    values.update(given.get("supervise", {}))
    try:
        return ScalingPolicy(**{name: values[field] for name, field in POLICY_FIELDS.items()})
    except FieldError as exc:
        spell = spelling(given, "supervise", settings.supervise.spelled())
        raise CommandError(exc.render(lambda name: spell(POLICY_FIELDS.get(name, name))), code=2) from None
