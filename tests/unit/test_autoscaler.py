"""One poll of a WorkerAutoscaler (`autoscaler.reconcile`), rule by rule, without any I/O.

`World` plays the API server: it keeps the Deployment's replicas and annotation and the
autoscaler's status between polls, and applies each outcome's scale the way the operator does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from passito_jobs.supervisor.autoscaler import (
    DEFAULTS,
    PAUSED_ANNOTATION,
    PAUSED_REPLICAS_ANNOTATION,
    AutoscalerSpec,
    InvalidSpecError,
    Observation,
    Outcome,
    Pause,
    Target,
    reconcile,
)
from passito_jobs.supervisor.policy import Direction

T0 = datetime(2030, 1, 1, tzinfo=UTC)
OLD = {
    "scaleTargetRef": {"name": "worker"},
    "minReplicas": 1,
    "maxReplicas": 10,
    "scaleUpThreshold": 5,
    "scaleDownThreshold": 2,
    "cooldownPeriod": 60,
    "manualOverrideSeconds": 600,
}


@dataclass
class World:
    spec: dict[str, Any] = field(default_factory=lambda: dict(OLD))
    replicas: int | None = 1  # None: no Deployment
    scaled: int | None = None  # the annotation on the Deployment
    annotations: dict[str, str] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)

    def poll(self, load: int | None, at: float) -> Outcome:
        target = None if self.replicas is None else Target(self.replicas, self.scaled)
        outcome = reconcile(
            Observation(
                spec=self.spec,
                annotations=self.annotations,
                status=self.status,
                generation=3,
                target=target,
                load=load,
                load_error="" if load is not None else "connection refused",
                now=T0 + timedelta(seconds=at),
            )
        )
        if outcome.scale_to is not None:
            self.replicas = self.scaled = outcome.scale_to
        self.status = outcome.status
        return outcome

    def kubectl_scale(self, replicas: int) -> None:
        self.replicas = replicas


def lines(outcome: Outcome) -> list[str]:
    return [f"{e.type} {e.reason}: {e.message}" for e in outcome.events]


def conditions(outcome: Outcome) -> dict[str, str]:
    return {c["type"]: c["status"] for c in outcome.status["conditions"]}


# ---------------------------------------------------------------- the policy through the operator


def test_first_poll_claims_the_deployment_without_scaling() -> None:
    world = World(replicas=1, scaled=None)
    outcome = world.poll(load=0, at=0)
    assert outcome.scale_to == 1  # only the annotation is written
    assert outcome.direction is Direction.NONE
    assert outcome.events == []
    assert conditions(outcome) == {
        "Ready": "True",
        "Active": "False",
        "Paused": "False",
        "Fallback": "False",
        "ManualOverride": "False",
    }
    assert outcome.status["observedGeneration"] == 3
    assert world.poll(load=0, at=10).scale_to is None  # nothing more to write


def test_backlog_scales_up_at_once_and_down_after_the_cooldown() -> None:
    world = World(scaled=1)
    up = world.poll(load=39, at=0)
    assert (up.scale_to, up.direction) == (8, Direction.UP)
    assert lines(up) == ["Normal ScaledUp: 1 -> 8 (load 39, 5 per worker)"]
    assert up.status["lastScaleTime"] == "2030-01-01T00:00:00.000000Z"
    assert up.status["lastScaleReason"] == "1 -> 8 (load 39, 5 per worker)"
    assert (up.status["load"], up.status["desiredReplicas"], up.status["currentReplicas"]) == (39, 8, 8)
    assert conditions(up)["Active"] == "True"

    waiting = world.poll(load=0, at=30)
    assert waiting.scale_to is None
    assert "after the cooldown (30s left)" in next(
        c["message"] for c in waiting.status["conditions"] if c["type"] == "Ready"
    )
    down = world.poll(load=0, at=60)
    assert (down.scale_to, down.direction) == (1, Direction.DOWN)
    assert lines(down) == ["Normal ScaledDown: 8 -> 1 (load 0, below 2 per worker)"]


def test_condition_times_move_only_on_transitions() -> None:
    world = World(scaled=1)
    first = {c["type"]: c for c in world.poll(load=0, at=0).status["conditions"]}
    later = {c["type"]: c for c in world.poll(load=7, at=20).status["conditions"]}
    assert later["Ready"]["lastTransitionTime"] == first["Ready"]["lastTransitionTime"]
    assert later["Active"]["lastTransitionTime"] == "2030-01-01T00:00:20Z"


# ---------------------------------------------------------------- pause annotations


def test_paused_freezes_and_resuming_adopts_the_replicas_found() -> None:
    world = World(scaled=1, annotations={PAUSED_ANNOTATION: "true"})
    paused = world.poll(load=39, at=0)
    assert paused.scale_to is None
    assert conditions(paused)["Paused"] == "True"
    assert lines(paused) == ["Normal Paused: paused by annotation jobs.passito.io/paused: replicas left at 1"]
    assert world.poll(load=39, at=10).events == []  # said once

    world.kubectl_scale(3)  # someone scales by hand while paused
    world.annotations = {}
    resumed = world.poll(load=39, at=20)
    assert "Normal Resumed: pause annotations removed: autoscaling resumed" in lines(resumed)
    assert not any("ManualOverride" in line for line in lines(resumed))
    assert (resumed.scale_to, resumed.direction) == (8, Direction.UP)
    assert "Normal ScaledUp: 3 -> 8 (load 39, 5 per worker)" in lines(resumed)


def test_paused_replicas_sets_the_replicas_and_freezes() -> None:
    world = World(scaled=1, annotations={PAUSED_REPLICAS_ANNOTATION: "4"})
    first = world.poll(load=0, at=0)
    assert (first.scale_to, first.direction) == (4, Direction.UP)
    assert world.poll(load=100, at=10).scale_to is None
    assert world.replicas == 4


def test_a_bad_paused_replicas_value_is_an_invalid_spec() -> None:
    world = World(
        scaled=1, annotations={PAUSED_REPLICAS_ANNOTATION: "-2"}, spec={**OLD, "pollingInterval": 2}
    )
    outcome = world.poll(load=39, at=0)
    assert outcome.scale_to is None
    assert outcome.polling_interval == 2  # the fix is noticed at the usual pace
    assert lines(outcome) == [
        "Warning InvalidSpec: annotation jobs.passito.io/paused-replicas must be a whole number >= 0, "
        'got "-2"'
    ]
    assert world.poll(load=39, at=10).events == []  # warned once


# ---------------------------------------------------------------- manual changes


def test_a_manual_change_is_held_then_autoscaling_resumes() -> None:
    world = World(scaled=1, spec={**OLD, "manualOverrideSeconds": 100})
    world.poll(load=0, at=0)
    world.kubectl_scale(5)
    held = world.poll(load=0, at=10)
    assert held.scale_to is None
    assert lines(held) == [
        "Normal ManualOverride: replicas changed from 1 to 5 by someone else: leaving them for 100s"
    ]
    assert conditions(held)["ManualOverride"] == "True"
    assert held.status["manualOverrideUntil"] == "2030-01-01T00:01:50.000000Z"
    assert world.poll(load=0, at=60).events == []

    world.kubectl_scale(6)  # a second change restarts the hold
    again = world.poll(load=0, at=70)
    assert lines(again) == [
        "Normal ManualOverride: replicas changed from 1 to 6 by someone else: leaving them for 100s"
    ]
    assert world.poll(load=0, at=169).scale_to is None

    resumed = world.poll(load=0, at=170)
    assert lines(resumed) == [
        "Normal ManualOverrideEnded: manual override of 6 replicas expired: autoscaling resumed",
        "Normal ScaledDown: 6 -> 1 (load 0, below 2 per worker)",
    ]
    assert conditions(resumed)["ManualOverride"] == "False"
    assert resumed.status["manualOverrideUntil"] is None


def test_an_expired_hold_adopts_the_replicas_when_the_policy_keeps_them() -> None:
    world = World(scaled=1, spec={**OLD, "manualOverrideSeconds": 5})
    world.poll(load=0, at=0)
    world.kubectl_scale(4)
    world.poll(load=12, at=1)
    resumed = world.poll(load=12, at=10)  # 3 jobs per worker: within the thresholds
    assert resumed.scale_to == 4  # the annotation now says 4: no new manual change
    assert resumed.direction is Direction.NONE
    assert world.poll(load=12, at=20).events == []


# ---------------------------------------------------------------- database failures


def test_database_failures_lead_to_the_fallback_replicas() -> None:
    world = World(scaled=1, spec={**OLD, "fallback": {"replicas": 3, "failureThreshold": 2}})
    world.poll(load=0, at=0)
    first = world.poll(load=None, at=10)
    assert first.scale_to is None
    assert lines(first) == [
        "Warning DatabaseUnavailable: cannot read the queue (connection refused); 1 failure(s) in a row"
    ]
    assert conditions(first)["Ready"] == "False"
    assert conditions(first)["Active"] == "Unknown"
    assert first.status["load"] == 0  # the last load read stays

    second = world.poll(load=None, at=20)
    assert (second.scale_to, second.status["databaseFailures"]) == (3, 2)
    assert lines(second) == [
        "Normal ScaledUp: 1 -> 3 (database unreachable, fallback.replicas)",
        "Warning Fallback: database unreachable 2 times in a row: fallback to 3 replicas",
    ]
    assert conditions(second)["Fallback"] == "True"
    assert world.poll(load=None, at=30).events == []

    back = world.poll(load=0, at=40)  # the fallback scale started a cooldown
    assert lines(back) == ["Normal FallbackEnded: database reachable again: autoscaling resumed"]
    assert conditions(back) == {
        "Ready": "True",
        "Active": "False",
        "Paused": "False",
        "Fallback": "False",
        "ManualOverride": "False",
    }
    assert world.poll(load=0, at=80).scale_to == 1


def test_without_fallback_replicas_the_replicas_are_kept_and_it_warns() -> None:
    world = World(scaled=2, replicas=2, spec={**OLD, "fallback": {"failureThreshold": 1}})
    outcome = world.poll(load=None, at=0)
    assert outcome.scale_to is None
    assert (
        "Warning Fallback: database unreachable 1 times in a row and no fallback.replicas: keeping 2 replicas"
        in lines(outcome)
    )


# ---------------------------------------------------------------- problems


def test_a_missing_deployment_is_a_warning_once() -> None:
    world = World(replicas=None)
    outcome = world.poll(load=5, at=0)
    assert outcome.scale_to is None
    assert lines(outcome) == ["Warning TargetNotFound: Deployment worker not found"]
    assert conditions(outcome)["Ready"] == "False"
    assert world.poll(load=5, at=10).events == []
    world.replicas = 1
    found = world.poll(load=5, at=20)
    assert conditions(found)["Ready"] == "True"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "spec.scaleTargetRef.name must name a Deployment"),
        ({**OLD, "minReplicas": 5, "maxReplicas": 2}, "minReplicas (5) must not exceed maxReplicas (2)"),
        ({**OLD, "scaleDownThreshold": 9}, "scaleDownThreshold (9) must be between 0 and scaleUpThreshold"),
        ({**OLD, "fallback": {"replicas": -1}}, "spec.fallback.replicas must be a whole number >= 0"),
        ({**OLD, "fallback": {"failureThreshold": 0}}, "spec.fallback.failureThreshold must be"),
        ({**OLD, "pollingInterval": 0}, "spec.pollingInterval must be positive"),
        ({**OLD, "minReplicas": "two"}, "spec.minReplicas must be a whole number"),
        ({**OLD, "queues": "emails"}, "spec.queues must be a list"),
    ],
)
def test_invalid_specs_are_named(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AutoscalerSpec.parse(spec)


def test_spec_defaults_are_the_old_supervisors_numbers() -> None:
    spec = AutoscalerSpec.parse({"scaleTargetRef": {"name": "w"}})
    policy = spec.policy
    assert (policy.min_replicas, policy.max_replicas) == (1, 10)
    assert (policy.scale_up_threshold, policy.scale_down_threshold, policy.cooldown) == (5, 2, 60)
    assert (spec.polling_interval, spec.manual_override_seconds, spec.queues) == (10, 600, ())
    assert (spec.fallback_replicas, spec.failure_threshold) == (None, DEFAULTS["failureThreshold"])


def test_pause_annotations() -> None:
    assert Pause.parse({}) == Pause(False, None)
    assert Pause.parse({PAUSED_ANNOTATION: "True"}).active
    assert not Pause.parse({PAUSED_ANNOTATION: "false"}).active
    assert Pause.parse({PAUSED_REPLICAS_ANNOTATION: " 0 "}) == Pause(False, 0)
