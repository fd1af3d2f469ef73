"""The scaling policy: how many workers a load needs. Pure: no I/O, no clock.

Both the Kubernetes operator and the local supervisor call `decide`. The load is the jobs ready
now plus the jobs in flight, in the queues watched. Thresholds are jobs per worker:

- above `scale_up_threshold` per worker: scale up at once, to ceil(load / scale_up_threshold);
- below `scale_down_threshold` per worker: scale down, once `cooldown` has passed since the
  last scale, to ceil(load / midpoint) where midpoint = (up + down) / 2, so the new count sits
  between the thresholds and does not bounce straight back up;
- in between: keep the count (hysteresis: no flapping).

Always within [min_replicas, max_replicas]. With min_replicas 0, an empty queue scales to zero
and any ready job wakes one worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    NONE = "none"


@dataclass(frozen=True)
class ScalingPolicy:
    """Bounds and thresholds; validated at construction."""

    min_replicas: int = 1
    max_replicas: int = 10
    scale_up_threshold: float = 5.0
    scale_down_threshold: float = 2.0
    cooldown: float = 60.0

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise ValueError(f"minReplicas must not be negative, got {self.min_replicas}")
        if self.max_replicas < 1:
            raise ValueError(f"maxReplicas must be at least 1, got {self.max_replicas}")
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must not exceed maxReplicas ({self.max_replicas})"
            )
        if self.scale_up_threshold <= 0:
            raise ValueError(f"scaleUpThreshold must be positive, got {self.scale_up_threshold:g}")
        if not 0 <= self.scale_down_threshold <= self.scale_up_threshold:
            raise ValueError(
                f"scaleDownThreshold ({self.scale_down_threshold:g}) must be between 0 and "
                f"scaleUpThreshold ({self.scale_up_threshold:g})"
            )
        if self.cooldown < 0:
            raise ValueError(f"cooldownPeriod must not be negative, got {self.cooldown:g}")

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True)
class Decision:
    desired: int
    direction: Direction
    reason: str

    @property
    def changed(self) -> bool:
        return self.direction is not Direction.NONE


def _jobs(load: int) -> str:
    return f"{load} job{'s' if load != 1 else ''}"


def decide(
    policy: ScalingPolicy, *, load: int, current: int, now: float, last_scale_time: float | None
) -> Decision:
    """The replicas `load` needs, given `current` replicas and when they last changed."""
    if load < 0 or current < 0:
        raise ValueError("load and current replicas must not be negative")
    up, down = policy.scale_up_threshold, policy.scale_down_threshold
    needed_up = math.ceil(load / up)

    if current < policy.min_replicas:
        desired = policy.clamp(max(needed_up, policy.min_replicas))
        return Decision(desired, Direction.UP, f"below minReplicas {policy.min_replicas}")
    if current > policy.max_replicas:
        return Decision(policy.max_replicas, Direction.DOWN, f"above maxReplicas {policy.max_replicas}")

    if current == 0:
        if load == 0:
            return Decision(0, Direction.NONE, "no jobs, scaled to zero")
        desired = policy.clamp(max(1, needed_up))
        return Decision(desired, Direction.UP, f"{_jobs(load)} pending with no worker, {up:g} per worker")

    per_worker = load / current
    if per_worker > up:
        desired = policy.clamp(needed_up)
        if desired > current:
            return Decision(
                desired,
                Direction.UP,
                f"{_jobs(load)} pending, {up:g} per worker",
            )
        return Decision(
            current, Direction.NONE, f"{_jobs(load)} pending, at maxReplicas {policy.max_replicas}"
        )

    if per_worker < down:
        midpoint = (up + down) / 2
        desired = policy.clamp(math.ceil(load / midpoint))
        if desired >= current:
            return Decision(
                current,
                Direction.NONE,
                f"{_jobs(load)} pending, at minReplicas {policy.min_replicas}",
            )
        if last_scale_time is not None and now - last_scale_time < policy.cooldown:
            wait = policy.cooldown - (now - last_scale_time)
            return Decision(
                current,
                Direction.NONE,
                f"{_jobs(load)} pending, would scale down to {desired} after the cooldown ({wait:.0f}s left)",
            )
        return Decision(
            desired,
            Direction.DOWN,
            f"{_jobs(load)} pending, below {down:g} per worker",
        )

    return Decision(
        current,
        Direction.NONE,
        f"{_jobs(load)} pending, {per_worker:.1f} per worker is within [{down:g}, {up:g}]",
    )
