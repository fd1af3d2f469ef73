"""The scaling policy: the old supervisor's behaviour, and properties that must always hold."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from passito_jobs.settings import FieldError
from passito_jobs.supervisor.autoscaler import CRD_FIELDS
from passito_jobs.supervisor.policy import Direction, ScalingPolicy, decide

OLD = ScalingPolicy(
    min_replicas=1, max_replicas=10, scale_up_threshold=5, scale_down_threshold=2, cooldown=60
)


def test_empty_queue_keeps_one_worker() -> None:
    decision = decide(OLD, load=0, current=1, now=1000, last_scale_time=None)
    assert (decision.desired, decision.direction) == (1, Direction.NONE)


def test_39_jobs_with_one_worker_scales_to_8() -> None:
    decision = decide(OLD, load=39, current=1, now=0, last_scale_time=0)
    assert (decision.desired, decision.direction) == (8, Direction.UP)
    assert decision.reason == "load 39, 5 per worker"


def test_drained_queue_scales_back_to_one_after_the_cooldown() -> None:
    held = decide(OLD, load=0, current=8, now=30, last_scale_time=0)
    assert (held.desired, held.direction) == (8, Direction.NONE)
    assert "after the cooldown (30s left)" in held.reason
    down = decide(OLD, load=0, current=8, now=61, last_scale_time=0)
    assert (down.desired, down.direction) == (1, Direction.DOWN)


def test_load_between_thresholds_does_not_flap() -> None:
    for load in range(16, 41):  # 2..5 jobs per worker with 8 workers
        assert decide(OLD, load=load, current=8, now=1e6, last_scale_time=0).direction is Direction.NONE


def test_scale_to_zero_and_wake_on_any_job() -> None:
    policy = ScalingPolicy(min_replicas=0, max_replicas=5)
    assert decide(policy, load=0, current=1, now=100, last_scale_time=0).desired == 0
    assert decide(policy, load=0, current=0, now=100, last_scale_time=0).direction is Direction.NONE
    wake = decide(policy, load=1, current=0, now=100, last_scale_time=99)
    assert (wake.desired, wake.direction) == (1, Direction.UP)


def test_out_of_bounds_replicas_are_corrected() -> None:
    assert decide(OLD, load=0, current=0, now=0, last_scale_time=0).desired == 1
    assert decide(OLD, load=0, current=15, now=0, last_scale_time=0).desired == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_replicas": 5, "max_replicas": 2}, "must not exceed maxReplicas"),
        ({"min_replicas": -1}, "minReplicas must not be negative"),
        ({"scale_up_threshold": 2, "scale_down_threshold": 3}, "scaleDownThreshold"),
        ({"max_replicas": 0, "min_replicas": 0}, "maxReplicas must be at least 1"),
    ],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, float], message: str) -> None:
    """The error names the field; the WorkerAutoscaler spells it its own way."""
    with pytest.raises(FieldError) as caught:
        ScalingPolicy(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field in kwargs
    assert message in caught.value.render(CRD_FIELDS.__getitem__)


@st.composite
def policies(draw: st.DrawFn) -> ScalingPolicy:
    low = draw(st.integers(0, 5))
    high = draw(st.integers(max(low, 1), 20))
    up = draw(st.floats(0.5, 50))
    down = draw(st.floats(0, up))
    return ScalingPolicy(low, high, up, down, draw(st.floats(0, 600)))


situations = st.tuples(
    st.integers(0, 2000), st.integers(0, 25), st.floats(0, 2000), st.none() | st.floats(0, 2000)
)


@given(policies(), situations)
def test_always_within_bounds(policy: ScalingPolicy, s: tuple[int, int, float, float | None]) -> None:
    load, current, now, last = s
    desired = decide(policy, load=load, current=current, now=now, last_scale_time=last).desired
    assert policy.min_replicas <= desired <= policy.max_replicas


@given(policies(), situations, st.integers(0, 2000))
def test_more_load_never_means_fewer_workers(
    policy: ScalingPolicy, s: tuple[int, int, float, float | None], extra: int
) -> None:
    load, current, now, last = s
    less = decide(policy, load=load, current=current, now=now, last_scale_time=last).desired
    more = decide(policy, load=load + extra, current=current, now=now, last_scale_time=last).desired
    assert more >= less


@given(policies(), situations)
def test_no_change_between_thresholds(policy: ScalingPolicy, s: tuple[int, int, float, float | None]) -> None:
    load, current, now, last = s
    if not policy.min_replicas <= current <= policy.max_replicas or current == 0:
        return
    per_worker = load / current
    if policy.scale_down_threshold <= per_worker <= policy.scale_up_threshold:
        assert decide(policy, load=load, current=current, now=now, last_scale_time=last).desired == current


@given(policies(), situations)
def test_scale_down_waits_for_the_cooldown(
    policy: ScalingPolicy, s: tuple[int, int, float, float | None]
) -> None:
    load, current, now, last = s
    decision = decide(policy, load=load, current=current, now=now, last_scale_time=last)
    if decision.direction is Direction.DOWN and policy.min_replicas <= current <= policy.max_replicas:
        assert last is None or now - last >= policy.cooldown
