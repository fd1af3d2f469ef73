"""Dispatching jobs from Python: `dispatch`, `dispatch_many` and `dispatch_batch`.

Both validate every request before anything is written. Pass `conn` (a psycopg connection)
to make the dispatch part of your own transaction: if it rolls back, no job exists. Without
`conn`, a shared connection to the default database is used and each call commits on its own.

The queue reads no settings itself: `defaults` says where the default database is and how large
a payload may be. `import passito_jobs` points them at PASSITO_DATABASE_URL and
PASSITO_MAX_PAYLOAD_BYTES (passito_jobs/database.py); code of your own may set them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, NamedTuple, TypeVar

import psycopg

from passito_jobs.queue import limits
from passito_jobs.queue.connection import Conn, ConnectionHandle
from passito_jobs.queue.errors import DatabaseUnavailableError, InvalidJobError
from passito_jobs.queue.models import JobRequest
from passito_jobs.queue.store import Store

T = TypeVar("T")


def _no_default_database() -> Conn:
    raise DatabaseUnavailableError("no default database is configured: pass conn= to dispatch")


@dataclass
class DispatchDefaults:
    """Where `dispatch` without `conn` connects, and the payload limit it checks."""

    connect: Callable[[], Conn] = _no_default_database
    max_payload_bytes: Callable[[], int] = lambda: limits.DEFAULT_MAX_PAYLOAD_BYTES
    trace_context: Callable[[], dict[str, str] | None] = lambda: None
    """The caller's trace context (`traceparent`, `tracestate`) to store in each job's metadata,
    or None; `import passito_jobs` points it at OpenTelemetry's when that is installed."""


defaults = DispatchDefaults()


def validate(request: JobRequest) -> JobRequest:
    """Check one request; raise InvalidJobError naming the bad argument (limits.py's rules)."""
    _checked(_normalized(request), max_payload_bytes())
    return request


def _check_fields(request: JobRequest) -> None:
    """Every rule but the payload's content, in the order the SQL function checks them."""
    limits.check_name("job type", request.type)
    if not isinstance(request.payload, Mapping):
        raise InvalidJobError(f"payload must be a JSON object, got {limits.json_type(request.payload)}")
    limits.check_name("queue", request.queue)
    limits.check_priority(request.priority)
    if request.delay is not None:
        limits.check_delay(request.delay, datetime.now(UTC))
        if request.run_at is not None:
            raise InvalidJobError("give either delay or run_at, not both")
    if request.run_at is not None:
        limits.check_run_at(request.run_at)
    limits.check_max_attempts(request.max_attempts)
    parents = request.depends_on
    if type(parents) is not tuple or parents:  # the usual job has none: nothing to look at
        parents = _id_tuple(parents)
        if len(parents) > limits.MAX_PARENTS:
            raise InvalidJobError(f"depends_on must hold at most {limits.MAX_PARENTS} job ids, got more")
        for parent in parents:
            limits.check_job_id("depends_on", parent)
    limits.check_unique_key(request.unique_key)
    if request.unique_for is not None or not _is(request.unique_mode, "keep"):
        limits.check_unique_options(request.unique_key, request.unique_for, request.unique_mode)
    if not _is(request.depends_on_mode, "completed"):
        limits.check_depends_on_mode(request.depends_on_mode)
    if request.concurrency_key is not None:
        limits.check_name("concurrency_key", request.concurrency_key)
    if type(request.tags) is not tuple or request.tags:
        limits.check_tags(request.tags)
    if request.metadata is not None:
        limits.encode_metadata(request.metadata)


def _is(value: object, text: str) -> bool:
    """`value == text` for a plain string, without calling a caller's object's __eq__."""
    return type(value) is str and value == text


def _checked(request: JobRequest, max_bytes: int) -> str:
    """Check `request`; return its payload's JSON text."""
    _check_fields(request)
    return limits.encode_payload(request.payload, max_bytes)


def _traced(metadata: Mapping[str, Any] | None, context: dict[str, str] | None) -> Mapping[str, Any] | None:
    """`metadata` with the caller's trace context added; a traceparent given by the caller wins."""
    if context is None or not isinstance(metadata, Mapping | None):
        return metadata  # nothing to add, or metadata that fails its check anyway
    if metadata is None:
        return context
    try:
        return metadata if "traceparent" in metadata else {**context, **metadata}
    except Exception as exc:  # a Mapping of the caller's may raise anything
        raise InvalidJobError(limits.unreadable("metadata", exc)) from None


def max_payload_bytes() -> int:
    """The largest payload, in bytes of JSON text (`defaults.max_payload_bytes`)."""
    return defaults.max_payload_bytes()


