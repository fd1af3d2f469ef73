"""The WorkerAutoscaler resource as the autoscaler reads it: its names, the spec with the CRD's
defaults (the policy's numbers, policy.py), the pause annotations, and the target Deployment.
Pure: no I/O. An invalid spec is InvalidSpecError, naming the field as the CRD spells it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from passito_jobs.settings import FieldError
from passito_jobs.supervisor import policy as scaling
from passito_jobs.supervisor.policy import ScalingPolicy

GROUP = "jobs.passito.io"
VERSION = "v1"
PLURAL = "workerautoscalers"
KIND = "WorkerAutoscaler"

PAUSED_ANNOTATION = f"{GROUP}/paused"
PAUSED_REPLICAS_ANNOTATION = f"{GROUP}/paused-replicas"
# On the Deployment: the replicas the autoscaler last set. Any other value there means someone
# else (kubectl scale, an apply) changed them. It is written in the same patch as the replicas.
SCALED_REPLICAS_ANNOTATION = f"{GROUP}/scaled-replicas"

CONDITION_TYPES = ("Ready", "Active", "Paused", "Fallback", "ManualOverride")

# Defaults, the policy's and the CRD's (a test keeps the CRD YAML in step).
DEFAULTS: dict[str, Any] = {
    "minReplicas": scaling.MIN_REPLICAS,
    "maxReplicas": scaling.MAX_REPLICAS,
    "scaleUpThreshold": int(scaling.SCALE_UP_THRESHOLD),
    "scaleDownThreshold": int(scaling.SCALE_DOWN_THRESHOLD),
    "pollingInterval": 10,
    "cooldownPeriod": int(scaling.COOLDOWN),
    "manualOverrideSeconds": 600,
    "failureThreshold": 3,
}
CRD_FIELDS = {
    "min_replicas": "minReplicas",
    "max_replicas": "maxReplicas",
    "scale_up_threshold": "scaleUpThreshold",
    "scale_down_threshold": "scaleDownThreshold",
    "cooldown": "cooldownPeriod",
}
"""ScalingPolicy's fields as the WorkerAutoscaler spells them."""


class InvalidSpecError(ValueError):
    """The WorkerAutoscaler cannot be acted on; the message says which field and why."""


@dataclass(frozen=True)
class AutoscalerSpec:
    target: str
    policy: ScalingPolicy
    polling_interval: float
    queues: tuple[str, ...]
    fallback_replicas: int | None
    failure_threshold: int
    manual_override_seconds: float

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> AutoscalerSpec:
        """Read a spec, filling in the CRD's defaults; InvalidSpecError if it cannot be used."""
        target = _get(spec, "scaleTargetRef", dict, {}).get("name")
        if not isinstance(target, str) or not target:
            raise InvalidSpecError("spec.scaleTargetRef.name must name a Deployment")
        fallback = _get(spec, "fallback", dict, {})
        fallback_replicas = fallback.get("replicas")
        if fallback_replicas is not None and (not _is_int(fallback_replicas) or fallback_replicas < 0):
            raise InvalidSpecError(
                f"spec.fallback.replicas must be a whole number >= 0, got {fallback_replicas!r}"
            )
        failure_threshold = fallback.get("failureThreshold", DEFAULTS["failureThreshold"])
        if not _is_int(failure_threshold) or failure_threshold < 1:
            raise InvalidSpecError(
                f"spec.fallback.failureThreshold must be a whole number >= 1, got {failure_threshold!r}"
            )
        queues = _get(spec, "queues", list, [])
        if not all(isinstance(q, str) and q for q in queues):
            raise InvalidSpecError("spec.queues must be a list of queue names")
        polling = _number(spec, "pollingInterval")
        override = _number(spec, "manualOverrideSeconds")
        if polling <= 0:
            raise InvalidSpecError(f"spec.pollingInterval must be positive, got {polling:g}")
        if override < 0:
            raise InvalidSpecError(f"spec.manualOverrideSeconds must not be negative, got {override:g}")
        try:
            policy = ScalingPolicy(
                min_replicas=_whole(spec, "minReplicas"),
                max_replicas=_whole(spec, "maxReplicas"),
                scale_up_threshold=_number(spec, "scaleUpThreshold"),
                scale_down_threshold=_number(spec, "scaleDownThreshold"),
                cooldown=_number(spec, "cooldownPeriod"),
            )
        except FieldError as exc:
            raise InvalidSpecError(exc.render(lambda name: CRD_FIELDS.get(name, name))) from None
        return cls(
            target=target,
            policy=policy,
            polling_interval=polling,
            queues=tuple(queues),
            fallback_replicas=fallback_replicas,
            failure_threshold=failure_threshold,
            manual_override_seconds=override,
        )


@dataclass(frozen=True)
class Pause:
    """What the pause annotations on the WorkerAutoscaler ask for."""

    paused: bool = False
    replicas: int | None = None

    @property
    def active(self) -> bool:
        return self.paused or self.replicas is not None

    @classmethod
    def parse(cls, annotations: Mapping[str, str]) -> Pause:
        paused = annotations.get(PAUSED_ANNOTATION, "").strip().lower() == "true"
        raw = annotations.get(PAUSED_REPLICAS_ANNOTATION)
        if raw is None:
            return cls(paused=paused)
        try:
            replicas = int(raw.strip())
        except ValueError:
            replicas = -1
        if replicas < 0:
            raise InvalidSpecError(
                f'annotation {PAUSED_REPLICAS_ANNOTATION} must be a whole number >= 0, got "{raw}"'
            )
        return cls(paused=paused, replicas=replicas)


@dataclass(frozen=True)
class Target:
    """The Deployment as read: its replicas and the replicas the autoscaler last set there."""

    replicas: int
    scaled_replicas: int | None = None

    @classmethod
    def from_deployment(cls, deployment: Mapping[str, Any]) -> Target:
        replicas = (deployment.get("spec") or {}).get("replicas")
        annotations = (deployment.get("metadata") or {}).get("annotations") or {}
        try:
            scaled: int | None = int(annotations[SCALED_REPLICAS_ANNOTATION])
        except (KeyError, ValueError, TypeError):
            scaled = None
        # An absent spec.replicas means 1 (the Deployment default).
        return cls(replicas=replicas if isinstance(replicas, int) else 1, scaled_replicas=scaled)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _get(spec: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = spec.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise InvalidSpecError(f"spec.{key} must be a {'list' if kind is list else 'mapping'}")
    return value


def _number(spec: Mapping[str, Any], key: str) -> float:
    value = spec.get(key, DEFAULTS[key])
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidSpecError(f"spec.{key} must be a number, got {value!r}")
    return float(value)


def _whole(spec: Mapping[str, Any], key: str) -> int:
    value = spec.get(key, DEFAULTS[key])
    if not _is_int(value):
        raise InvalidSpecError(f"spec.{key} must be a whole number, got {value!r}")
    return int(value)
