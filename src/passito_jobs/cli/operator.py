"""`passito-jobs operator`: the kopf operator that scales worker Deployments (WorkerAutoscaler)."""

from __future__ import annotations

import argparse
from typing import Any

from passito_jobs.cli.options import CommandError, Flag, add_flags, apply_flags, names, port
from passito_jobs.config import Settings

OPERATOR_FLAGS = (
    Flag(
        "--namespaces",
        "operator",
        "namespaces",
        "namespaces to serve, comma-separated; empty: all",
        names,
        "A,B",
    ),
    Flag("--metrics-port", "operator", "metrics_port", "Prometheus /metrics port, 0 disables", port, "PORT"),
    Flag(
        "--liveness-port",
        "operator",
        "liveness_port",
        "liveness probe /healthz port, 0 disables",
        port,
        "PORT",
    ),
)


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "operator",
        help="run the Kubernetes operator that scales worker Deployments (WorkerAutoscaler)",
        description="Scales each WorkerAutoscaler's Deployment to the queue (docs/scaling.md). "
        "Runs as a single replica; needs PASSITO_DATABASE_URL.",
    )
    add_flags(p, OPERATOR_FLAGS)
    p.set_defaults(func=cmd_operator)


def cmd_operator(args: argparse.Namespace, settings: Settings) -> int:
    settings = apply_flags(args, settings)
    if not settings.database.url:
        raise CommandError(
            "PASSITO_DATABASE_URL must be set: the operator reads the queue from it "
            "(it never starts an embedded PostgreSQL)",
            code=2,
        )
    from passito_jobs.supervisor.kube import ClusterUnavailableError, check_cluster  # noqa: PLC0415
    from passito_jobs.supervisor.operator import OperatorConfig, run_operator  # noqa: PLC0415 - kopf is heavy

    config = OperatorConfig(settings.operator, settings.database)
    try:
        check_cluster(settings.operator.kube_server, settings.database.connect_timeout)
        return run_operator(config)
    except ClusterUnavailableError as exc:
        raise CommandError(str(exc), code=2) from None
