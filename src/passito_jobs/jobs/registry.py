"""Job types by name: the handlers a worker runs, and what a handler is given.

Register a job type in your own module and load it in the worker with `--import` or
PASSITO_JOB_MODULES:

    from passito_jobs import JobContext, job_type

    @job_type("SendReminder", timeout=60)
    def send_reminder(ctx: JobContext) -> dict[str, str]:
        ...

Sync handlers run in the worker's thread pool (or, with PASSITO_SYNC_ISOLATION=process, in its
child processes); `async def` handlers run on its event loop. A handler's return value (JSON) is
stored as the job's result; one the database cannot store (NaN, a NUL character, a set, more
than PASSITO_MAX_PAYLOAD_BYTES) fails the job for good, naming what is wrong. Raise
`PermanentError` to fail the job at once, without retries; any other exception is retried with
backoff.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from passito_jobs.queue.storable import DEFAULT_MAX_BYTES, encode_json

log = logging.getLogger("passito_jobs.jobs")


class PermanentError(Exception):
    """Raised by a handler: the job fails now and is not retried (bad input, for example)."""


@dataclass(slots=True)
class JobContext:
    """What a handler gets: the job's identity and payload, and a way to report progress."""

    id: int
    type: str
    queue: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    worker_id: str
    _progress: Any = field(default=None, repr=False)
    _progress_json: str | None = field(default=None, repr=False)
    _progress_dirty: bool = field(default=False, repr=False)
    # Set by the worker: the size limit of a progress value, and (in a child process of
    # PASSITO_SYNC_ISOLATION=process) where each new progress value goes.
    max_bytes: int = field(default=DEFAULT_MAX_BYTES, repr=False)
    on_progress: Callable[[str], None] | None = field(default=None, repr=False)

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose lines carry this job's id and type."""
        return logging.LoggerAdapter(log, {"job_id": self.id, "job_type": self.type})

    def set_progress(self, progress: Any) -> None:
        """Record progress (any JSON value); it reaches the database with the next heartbeat.

        A value the database cannot store (NaN, a NUL character, a datetime, ...) raises
        UnstorableValueError (a ValueError) here, naming what is wrong.
        """
        text = encode_json(progress, what="progress", max_bytes=self.max_bytes)
        self._progress = progress
        self.set_progress_json(text)

    def set_progress_json(self, text: str) -> None:
        """Record progress already encoded as JSON (the worker's child processes send it so)."""
        self._progress_json = text
        self._progress_dirty = True
        if self.on_progress is not None:
            self.on_progress(text)

    def take_progress(self) -> Any:
        """The progress set since the last call, or None."""
        if not self._progress_dirty:
            return None
        self._progress_dirty = False
        return self._progress

    def take_progress_json(self) -> str | None:
        """The progress set since the last call as JSON text, or None (the worker's heartbeat)."""
        if not self._progress_dirty:
            return None
        self._progress_dirty = False
        return self._progress_json


SyncHandler = Callable[[JobContext], Any]
AsyncHandler = Callable[[JobContext], Awaitable[Any]]
Handler = SyncHandler | AsyncHandler
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True, slots=True)
class JobType:
    """A registered job type."""

    name: str
    handler: Handler
    is_async: bool
    timeout: float | None = None  # None: the worker's PASSITO_JOB_TIMEOUT


class UnknownJobTypeError(LookupError):
    """No handler is registered under this name."""


class Registry:
    """Job types by name."""

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}

    def register(self, name: str, handler: Handler, *, timeout: float | None = None) -> JobType:
        if not name or not isinstance(name, str):
            raise ValueError("a job type needs a non-empty name")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout of job type {name!r} must be positive")
        existing = self._types.get(name)
        if existing is not None and existing.handler is not handler:
            raise ValueError(f"job type {name!r} is already registered by {existing.handler!r}")
        job = JobType(name, handler, inspect.iscoroutinefunction(handler), timeout)
        self._types[name] = job
        return job

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def __getitem__(self, name: str) -> JobType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownJobTypeError(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[JobType]:
        return iter(sorted(self._types.values(), key=lambda job: job.name))

    def names(self) -> list[str]:
        return sorted(self._types)


registry = Registry()
"""The process-wide registry the worker reads."""


@overload
def job_type(name: H, /) -> H: ...
@overload
def job_type(
    name: str | None = None, /, *, timeout: float | None = None, into: Registry | None = None
) -> Callable[[H], H]: ...
def job_type(name: Any = None, /, *, timeout: float | None = None, into: Registry | None = None) -> Any:
    """Register a function as a job type: `@job_type("Name", timeout=60)` or `@job_type`.

    `into` picks another registry than the process-wide one (tests).
    """
    target = into if into is not None else registry

    def decorate(handler: H) -> H:
        target.register(name if isinstance(name, str) else handler.__name__, handler, timeout=timeout)
        return handler

    if callable(name):
        handler, name = name, None
        return decorate(handler)
    return decorate
