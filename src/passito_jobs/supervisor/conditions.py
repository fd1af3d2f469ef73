"""The status conditions of a WorkerAutoscaler, and the times written in its status. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

CONDITION_TYPES = ("Ready", "Active", "Paused", "Fallback", "ManualOverride")


class Conditions:
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
            "lastTransitionTime": format_time(self.now)
            if moved or before is None
            else before.get("lastTransitionTime") or format_time(self.now),
            "observedGeneration": self.generation,
        }
        return moved or (before is not None and before.get("reason") != reason)

    def as_list(self) -> list[dict[str, Any]]:
        merged = {**self.previous, **self.current}
        return [merged[kind] for kind in CONDITION_TYPES if kind in merged]


def condition_status(status: Mapping[str, Any], kind: str) -> str | None:
    for condition in status.get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == kind:
            return str(condition.get("status"))
    return None


def format_time(moment: datetime) -> str:
    """RFC 3339 in whole seconds, as Kubernetes writes condition times."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_instant(moment: datetime) -> str:
    """RFC 3339 with microseconds: cooldowns and holds measured from it must not end early."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
