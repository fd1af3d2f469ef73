# Longer than 400 lines: a handler's whole API in one public module, with the checks of job_type.
"""Job types by name: the handlers a worker runs, and what a handler is given.

Register a job type in your own module and load it in the worker with `--import` or
PASSITO_JOB_MODULES:

    from passito_jobs import JobContext, job_type

    @job_type("SendReminder", timeout=60, settings=ReminderSettings)
    def send_reminder(ctx: JobContext) -> dict[str, str]:
        settings = ctx.settings_of(ReminderSettings)
        ...

A job type may name a settings group (any class with a `from_env()` classmethod, such as a
`passito_jobs.settings.SettingsGroup`): the worker reads each group once when it starts
(`Registry.configure`: a bad or missing setting stops it there, with one line) and hands it to
every attempt as `ctx.settings`. Importing this module registers nothing.

Sync handlers run in the worker's thread pool (or, with PASSITO_SYNC_ISOLATION=process, in its
child processes); `async def` handlers run on its event loop. A handler's return value (JSON) is
stored as the job's result; one the database cannot store (NaN, a NUL character, a set, more
than PASSITO_MAX_PAYLOAD_BYTES) fails the job for good, naming what is wrong. Raise
`PermanentError` to fail the job at once, without retries; any other exception is retried with
backoff. Raise `Snooze(seconds)` to run again later without spending an attempt.
"""

from __future__ import annotations

import builtins
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol, Self, TypeVar, overload

from passito_jobs.logs import job_fields
from passito_jobs.queue.errors import safe_str
from passito_jobs.queue.limits import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    UnstorableValueError,
    check_name,
    encode_json,
    load_json,
    number,
    printable,
)
from passito_jobs.queue.models import ParentOutcome
from passito_jobs.queue.schedules import Schedule, ScheduleError
from passito_jobs.settings import MAX_DURATION

log = logging.getLogger("passito_jobs.job")
_EVENT_LOCK = threading.Lock()


class SettingsSource(Protocol):
    """A job type's settings group: read from the environment once, when a worker starts."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self: ...


S = TypeVar("S", bound=SettingsSource)


class PermanentError(Exception):
    """Raised by a handler: the job fails now and is not retried (bad input, for example)."""


MAX_SNOOZE_SECONDS = 36500 * 86400.0  # 100 years, like every other duration
DEFAULT_MAX_SNOOZES = 100
MAX_SNOOZES = 1_000_000


class Snooze(Exception):
    """Raised by a handler: run this job again in `seconds` without spending an attempt.

    A job type allows `max_snoozes` of them per job (`@job_type(..., max_snoozes=...)`, default
    100); one more fails the job, saying so. Its dependents wait meanwhile.
    """

    def __init__(self, seconds: float | timedelta) -> None:
        value = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"Snooze takes seconds (a number or a timedelta), got {type(seconds).__name__}")
        if not 0 <= value <= MAX_SNOOZE_SECONDS:  # NaN fails this too
            most = f"{MAX_SNOOZE_SECONDS:.0f} seconds (100 years)"
            raise ValueError(f"Snooze takes 0 to {most}, got {number(value)}")
        super().__init__(float(value))
        self.seconds = float(value)


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
    parents: tuple[ParentOutcome, ...] = ()
    """With `depends_on_mode="finished"`: how each parent ended (ParentOutcome records, in id
    order); empty otherwise."""
    _progress: Any = field(default=None, repr=False)
    _progress_json: str | None = field(default=None, repr=False)
    _progress_dirty: bool = field(default=False, repr=False)
    # Set by the worker: the size limit of a progress value, and (in a child process of
    # PASSITO_SYNC_ISOLATION=process) where each new progress value goes.
    max_bytes: int = field(default=DEFAULT_MAX_PAYLOAD_BYTES, repr=False)
    on_progress: Callable[[str], None] | None = field(default=None, repr=False)
    settings: Any = field(default=None, repr=False)
    """The job type's settings group, as the worker read it when it started (or None)."""
    trace_id: str | None = field(default=None, repr=False)
    """The trace the job belongs to (32 hex digits), when it was dispatched inside one."""
    _cancelled: threading.Event | None = field(default=None, repr=False, compare=False)

    @property
    def cancelled(self) -> threading.Event:
        """Set when the worker stops this attempt: the job was cancelled (`jobs cancel`), its
        timeout passed, another worker holds it now, or shutdown gives it back. A sync handler
        that runs long polls it (`if ctx.cancelled.is_set(): return`) or waits on it
        (`ctx.cancelled.wait(5)` instead of `time.sleep(5)`); an async handler is cancelled
        anyway. Made when first asked for: most attempts never need one."""
        event = self._cancelled
        if event is None:
            with _EVENT_LOCK:  # the handler's thread and the worker's may ask at once
                event = self._cancelled
                if event is None:
                    event = self._cancelled = threading.Event()
        return event

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose lines carry this job's id, type, queue, attempt and worker id."""
        attempt = f"{self.attempt}/{self.max_attempts}"
        return logging.LoggerAdapter(
            log,
            {
                "job": job_fields(
                    self.id, self.type, self.queue, attempt, self.worker_id, trace_id=self.trace_id
                )
            },
        )

    def settings_of(self, kind: builtins.type[S]) -> S:
        """This job type's settings group (`@job_type(..., settings=kind)`), typed. A handler
        called outside a worker (a test, a script) reads it from the environment."""
        found = self.settings if isinstance(self.settings, kind) else kind.from_env()
        assert isinstance(found, kind)
        return found

    def set_progress(self, progress: Any) -> None:
        """Record progress (any JSON value); it reaches the database with the next heartbeat.

        A value the database cannot store (NaN, a NUL character, a datetime, ...) raises
        UnstorableValueError (a ValueError) here, naming what is wrong.
        """
        text = encode_json(progress, what="progress", max_bytes=self.max_bytes)
        self._progress = progress
        self._keep_progress_json(text)

    def set_progress_json(self, text: str) -> None:
        """Record progress already encoded as JSON (the worker's child processes send it so).

        Text that is not JSON (or names a key twice), or JSON the database cannot store by the
        rules of `set_progress`, raises UnstorableValueError (a ValueError) here: it would make
        the database refuse the heartbeat that carries the progress of other jobs too.
        """
        if not isinstance(text, str):
            raise UnstorableValueError(f"progress must be JSON text (a str), got {type(text).__name__}")
        try:
            value = load_json(text)
        except RecursionError:
            raise UnstorableValueError("progress is not JSON text: it is nested too deeply") from None
        except ValueError as exc:
            raise UnstorableValueError(f"progress is not JSON text: {printable(str(exc), 200)}") from None
        self.set_progress(value)

    def _keep_progress_json(self, text: str) -> None:
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

