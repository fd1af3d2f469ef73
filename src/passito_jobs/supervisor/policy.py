"""The scaling policy: how many workers a load needs. Pure: no I/O, no clock.

Both the Kubernetes operator and the local supervisor call `decide`. The load is the jobs ready
now plus the jobs in flight, in the queues watched. Thresholds are jobs per worker:

- above `scale_up_threshold` per worker: scale up at once, to ceil(load / scale_up_threshold);
- below `scale_down_threshold` per worker: scale down, once `cooldown` has passed since the
  last scale, to ceil(load / midpoint) where midpoint = (up + down) / 2, so the new count sits
  between the thresholds and does not bounce straight back up;
- in between: keep the count (hysteresis: no flapping).

Always within [min_replicas, max_replicas]. With min_replicas 0, an empty queue scales to zero
and any ready job wakes one worker. The defaults below are the only copy of these numbers: the
settings (PASSITO_MIN_WORKERS, ...), the autoscaler and the CRD use them (a test keeps the CRD
YAML in step). An invalid policy raises FieldError naming the field; the CRD, the command line
and the environment each spell it their own way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from passito_jobs.settings import FieldError

MIN_REPLICAS = 1
MAX_REPLICAS = 10
SCALE_UP_THRESHOLD = 5.0
SCALE_DOWN_THRESHOLD = 2.0
COOLDOWN = 60.0


class Direction(StrEnum):
    UP = "up"
    DOWN = "down"
    NONE = "none"


@dataclass(frozen=True)
class ScalingPolicy:
    """Bounds and thresholds; validated at construction."""

    min_replicas: int = MIN_REPLICAS
    max_replicas: int = MAX_REPLICAS
    scale_up_threshold: float = SCALE_UP_THRESHOLD
    scale_down_threshold: float = SCALE_DOWN_THRESHOLD
    cooldown: float = COOLDOWN

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise FieldError(
                "min_replicas", f"{{min_replicas}} must not be negative, got {self.min_replicas}"
            )
        if self.max_replicas < 1:
            raise FieldError("max_replicas", f"{{max_replicas}} must be at least 1, got {self.max_replicas}")
        if self.min_replicas > self.max_replicas:
            raise FieldError(
                "min_replicas",
                f"{{min_replicas}} ({self.min_replicas}) must not exceed "
                f"{{max_replicas}} ({self.max_replicas})",
            )
        if self.scale_up_threshold <= 0:
            raise FieldError(
                "scale_up_threshold",
                f"{{scale_up_threshold}} must be positive, got {self.scale_up_threshold:g}",
            )
        if not 0 <= self.scale_down_threshold <= self.scale_up_threshold:
            raise FieldError(
                "scale_down_threshold",
                f"{{scale_down_threshold}} ({self.scale_down_threshold:g}) must be between 0 and "
                f"{{scale_up_threshold}} ({self.scale_up_threshold:g})",
            )
        if self.cooldown < 0:
            raise FieldError("cooldown", f"{{cooldown}} must not be negative, got {self.cooldown:g}")

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


def _load(load: int) -> str:
    return f"load {load}"


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
            return Decision(0, Direction.NONE, "load 0, scaled to zero")
        desired = policy.clamp(max(1, needed_up))
        return Decision(desired, Direction.UP, f"{_load(load)} with no worker, {up:g} per worker")

    per_worker = load / current
    if per_worker > up:
        desired = policy.clamp(needed_up)
        if desired > current:
            return Decision(
                desired,
                Direction.UP,
                f"{_load(load)}, {up:g} per worker",
            )
        return Decision(current, Direction.NONE, f"{_load(load)}, at maxReplicas {policy.max_replicas}")

    if per_worker < down:
        midpoint = (up + down) / 2
        desired = policy.clamp(math.ceil(load / midpoint))
        if desired >= current:
            return Decision(
                current,
                Direction.NONE,
                f"{_load(load)}, at minReplicas {policy.min_replicas}",
            )
        if last_scale_time is not None and now - last_scale_time < policy.cooldown:
            wait = policy.cooldown - (now - last_scale_time)
            return Decision(
                current,
                Direction.NONE,
                f"{_load(load)}, would scale down to {desired} after the cooldown ({wait:.0f}s left)",
            )
        return Decision(
            desired,
            Direction.DOWN,
            f"{_load(load)}, below {down:g} per worker",
        )

    return Decision(
        current,
        Direction.NONE,
        f"{_load(load)}, {per_worker:.1f} per worker is within [{down:g}, {up:g}]",
    )
