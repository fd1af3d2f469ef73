"""One poll of a WorkerAutoscaler, as a pure function: what it saw in, what to do out.

The operator (`operator.py`) gathers an `Observation` (the custom resource, the Deployment, the
queue load) and applies the `Outcome` (patch the Deployment, write the status, post Events,
update metrics). Everything between — the overrides and `policy.decide` — is here, without I/O,
so each rule has a unit test. All state lives in the status and on the Deployment, so an operator
restart (or a second operator during a rollout) continues where the last poll stopped.

Precedence: an invalid spec or a missing Deployment stops the poll; then the pause annotations;
then a manual replica change (held for manualOverrideSeconds); then the database fallback; then
the policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from passito_jobs.settings import FieldError
from passito_jobs.supervisor import policy as scaling
from passito_jobs.supervisor.policy import Direction, ScalingPolicy, decide

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


@dataclass(frozen=True)
class Observation:
    """Everything one poll read."""

    spec: Mapping[str, Any]
    annotations: Mapping[str, str]
    status: Mapping[str, Any]
    generation: int | None
    target: Target | None  # None: the Deployment does not exist
    load: int | None  # None: the database could not be read
    load_error: str = ""
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Outcome:
    """What to do: patch the Deployment to `scale_to` (with the annotation), write `status`."""

    status: dict[str, Any]
    events: list[Event]
    scale_to: int | None = None
    direction: Direction = Direction.NONE
    polling_interval: float = float(DEFAULTS["pollingInterval"])

    def condition(self, kind: str) -> str | None:
        """The status (True, False, Unknown) of one condition."""
        return _condition_status(self.status, kind)


def polling_interval(spec: Mapping[str, Any]) -> float:
    """spec.pollingInterval, or its default when it is missing or unusable."""
    value = spec.get("pollingInterval")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 86400:
        return float(value)
    return float(DEFAULTS["pollingInterval"])


def reconcile(obs: Observation) -> Outcome:
    """Decide one poll. Pure: same observation, same outcome."""
    return _Poll(obs).run()


class _Poll:
    def __init__(self, obs: Observation) -> None:
        self.obs = obs
        self.now = obs.now
        self.previous = obs.status
        self.events: list[Event] = []
        self.conditions = _Conditions(obs.status, obs.now, obs.generation)
        self.status: dict[str, Any] = {
            key: obs.status.get(key)
            for key in (
                "load",
                "currentReplicas",
                "desiredReplicas",
                "lastScaleTime",
                "lastScaleReason",
                "manualOverrideReplicas",
                "manualOverrideUntil",
            )
        }
        self.status["observedGeneration"] = obs.generation
        failures = int(obs.status.get("databaseFailures") or 0)
        self.failures = 0 if obs.load is not None else failures + 1
        self.status["databaseFailures"] = self.failures
        if obs.load is not None:
            self.status["load"] = obs.load
        self.scale_to: int | None = None
        self.direction = Direction.NONE

    # ------------------------------------------------------------ the rules, in order

    def run(self) -> Outcome:
        try:
            spec = AutoscalerSpec.parse(self.obs.spec)
            pause = Pause.parse(self.obs.annotations)
        except InvalidSpecError as exc:
            self._problem("InvalidSpec", str(exc))
            return self._outcome(polling_interval(self.obs.spec))
        self._database_conditions()
        target = self.obs.target
        if target is None:
            self._problem("TargetNotFound", f"Deployment {spec.target} not found")
            return self._outcome(spec.polling_interval)
        self.status["currentReplicas"] = target.replicas
        self.status["desiredReplicas"] = target.replicas
        if pause.active:
            self._paused(pause, target)
        else:
            owned = self._resume_or_hold(spec, target)
            if owned is None:
                pass  # a manual change is being respected
            elif self.obs.load is None:
                self._database_down(spec, owned)
            else:
                self._autoscale(spec, owned, self.obs.load)
        if "Ready" not in self.conditions.current:
            self.conditions.set("Ready", "True", "Scaling", "the autoscaler is in control")
        return self._outcome(spec.polling_interval)

    def _paused(self, pause: Pause, target: Target) -> None:
        if pause.replicas is not None:
            reason = f"paused at {pause.replicas} replicas by annotation {PAUSED_REPLICAS_ANNOTATION}"
            message = f"paused at {pause.replicas} replicas ({PAUSED_REPLICAS_ANNOTATION})"
            self._apply(target, pause.replicas, reason)
        else:
            message = f"paused by annotation {PAUSED_ANNOTATION}: replicas left at {target.replicas}"
        if self.conditions.set("Paused", "True", "PausedByAnnotation", message):
            self.events.append(Event("Normal", "Paused", message))
        self._end_manual_override("NoManualChange")

    def _resume_or_hold(self, spec: AutoscalerSpec, target: Target) -> Target | None:
        """The Deployment as the autoscaler may treat it, or None while a manual change is held.

        Replicas found after a pause or after an expired hold become the autoscaler's own: the
        annotation is rewritten to them (`_adopt`), so they do not look like a new manual change.
        """
        if self.conditions.status("Paused") == "True":
            self.conditions.set("Paused", "False", "NotPaused", "")
            self.events.append(Event("Normal", "Resumed", "pause annotations removed: autoscaling resumed"))
            self._end_manual_override("NoManualChange")
            return self._adopt(target)
        self.conditions.set("Paused", "False", "NotPaused", "")
        if target.scaled_replicas is None or target.replicas == target.scaled_replicas:
            self._end_manual_override("NoManualChange")
            return target
        until = _parse_time(self.previous.get("manualOverrideUntil"))
        if self.previous.get("manualOverrideReplicas") != target.replicas or until is None:
            until = self.now + timedelta(seconds=spec.manual_override_seconds)
            self.status["manualOverrideReplicas"] = target.replicas
            self.status["manualOverrideUntil"] = _format_instant(until)
            self.events.append(
                Event(
                    "Normal",
                    "ManualOverride",
                    f"replicas changed from {target.scaled_replicas} to {target.replicas} by someone "
                    f"else: leaving them for {spec.manual_override_seconds:g}s",
                )
            )
        if self.now < until:
            self.conditions.set(
                "ManualOverride",
                "True",
                "ReplicasChangedManually",
                f"holding {target.replicas} replicas until {_format_time(until)}",
            )
            return None
        self.events.append(
            Event(
                "Normal",
                "ManualOverrideEnded",
                f"manual override of {target.replicas} replicas expired: autoscaling resumed",
            )
        )
        self._end_manual_override("OverrideExpired")
        return self._adopt(target)

    def _adopt(self, target: Target) -> Target:
        if target.scaled_replicas == target.replicas:
            return target
        self.scale_to = target.replicas
        return Target(target.replicas, scaled_replicas=target.replicas)

    def _database_down(self, spec: AutoscalerSpec, target: Target) -> None:
        if self.failures < spec.failure_threshold:
            return
        if spec.fallback_replicas is not None:
            message = (
                f"database unreachable {self.failures} times in a row: "
                f"fallback to {spec.fallback_replicas} replicas"
            )
            self._apply(target, spec.fallback_replicas, "database unreachable, fallback.replicas")
        else:
            message = (
                f"database unreachable {self.failures} times in a row and no fallback.replicas: "
                f"keeping {target.replicas} replicas"
            )
        if self.conditions.set("Fallback", "True", "DatabaseUnavailable", message):
            self.events.append(Event("Warning", "Fallback", message))

    def _autoscale(self, spec: AutoscalerSpec, target: Target, load: int) -> None:
        if self.conditions.status("Fallback") == "True":
            self.events.append(
                Event("Normal", "FallbackEnded", "database reachable again: autoscaling resumed")
            )
        self.conditions.set("Fallback", "False", "DatabaseReachable", "")
        last = _parse_time(self.previous.get("lastScaleTime"))
        decision = decide(
            spec.policy,
            load=load,
            current=target.replicas,
            now=self.now.timestamp(),
            last_scale_time=None if last is None else last.timestamp(),
        )
        self._apply(target, decision.desired, decision.reason)
        self.conditions.set("Ready", "True", "Scaling", decision.reason)

    # ------------------------------------------------------------ helpers

    def _apply(self, target: Target, desired: int, reason: str) -> None:
        """Set the Deployment to `desired` (and claim it with the annotation) if needed."""
        self.status["desiredReplicas"] = desired
        if desired == target.replicas and target.scaled_replicas == desired:
            return  # nothing to change (an adoption already set scale_to)
        self.scale_to = desired
        self.status["currentReplicas"] = desired
        if desired == target.replicas:
            return  # only the annotation was missing: adopting the replicas found
        self.direction = Direction.UP if desired > target.replicas else Direction.DOWN
        message = f"{target.replicas} -> {desired} ({reason})"
        self.events.append(
            Event("Normal", "ScaledUp" if desired > target.replicas else "ScaledDown", message)
        )
        self.status["lastScaleTime"] = _format_instant(self.now)
        self.status["lastScaleReason"] = message

    def _database_conditions(self) -> None:
        load = self.obs.load
        if load is None:
            message = f"cannot read the queue ({self.obs.load_error}); {self.failures} failure(s) in a row"
            if self.conditions.set("Ready", "False", "DatabaseUnavailable", message):
                self.events.append(Event("Warning", "DatabaseUnavailable", message))
            self.conditions.set("Active", "Unknown", "DatabaseUnavailable", "")
        elif load > 0:
            self.conditions.set("Active", "True", "JobsWaiting", f"{load} job(s) ready or in flight")
        else:
            self.conditions.set("Active", "False", "NoJobs", "no job ready or in flight")

    def _problem(self, reason: str, message: str) -> None:
        if self.conditions.set("Ready", "False", reason, message):
            self.events.append(Event("Warning", reason, message))

    def _end_manual_override(self, reason: str) -> None:
        self.status["manualOverrideReplicas"] = None
        self.status["manualOverrideUntil"] = None
        self.conditions.set("ManualOverride", "False", reason, "")

    def _outcome(self, polling_interval: float) -> Outcome:
        for kind in CONDITION_TYPES:
            if self.conditions.status(kind) is None:
                self.conditions.set(kind, "Unknown", "NotYetObserved", "")
        self.status["conditions"] = self.conditions.as_list()
        return Outcome(
            status=self.status,
            events=self.events,
            scale_to=self.scale_to,
            direction=self.direction,
            polling_interval=polling_interval,
        )


class _Conditions:
    """Conditions keyed by type; lastTransitionTime moves only when the status changes."""

    def __init__(self, status: Mapping[str, Any], now: datetime, generation: int | None) -> None:
        self.now = now
        self.generation = generation
        self.previous: dict[str, dict[str, Any]] = {
            c["type"]: dict(c) for c in status.get("conditions") or [] if isinstance(c, dict) and "type" in c
        }
        self.current: dict[str, dict[str, Any]] = {}

    def status(self, kind: str) -> str | None:
        found = self.current.get(kind) or self.previous.get(kind)
        return None if found is None else str(found.get("status"))

    def set(self, kind: str, status: str, reason: str, message: str) -> bool:
        """Set a condition; True when its status or reason changed (news worth an Event)."""
        before = self.current.get(kind) or self.previous.get(kind)
        moved = before is None or before.get("status") != status
        self.current[kind] = {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": _format_time(self.now)
            if moved or before is None
            else before.get("lastTransitionTime") or _format_time(self.now),
            "observedGeneration": self.generation,
        }
        return moved or (before is not None and before.get("reason") != reason)

    def as_list(self) -> list[dict[str, Any]]:
        merged = {**self.previous, **self.current}
        return [merged[kind] for kind in CONDITION_TYPES if kind in merged]


def _condition_status(status: Mapping[str, Any], kind: str) -> str | None:
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def _format_time(moment: datetime) -> str:
    """RFC 3339 in whole seconds, as Kubernetes writes condition times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _format_instant(moment: datetime) -> str:
    """RFC 3339 with microseconds: cooldowns and holds measured from it must not end early."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


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
