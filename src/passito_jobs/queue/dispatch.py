"""Dispatching jobs from Python: `dispatch` and `dispatch_many`.

Both validate every request before anything is written. Pass `conn` (a psycopg connection)
to make the dispatch part of your own transaction: if it rolls back, no job exists. Without
`conn`, a shared connection to PASSITO_DATABASE_URL is used and each call commits on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from passito_jobs.config import ConfigError, Settings
from passito_jobs.queue.models import InvalidJobError, JobRequest
from passito_jobs.queue.store import Conn, Store, StoreHandle, connect

MAX_PRIORITY = 2**31 - 1
T = TypeVar("T")


def validate(request: JobRequest) -> JobRequest:
    """Check one request; raise InvalidJobError naming the bad argument."""
    if not isinstance(request.type, str) or not request.type.strip():
        raise InvalidJobError("job type must be a non-empty string")
    if not isinstance(request.payload, Mapping):
        raise InvalidJobError(f"payload must be a JSON object (a dict), got {type(request.payload).__name__}")
    if not isinstance(request.queue, str) or not request.queue.strip():
        raise InvalidJobError("queue must be a non-empty string")
    if not isinstance(request.priority, int) or abs(request.priority) > MAX_PRIORITY:
        raise InvalidJobError(f"priority must be an integer within ±{MAX_PRIORITY}")
    if request.delay is not None:
        if not isinstance(request.delay, int | float) or not math.isfinite(request.delay):
            raise InvalidJobError(f"delay must be a number of seconds, got {request.delay!r}")
        if request.delay < 0:
            raise InvalidJobError(f"delay must not be negative, got {request.delay:g}")
        if request.run_at is not None:
            raise InvalidJobError("give either delay or run_at, not both")
    if request.run_at is not None and (
        not isinstance(request.run_at, datetime) or request.run_at.tzinfo is None
    ):
        raise InvalidJobError("run_at must be a timezone-aware datetime")
    if not isinstance(request.max_attempts, int) or request.max_attempts < 1:
        raise InvalidJobError(f"max_attempts must be at least 1, got {request.max_attempts!r}")
    for parent in request.depends_on:
        if not isinstance(parent, int) or parent < 1:
            raise InvalidJobError(f"depends_on must hold job ids (positive integers), got {parent!r}")
    if request.unique_key is not None and (not isinstance(request.unique_key, str) or not request.unique_key):
        raise InvalidJobError("unique_key must be a non-empty string")
    return request


def _connect_from_env() -> Conn:
    settings = Settings.from_env()
    if not settings.database_url:
        raise ConfigError("PASSITO_DATABASE_URL is not set: set it, or pass conn= to dispatch")
    return connect(settings.database_url, timeout=settings.connect_timeout)


# One connection per process for calls without `conn`, shared by threads; each call commits.
_shared = StoreHandle(_connect_from_env)


def _with_store(conn: Conn | None, action: Callable[[Store], T]) -> T:
    if conn is None:
        return _shared.run(action)
    return action(Store(conn))


def dispatch(
    type: str,
    payload: Mapping[str, Any] | None = None,
    *,
    queue: str = "default",
    priority: int = 0,
    delay: float | timedelta | None = None,
    run_at: datetime | None = None,
    depends_on: Iterable[int] = (),
    max_attempts: int = 3,
    unique_key: str | None = None,
    conn: Conn | None = None,
) -> int:
    """Dispatch one job and return its id.

    `priority`: higher runs first. `delay` (seconds or timedelta) or `run_at`: not before then.
    `depends_on`: parent job ids; the job stays blocked until all of them completed, and fails
    if one fails or is cancelled. `unique_key`: while an unfinished job has this key, its id is
    returned and nothing new is dispatched. `conn`: dispatch inside your transaction.
    """
    request = validate(
        JobRequest(
            type=type,
            payload=payload if payload is not None else {},
            queue=queue,
            priority=priority,
            delay=delay.total_seconds() if isinstance(delay, timedelta) else delay,
            run_at=run_at,
            depends_on=tuple(depends_on),
            max_attempts=max_attempts,
            unique_key=unique_key,
        )
    )
    return _with_store(conn, lambda store: store.dispatch(request))


def dispatch_many(
    requests: Iterable[JobRequest | Mapping[str, Any]],
    *,
    conn: Conn | None = None,
) -> list[int]:
    """Dispatch many jobs in one transaction (COPY for plain jobs); return their ids in order.

    Each item is a JobRequest or a mapping of `dispatch`'s arguments
    (`{"type": "Noop", "payload": {...}, "queue": "emails"}`).
    """
    checked: list[JobRequest] = []
    for index, item in enumerate(requests):
        try:
            request = item if isinstance(item, JobRequest) else _request_from_mapping(item)
            checked.append(validate(request))
        except InvalidJobError as exc:
            raise InvalidJobError(f"job {index}: {exc}") from None
    if not checked:
        return []
    return _with_store(conn, lambda store: store.dispatch_many(checked))


def _request_from_mapping(item: Mapping[str, Any]) -> JobRequest:
    fields = dict(item)
    unknown = set(fields) - set(JobRequest.__dataclass_fields__)
    if unknown:
        raise InvalidJobError(f"unknown argument(s): {', '.join(sorted(unknown))}")
    if "type" not in fields:
        raise InvalidJobError("job type is missing")
    if isinstance(fields.get("delay"), timedelta):
        fields["delay"] = fields["delay"].total_seconds()
    if fields.get("payload") is None:
        fields["payload"] = {}
    fields["depends_on"] = tuple(fields.get("depends_on", ()))
    return JobRequest(**fields)
