"""Values whose own methods raise, for the tests that hold messages and checks to never call
them unguarded."""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo
from typing import Any


class Hostile:
    """A value whose str() and repr() raise: messages must not."""

    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    __repr__ = __str__


class HostileInt(int):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")

    __repr__ = __str__
    __format__ = __str__  # type: ignore[assignment]


class HostileZone(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        raise RuntimeError("no offset for you")


class HostileDict(dict[str, Any]):
    """A mapping whose methods raise, but for those the JSON encoder uses."""

    def values(self) -> Any:
        raise RuntimeError("no values for you")

    def get(self, *args: Any) -> Any:
        raise RuntimeError("no get for you")

    def __contains__(self, key: object) -> bool:
        raise RuntimeError("no in for you")

    def __len__(self) -> int:
        raise RuntimeError("no len for you")
