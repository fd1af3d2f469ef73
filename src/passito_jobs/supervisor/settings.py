"""The settings groups of the two scalers: the local supervisor (`passito-jobs supervise`) and
the operator (`passito-jobs operator`). Their defaults are the scaling policy's (policy.py)."""

from __future__ import annotations

from dataclasses import dataclass

from passito_jobs.settings import (
    MAX_WORKERS,
    SettingsGroup,
    between,
    loop_interval,
    not_negative,
    parse_duration,
    parse_float,
    parse_int,
    parse_list,
    parse_optional_str,
    port_number,
    positive,
    setting,
)
from passito_jobs.supervisor import policy


@dataclass(frozen=True)
class LocalSupervisorSettings(SettingsGroup):
    """`passito-jobs supervise`: local worker processes scaled to the load."""

    GROUP = "Local supervisor"

    min_workers: int = setting(
        "PASSITO_MIN_WORKERS",
        policy.MIN_REPLICAS,
        "Fewest worker processes the local supervisor keeps (0 allowed).",
        parse=parse_int,
        check=not_negative,
    )
    max_workers: int = setting(
        "PASSITO_MAX_WORKERS",
        policy.MAX_REPLICAS,
        "Most worker processes the local supervisor runs.",
        parse=parse_int,
        check=between(0, MAX_WORKERS),
    )
    scale_up_threshold: float = setting(
        "PASSITO_SCALE_UP_THRESHOLD",
        policy.SCALE_UP_THRESHOLD,
        "Load (ready plus in-flight jobs) per worker above which workers are added (at once).",
        parse=parse_float,
        check=positive,
    )
    scale_down_threshold: float = setting(
        "PASSITO_SCALE_DOWN_THRESHOLD",
        policy.SCALE_DOWN_THRESHOLD,
        "Load per worker below which workers are stopped (after the cooldown).",
        parse=parse_float,
    )
    check_interval: float = setting(
        "PASSITO_CHECK_INTERVAL",
        10.0,
        "Seconds between the local supervisor's load checks.",
        parse=parse_duration,
        check=loop_interval,
    )
    cooldown: float = setting(
        "PASSITO_COOLDOWN",
        policy.COOLDOWN,
        "Least time between a scale and a scale-down.",
        parse=parse_duration,
        check=not_negative,
    )

    def checks(self) -> list[tuple[bool, str, str]]:
        return [
            (
                self.max_workers >= max(1, self.min_workers),
                "max_workers",
                "{max_workers} must be at least 1 and not below {min_workers}",
            ),
            (
                0 <= self.scale_down_threshold <= self.scale_up_threshold,
                "scale_down_threshold",
                "{scale_down_threshold} must be between 0 and {scale_up_threshold}",
            ),
        ]

    def policy(self) -> policy.ScalingPolicy:
        return policy.ScalingPolicy(
            min_replicas=self.min_workers,
            max_replicas=self.max_workers,
            scale_up_threshold=self.scale_up_threshold,
            scale_down_threshold=self.scale_down_threshold,
            cooldown=self.cooldown,
        )


POLICY_FIELDS = {
    "min_replicas": "min_workers",
    "max_replicas": "max_workers",
    "scale_up_threshold": "scale_up_threshold",
    "scale_down_threshold": "scale_down_threshold",
    "cooldown": "cooldown",
}
"""ScalingPolicy's fields as the local supervisor's settings name them."""


@dataclass(frozen=True)
class OperatorSettings(SettingsGroup):
    """`passito-jobs operator`: the kopf operator of WorkerAutoscaler resources."""

    GROUP = "Operator"

    namespaces: tuple[str, ...] = setting(
        "PASSITO_OPERATOR_NAMESPACES",
        (),
        "Comma-separated namespaces whose WorkerAutoscalers the operator serves; empty means "
        "every namespace (cluster-wide).",
        parse=parse_list,
    )
    metrics_port: int = setting(
        "PASSITO_OPERATOR_METRICS_PORT",
        9102,
        "Port of the operator's Prometheus /metrics; 0 disables it.",
        parse=parse_int,
        check=port_number,
    )
    liveness_port: int = setting(
        "PASSITO_OPERATOR_LIVENESS_PORT",
        8080,
        "Port of the operator's liveness probe (kopf's /healthz); 0 disables it.",
        parse=parse_int,
        check=port_number,
    )
    kube_server: str | None = setting(
        "PASSITO_KUBE_SERVER",
        None,
        "Kubernetes API URL used instead of the service account or kubeconfig, without TLS "
        "verification: for tests against an API emulator only.",
        parse=parse_optional_str,
    )