# Where a job type's sync attempts run: None follows the worker's PASSITO_SYNC_ISOLATION;
# "process" always runs them in child processes (CPU-bound work, like a PDF, on every core).
ISOLATIONS = (None, "process")


@dataclass(frozen=True, slots=True)
class JobType:
    """A registered job type."""

    name: str
    handler: Handler
    is_async: bool
    timeout: float | None = None  # None: the worker's PASSITO_JOB_TIMEOUT
    settings: type[SettingsSource] | None = None  # its settings group, if it has one
    max_snoozes: int = DEFAULT_MAX_SNOOZES  # Snooze requests per job before it fails
    isolation: str | None = None  # "process": its sync attempts run in child processes


class UnknownJobTypeError(LookupError):
    """No handler is registered under this name."""


class Registry:
    """Job types by name."""

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}
        self._settings: dict[type[SettingsSource], Any] = {}
        self._schedules: dict[str, Schedule] = {}

    def add_schedule(self, schedule: Schedule) -> Schedule:
        """Register a periodic job; a second, different schedule of the same name is an error."""
        existing = self._schedules.get(schedule.name)
        if existing is not None and existing != schedule:
            raise ScheduleError(f"schedule {schedule.name!r} is already registered with another definition")
        self._schedules[schedule.name] = schedule
        return schedule

    def schedules(self) -> list[Schedule]:
        """The periodic jobs registered (`periodic()`, the schedules file), by name."""
        return [self._schedules[name] for name in sorted(self._schedules)]

    def register(
        self,
        name: str,
        handler: Handler,
        *,
        timeout: float | None = None,
        settings: type[SettingsSource] | None = None,
        max_snoozes: int = DEFAULT_MAX_SNOOZES,
        isolation: str | None = None,
    ) -> JobType:
        # By dispatch's rules (non-blank text; ValueError otherwise): the worker registers its
        # types in the database every heartbeat round, and a refused name would fail the rounds.
        check_name("job type", name)
        if not callable(handler):
            raise TypeError(f"job type {name!r}: the handler must be callable, not {type(handler).__name__}")
        if isolation not in ISOLATIONS:
            shown = printable(safe_str(isolation), 40)
            raise ValueError(f"isolation of job type {name!r} must be 'process' or None, got {shown!r}")
        if isolation == "process" and inspect.iscoroutinefunction(handler):
            raise ValueError(f"isolation='process' runs sync handlers only; job type {name!r} is async")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= MAX_DURATION  # NaN fails this too
        ):
            raise ValueError(
                f"timeout of job type {name!r} must be positive and at most 100 years (a number of seconds)"
            )
        if settings is not None and not callable(getattr(settings, "from_env", None)):
            raise TypeError(f"settings of job type {name!r} must be a settings group (from_env())")
        if (
            isinstance(max_snoozes, bool)
            or not isinstance(max_snoozes, int)
            or not 0 <= max_snoozes <= MAX_SNOOZES
        ):
            raise ValueError(
                f"max_snoozes of job type {name!r} must be a whole number from 0 to {MAX_SNOOZES}"
            )
        existing = self._types.get(name)
        if existing is not None and existing.handler is not handler:
            raise ValueError(f"job type {name!r} is already registered by {existing.handler!r}")
        job = JobType(
            name, handler, inspect.iscoroutinefunction(handler), timeout, settings, max_snoozes, isolation
        )
        self._types[name] = job
        return job

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def configure(self, environ: Mapping[str, str] | None = None) -> None:
        """Read the settings group of every registered job type, once each (a worker does it at
        start: ConfigError, one line naming the variable, stops it there)."""
        for job in self:
            if job.settings is not None and job.settings not in self._settings:
                self._settings[job.settings] = job.settings.from_env(environ)

    def settings_for(self, job: JobType) -> Any:
        """The settings group of a job type, read on first use if `configure` did not run."""
        if job.settings is None:
            return None
        found = self._settings.get(job.settings)
        if found is None:
            found = self._settings[job.settings] = job.settings.from_env()
        return found

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
    name: str | None = None,
    /,
    *,
    timeout: float | None = None,
    settings: type[SettingsSource] | None = None,
    max_snoozes: int = DEFAULT_MAX_SNOOZES,
    isolation: str | None = None,
    into: Registry | None = None,
) -> Callable[[H], H]: ...
def job_type(
    name: Any = None,
    /,
    *,
    timeout: float | None = None,
    settings: type[SettingsSource] | None = None,
    max_snoozes: int = DEFAULT_MAX_SNOOZES,
    isolation: str | None = None,
    into: Registry | None = None,
) -> Any:
    """Register a function as a job type: `@job_type("Name", timeout=60)` or `@job_type`.

    `settings`: the job type's settings group (`ctx.settings`). `max_snoozes`: how often one
    job may raise `Snooze` before it fails. `isolation="process"`: its attempts run in the
    worker's child processes whatever PASSITO_SYNC_ISOLATION says (sync handlers only), so
    CPU-bound ones use more than one core. `into` picks another registry than the process-wide
    one (tests).
    """
    target = into if into is not None else registry

    if name is not None and not callable(name) and not isinstance(name, str):
        raise TypeError(f"a job type's name must be a string, got {type(name).__name__}")

    def decorate(handler: H) -> H:
        job_name = name if isinstance(name, str) else handler.__name__
        target.register(
            job_name,
            handler,
            timeout=timeout,
            settings=settings,
            max_snoozes=max_snoozes,
            isolation=isolation,
        )
        return handler

    if callable(name):
        handler, name = name, None
        return decorate(handler)
    return decorate


def periodic(
    name: str,
    type: str,
    *,
    cron: str | None = None,
    every: str | float | timedelta | None = None,
    payload: Mapping[str, Any] | None = None,
    queue: str = "default",
    timezone: str = "UTC",
    catch_up: str = "latest",
    into: Registry | None = None,
) -> Schedule:
    """Register a periodic job: dispatch job type `type` on a cron expression (`cron="0 2 * * *"`,
    in `timezone`) or every period (`every="30s"`). Call it in a job module: the worker that
    holds the maintenance lease dispatches each slot once across the fleet. `catch_up` says what
    happens to slots missed while no worker watched: `latest` (one run), `none`, `all` (each, at
    most the latest 100). ScheduleError (a ValueError) names what is wrong.
    """
    schedule = Schedule.of(
        name=name,
        type=type,
        cron=cron,
        every=every,
        payload=payload if payload is not None else {},
        queue=queue,
        timezone=timezone,
        catch_up=catch_up,
    )
    return (into if into is not None else registry).add_schedule(schedule)
