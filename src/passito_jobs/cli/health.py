"""`passito-jobs health` (the checks, a report, an exit code) and `health serve` (the exporter)."""

from __future__ import annotations

import argparse
import threading
from typing import Any

from passito_jobs.cli.options import (
    CommandError,
    DeprecatedFlag,
    Flag,
    add_flags,
    apply_flags,
    database_url,
    duration,
    given_flags,
    open_store,
    port,
    print_json,
    ratio,
    spelling,
)
from passito_jobs.config import Settings
from passito_jobs.settings import FieldError

CHECK_FLAGS = (
    Flag(
        "--stale-after",
        "health",
        "stale_after",
        "ready but not started for this long is stale",
        duration,
        "DURATION",
    ),
    Flag(
        "--stuck-after",
        "maintenance",
        "stuck_after",
        "processing without a heartbeat for this long is stuck",
        duration,
        "DURATION",
    ),
    Flag(
        "--max-failure-ratio",
        "health",
        "max_failure_ratio",
        "highest healthy failure ratio, failed among finished jobs",
        ratio,
        "RATIO",
    ),
    Flag("--window", "health", "window", "history the failure ratio covers", duration, "DURATION"),
)
SERVE_FLAGS = (
    Flag(
        "--port",
        "health",
        "port",
        "HTTP port for /metrics, /healthz, /readyz; 0 picks a free one",
        port,
        "PORT",
    ),
)
# Thresholds' fields as the settings name them (and so as flags and variables spell them).
_THRESHOLDS = {
    "stale_after": ("health", "stale_after"),
    "stuck_after": ("maintenance", "stuck_after"),
    "max_failure_ratio": ("health", "max_failure_ratio"),
    "window": ("health", "window"),
}


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "health",
        help="check the queue (stale, stuck, failure ratio); `health serve` exports queue metrics",
        description="Check stale pending jobs, stuck processing jobs and the failure ratio, and print "
        "a report. Exit 0 (1 with --exit-code-on-failure when unhealthy); 2 when the database "
        "cannot be checked.",
    )
    p.add_argument("--json", action="store_true", help="print JSON with a per-queue breakdown")
    add_flags(p, CHECK_FLAGS)
    p.add_argument(
        "--max-failure-rate",
        dest="health.max_failure_ratio",
        type=ratio,
        action=DeprecatedFlag,
        use="--max-failure-ratio",
        help=argparse.SUPPRESS,
    )
    p.add_argument(
        "--rescue",
        action="store_true",
        help="return stuck jobs to pending (or fail them on their last attempt), as the workers' rescue does",
    )
    p.add_argument(
        "--recover", dest="rescue", nargs=0, action=DeprecatedFlag, use="--rescue", help=argparse.SUPPRESS
    )
    p.add_argument(
        "--exit-code-on-failure",
        action="store_true",
        help="exit 1 when the queue is unhealthy (for a CronJob)",
    )
    p.set_defaults(func=cmd_health)
    hsub = p.add_subparsers(dest="health_command", metavar="[serve]", parser_class=type(p))
    s = hsub.add_parser("serve", help="serve queue gauges for Prometheus on /metrics")
    add_flags(s, SERVE_FLAGS)
    s.set_defaults(func=cmd_health_serve)


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.health.checks import Thresholds  # noqa: PLC0415
    from passito_jobs.health.report import HealthCheckError, render_text, run_checks, to_json  # noqa: PLC0415

    given = given_flags(args)
    values = {
        name: given.get(group, {}).get(field, getattr(getattr(settings, group), field))
        for name, (group, field) in _THRESHOLDS.items()
    }
    try:
        thresholds = Thresholds(**values)
    except FieldError as exc:
        group, _ = _THRESHOLDS[exc.field]
        spell = spelling(given, group, getattr(settings, group).spelled())
        raise CommandError(
            exc.render(lambda name: spell(_THRESHOLDS.get(name, (group, name))[1])), code=2
        ) from None
    # The flags meet the rules between settings too: a --stuck-after no longer than the workers'
    # heartbeat interval would call running jobs stuck (and --rescue would run them twice).
    settings = apply_flags(args, settings)
    try:
        with open_store(settings) as store:
            report = run_checks(
                store,
                thresholds,
                timeout=settings.health.query_timeout,
                rescue=args.rescue,
                worker_id=f"health:{settings.worker.name}",
            )
    except HealthCheckError as exc:
        raise CommandError(str(exc), code=2) from None
    if args.json:
        print_json(to_json(report))
    else:
        print(render_text(report))
    return 1 if args.exit_code_on_failure and not report.healthy else 0


def cmd_health_serve(args: argparse.Namespace, settings: Settings) -> int:
    from passito_jobs.cli import stop_on_signals  # noqa: PLC0415 - the package imports this module
    from passito_jobs.health.exporter import serve  # noqa: PLC0415

    health = settings.health
    port_given = given_flags(args).get("health", {}).get("port")
    listen_port = health.port if port_given is None else port_given
    stop = threading.Event()
    stop_on_signals(lambda _: stop.set())
    try:
        return serve(
            health,
            database_url=database_url(settings),
            stuck_after=settings.maintenance.stuck_after,
            connect_timeout=settings.database.connect_timeout,
            prepare=settings.database.prepare,
            port=listen_port,
            stop=stop,
        )
    except OSError as exc:
        raise CommandError(
            f"cannot serve metrics on port {listen_port}: {exc.strerror or exc}", code=2
        ) from None
