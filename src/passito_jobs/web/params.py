"""Reading what a request asks for: every value checked, every refusal a 400 with a message.

Hostile input is normal input here: unknown or repeated parameters, NUL characters, lone
surrogates, numbers of a thousand digits, ids past PostgreSQL's bigint, dates outside 1970-9999,
very long names. Each gets one sentence saying what is wrong; none reaches the database.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from passito_jobs.queue import limits
from passito_jobs.queue.admin import MAX_BULK, JobFilter
from passito_jobs.queue.models import JobState

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
FILTER_KEYS = ("state", "queue", "type", "tag", "id", "created_after", "created_before")
_DIGITS = re.compile(r"[0-9]{1,20}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_MAX_PARAM = 4096


class BadRequest(Exception):
    """A request the dashboard refuses; `status` is the HTTP status (400 unless said)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def shown(value: object, width: int = 40) -> str:
    """A value quoted in a message: printable (control characters as escapes, written once)
    and short."""
    return f"'{limits.printable(str(value), width)}'"


def single_values(items: Iterable[tuple[str, str]], allowed: Iterable[str]) -> dict[str, str]:
    """Query parameters as a dict: unknown or repeated names are refused (a typo such as
    `stat=failed` must not silently widen a bulk action to every job)."""
    allowed = set(allowed)
    values: dict[str, str] = {}
    for name, value in items:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise BadRequest(f"unknown parameter {shown(name)} (known: {known})")
        if name in values:
            raise BadRequest(f"parameter {name} is given more than once")
        if len(value) > _MAX_PARAM:
            raise BadRequest(f"parameter {name} is longer than {_MAX_PARAM} characters")
        values[name] = value
    return values


def text(value: str, name: str) -> str:
    """Text PostgreSQL can hold: valid UTF-8 without NUL characters."""
    if "\x00" in value:
        raise BadRequest(f"{name} must not contain NUL characters")
    if _SURROGATE.search(value):
        raise BadRequest(f"{name} is not valid UTF-8 text")
    return value


def name_filter(value: str, name: str) -> str:
    value = text(value, name)
    if len(value) > limits.MAX_NAME_LENGTH:
        raise BadRequest(f"{name} must be at most {limits.MAX_NAME_LENGTH} characters, got {len(value)}")
    return value


def tag(value: str) -> str:
    """One tag, by dispatch's rules (limits.check_tags): at most 100 characters, no control
    characters, not blank."""
    text(value, "tag")
    try:
        return limits.check_tags([value])[0]
    except ValueError as exc:
        raise BadRequest(str(exc).replace("tags[0]", "tag")) from None


def job_id(value: str, name: str = "job id") -> int:
    value = value.strip()
    if not _DIGITS.fullmatch(value):
        raise BadRequest(f"{name} must be a whole number from 1 to {limits.MAX_JOB_ID}, got {shown(value)}")
    number = int(value)
    if not 1 <= number <= limits.MAX_JOB_ID:
        raise BadRequest(f"{name} must be a whole number from 1 to {limits.MAX_JOB_ID}, got {shown(value)}")
    return number


def state(value: str) -> JobState:
    try:
        return JobState(value.strip().lower())
    except ValueError:
        states = ", ".join(s.value for s in JobState)
        raise BadRequest(f"state must be one of {states}; got {shown(value)}") from None


def moment(value: str, name: str) -> datetime:
    """An ISO 8601 time (`2026-11-30T08:00:00+05:30`, `2026-11-30`); without an offset, UTC."""
    text(value, name)
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(
            f"{name} must be an ISO 8601 time like 2026-11-30T08:00:00Z, got {shown(value)}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"{name} must be between 1970 and 9999, got {shown(value)}") from None
    if not in_utc >= limits.EARLIEST_RUN_AT:
        raise BadRequest(f"{name} must be between 1970 and 9999, got {shown(value)}")
    return in_utc


def whole(value: str, name: str, low: int, high: int) -> int:
    value = value.strip()
    if not _DIGITS.fullmatch(value) or not low <= int(value) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {shown(value)}")
    return int(value)


def job_filter(values: Mapping[str, Any], *, empty_is_any: bool = True) -> JobFilter:
    """The job filter of a list or bulk action. An empty value means "any" in a form (the
    dashboard's "any" choice); the API refuses it (leave the parameter out instead)."""
    for key, value in values.items():
        if key in FILTER_KEYS and value is None and not empty_is_any:
            raise BadRequest(f"{key} must be a string, got null (leave it out to match any)")
        if key in FILTER_KEYS and value is not None and not isinstance(value, str):
            raise BadRequest(f"{key} must be a string, got {type(value).__name__}")
        if key in FILTER_KEYS and value == "" and not empty_is_any:
            raise BadRequest(f"{key} must not be empty (leave it out to match any)")
    given = {k: v for k, v in values.items() if k in FILTER_KEYS and v not in ("", None)}
    created_after = moment(given["created_after"], "created_after") if "created_after" in given else None
    created_before = moment(given["created_before"], "created_before") if "created_before" in given else None
    if created_after and created_before and created_after >= created_before:
        raise BadRequest("created_after must be earlier than created_before")
    return JobFilter(
        state=state(given["state"]) if "state" in given else None,
        queue=name_filter(given["queue"], "queue") if "queue" in given else None,
        type=name_filter(given["type"], "type") if "type" in given else None,
        tag=tag(given["tag"]) if "tag" in given else None,
        id=job_id(given["id"], "id") if "id" in given else None,
        created_from=created_after,
        created_to=created_before,
    )


def filter_query(where: JobFilter) -> dict[str, str]:
    """The filter as query parameters (links, forms)."""
    out: dict[str, str] = {}
    if where.state is not None:
        out["state"] = where.state.value
    for key in ("queue", "type", "tag"):
        value = getattr(where, key)
        if value is not None:
            out[key] = value
    if where.id is not None:
        out["id"] = str(where.id)
    if where.created_from is not None:
        out["created_after"] = where.created_from.isoformat()
    if where.created_to is not None:
        out["created_before"] = where.created_to.isoformat()
    return out


def limit(values: Mapping[str, str]) -> int:
    if "limit" not in values:
        return DEFAULT_LIMIT
    return whole(values["limit"], "limit", 1, MAX_LIMIT)


def bulk_max(value: Any) -> int:
    if value is None:
        return MAX_BULK
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BULK:
        raise BadRequest(f"max must be a whole number from 1 to {MAX_BULK}, got {shown(value)}")
    return value


def encode_cursor(before: int) -> str:
    return base64.urlsafe_b64encode(f"before:{before}".encode()).decode().rstrip("=")


def decode_cursor(value: str) -> int:
    """The id a cursor continues below; a cursor is opaque to clients."""
    value = value.strip()
    try:
        if len(value) > 64:
            raise ValueError
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
        prefix, _, number = raw.partition(":")
        if prefix != "before" or not _DIGITS.fullmatch(number):
            raise ValueError
        before = int(number)
        if not 1 <= before <= limits.MAX_JOB_ID:
            raise ValueError
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequest(
            f"malformed cursor {shown(value)}: use the `next` value of a previous page"
        ) from None
    return before
