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

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from passito_jobs.supervisor.conditions import (
    CONDITION_TYPES,
    Conditions,
    condition_status,
    format_instant,
    format_time,
    parse_time,
)
from passito_jobs.supervisor.policy import Direction, decide
from passito_jobs.supervisor.spec import (
    CRD_FIELDS,
    DEFAULTS,
    GROUP,
    KIND,
    PAUSED_ANNOTATION,
    PAUSED_REPLICAS_ANNOTATION,
    PLURAL,
    SCALED_REPLICAS_ANNOTATION,
    VERSION,
    AutoscalerSpec,
    InvalidSpecError,
    Pause,
    Target,
)

__all__ = [
    "CONDITION_TYPES",
    "CRD_FIELDS",
    "DEFAULTS",
    "GROUP",
    "KIND",
    "PAUSED_ANNOTATION",
    "PAUSED_REPLICAS_ANNOTATION",
    "PLURAL",
    "SCALED_REPLICAS_ANNOTATION",
    "VERSION",
    "AutoscalerSpec",
    "Event",
    "InvalidSpecError",
    "Observation",
    "Outcome",
    "Pause",
    "Target",
    "polling_interval",
    "reconcile",
]


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
        return condition_status(self.status, kind)


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
        self.conditions = Conditions(obs.status, obs.now, obs.generation)
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
        until = parse_time(self.previous.get("manualOverrideUntil"))
        if self.previous.get("manualOverrideReplicas") != target.replicas or until is None:
            until = self.now + timedelta(seconds=spec.manual_override_seconds)
            self.status["manualOverrideReplicas"] = target.replicas
            self.status["manualOverrideUntil"] = format_instant(until)
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
                f"holding {target.replicas} replicas until {format_time(until)}",
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
        last = parse_time(self.previous.get("lastScaleTime"))
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
        self.status["lastScaleTime"] = format_instant(self.now)
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