# One connection per process for calls without `conn`, shared by threads; each call commits.
_shared = ConnectionHandle(lambda: defaults.connect())  # noqa: PLW0108 - read at each connect


def _with_store(conn: Conn | None, action: Callable[[Store], T]) -> T:
    if conn is None:
        return _shared.run(lambda shared: action(Store(shared)))
    if not isinstance(conn, psycopg.Connection):
        raise TypeError(f"conn must be a psycopg connection (or None), got {type(conn).__name__}")
    return action(Store(conn))


def _seconds(delay: float | timedelta | None) -> float | None:
    return delay.total_seconds() if isinstance(delay, timedelta) else delay


def _normalized(request: JobRequest) -> JobRequest:
    """A JobRequest as `dispatch` builds one: parents and tags read into tuples (of an endless
    iterable, no more than one past the limit)."""
    changes: dict[str, Any] = {}
    if type(request.depends_on) is not tuple:
        changes["depends_on"] = _id_tuple(request.depends_on)
    if type(request.tags) is not tuple:
        changes["tags"] = _tag_tuple(request.tags)
    return replace(request, **changes) if changes else request


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
    concurrency_key: str | None = None,
    tags: Iterable[str] = (),
    metadata: Mapping[str, Any] | None = None,
    unique_for: float | timedelta | None = None,
    unique_mode: str = "keep",
    depends_on_mode: str = "completed",
    conn: Conn | None = None,
) -> int:
    """Dispatch one job and return its id.

    `priority`: higher runs first. `delay` (seconds or timedelta) or `run_at`: not before then.
    `depends_on`: parent job ids; the job stays blocked until all of them completed, and fails
    if one fails or is cancelled; with `depends_on_mode="finished"` it runs once all of them
    ended, whatever the outcome, and reads how in `ctx.parents`. `unique_key`: while an
    unfinished job has this key, its id is returned and nothing new is dispatched; `unique_for`
    (seconds or timedelta): also while one finished less than this long ago; `unique_mode`:
    "keep" (the default) or "replace": an unfinished job of the key that has not started takes
    this payload and run_at (debounce), a processing one is left alone. `concurrency_key`: the key the queue's
    key_concurrency counts by (a tenant, say "hostel:ganga"; docs/flow-control.md). `tags`: up
    to 20 labels to find the job by (`jobs list --tag`); `metadata`: a JSON object about the job
    (up to 16 KiB), where the caller's trace context goes too. `conn`: dispatch inside your
    transaction.
    """
    request = JobRequest(
        type=type,
        payload=payload if payload is not None else {},
        queue=queue,
        priority=priority,
        delay=_seconds(delay),
        run_at=run_at,
        depends_on=_id_tuple(depends_on),
        max_attempts=max_attempts,
        unique_key=unique_key,
        concurrency_key=concurrency_key,
        tags=_tag_tuple(tags),
        metadata=_traced(metadata, defaults.trace_context()),
        unique_for=_seconds(unique_for),
        unique_mode=unique_mode,
        depends_on_mode=depends_on_mode,
    )
    payload_json = _checked(request, max_payload_bytes())
    return _with_store(conn, lambda store: store.dispatch(request, payload_json))


def dispatch_many(
    requests: Iterable[JobRequest | Mapping[str, Any]],
    *,
    conn: Conn | None = None,
) -> list[int]:
    """Dispatch many jobs in one transaction (COPY for plain jobs); return their ids in order.

    Each item is a JobRequest or a mapping of `dispatch`'s arguments
    (`{"type": "Noop", "payload": {...}, "queue": "emails"}`).
    """
    checked = _requests(requests, "requests")
    if not checked:
        return []
    # The store checks the payloads: before writing anything in your transaction, or while it
    # writes in one of its own (a refusal rolls it back), where encoding overlaps the COPY.
    max_bytes = max_payload_bytes()
    return _with_store(conn, lambda store: store.dispatch_many(checked, max_payload_bytes=max_bytes))


def _requests(items: Iterable[JobRequest | Mapping[str, Any]], what: str) -> list[JobRequest]:
    """Requests for `dispatch_many`, with the caller's trace context, every field but the
    payloads checked (`job N: ...` names a bad one; `what`: the argument that holds them)."""
    if isinstance(items, str | bytes | Mapping | JobRequest) or not isinstance(items, Iterable):
        raise InvalidJobError(f"{what} must be a list of JobRequests or mappings, got {type(items).__name__}")
    checked: list[JobRequest] = []
    context = defaults.trace_context()
    for index, item in enumerate(items):
        try:
            request = _request(item, "a JobRequest or a mapping")
            if context is not None:
                request = replace(request, metadata=_traced(request.metadata, context))
            _check_fields(request)
        except InvalidJobError as exc:
            raise InvalidJobError(f"job {index}: {exc}") from None
        checked.append(request)
    return checked


class Batch(NamedTuple):
    """What `dispatch_batch` dispatched: the batch's job ids in order, and its finish job's."""

    job_ids: list[int]
    on_finish: int


def dispatch_batch(
    jobs: Iterable[JobRequest | Mapping[str, Any]],
    *,
    on_finish: JobRequest | Mapping[str, Any] | str,
    conn: Conn | None = None,
) -> Batch:
    """Dispatch `jobs` and one job that runs once every one of them ended, whatever the outcome
    (`depends_on_mode="finished"`; its `ctx.parents` says how each ended), in one transaction.

    Items are as for `dispatch_many`; `on_finish` is the finish job: a JobRequest, a mapping of
    `dispatch`'s arguments, or just a job type. Parents it names itself are kept.
    """
    try:
        finish = JobRequest(on_finish) if isinstance(on_finish, str) else on_finish
        finish = _request(finish, "a JobRequest, a mapping or a job type")
        if finish.unique_key is not None:
            # A job with that key already there would be returned instead, one that does not wait
            # for the batch (or waits for another).
            raise InvalidJobError("unique_key is not allowed: the finish job must be a new job")
        finish = replace(finish, metadata=_traced(finish.metadata, defaults.trace_context()))
        finish_json = _checked(finish, max_bytes := max_payload_bytes())
    except InvalidJobError as exc:
        raise InvalidJobError(f"on_finish: {exc}") from None
    batch = _requests(jobs, "jobs")

    def run(store: Store) -> Batch:
        atomic = store.conn.transaction() if store.conn.autocommit else contextlib.nullcontext()
        with atomic:
            ids = store.dispatch_many(batch, max_payload_bytes=max_bytes) if batch else []
            parents = tuple(dict.fromkeys([*finish.depends_on, *ids]))
            request = replace(finish, depends_on=parents, depends_on_mode="finished")
            return Batch(ids, store.dispatch(request, finish_json))

    return _with_store(conn, run)


def _request(item: object, expected: str) -> JobRequest:
    """`item` (a JobRequest or a mapping of `dispatch`'s arguments) as a normalized JobRequest."""
    if isinstance(item, JobRequest):
        return _normalized(item)
    if not isinstance(item, Mapping):
        raise InvalidJobError(f"must be {expected}, got {type(item).__name__}")
    try:
        fields = dict(item)
    except Exception as exc:  # a Mapping of the caller's may raise anything
        raise InvalidJobError(limits.unreadable("the mapping", exc)) from None
    return _request_from_mapping(fields)


def _request_from_mapping(fields: dict[Any, Any]) -> JobRequest:
    unknown = set(fields) - set(JobRequest.__dataclass_fields__)
    if unknown:
        names = sorted(key if isinstance(key, str) else limits.shown(key, quoted=True) for key in unknown)
        raise InvalidJobError(f"unknown argument(s): {', '.join(names)}")
    if "type" not in fields:
        raise InvalidJobError("job type is missing")
    if fields.get("payload") is None:
        fields["payload"] = {}
    fields["depends_on"] = _id_tuple(fields.get("depends_on", ()))
    fields["tags"] = _tag_tuple(fields.get("tags", ()))
    return JobRequest(**fields)


def _id_tuple(parents: object) -> tuple[Any, ...]:
    """Parent ids as a tuple; of an endless iterable, no more than one past the limit."""
    if isinstance(parents, str | bytes | Mapping) or not isinstance(parents, Iterable):
        raise InvalidJobError(f"depends_on must be a list of job ids, got {type(parents).__name__}")
    if isinstance(parents, list | tuple):
        return tuple(parents)
    try:  # a generator or an iterable of the caller's may raise anything
        return tuple(islice(parents, limits.MAX_PARENTS + 1))
    except Exception as exc:
        raise InvalidJobError(limits.unreadable("depends_on", exc)) from None


def _tag_tuple(tags: object) -> tuple[Any, ...]:
    """Tags as a tuple; of an endless iterable, no more than one past the limit."""
    if isinstance(tags, str | bytes | Mapping) or not isinstance(tags, Iterable):
        raise InvalidJobError(f"tags must be a list of strings, got {limits.json_type(tags)}")
    return tuple(tags) if isinstance(tags, list | tuple) else tuple(islice(tags, limits.MAX_TAGS + 1))
