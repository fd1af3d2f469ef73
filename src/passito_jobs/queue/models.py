"""The queue's vocabulary: job states, dispatch requests, and the rows the queue reads.

Rows become these dataclasses by column name (`Job.from_row`, `ClaimedJob` through
`asyncstore.claimed_rows`, `QueueStats` through psycopg's `class_row`), never by position, so
a column added to a query or the table cannot shift a value into the wrong field.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

JsonObject = dict[str, Any]

FAR_FUTURE = datetime.max.replace(tzinfo=UTC)
"""How a stored time past year 9999 reads (PostgreSQL's 'infinity', or year 20000): Python's
datetime ends there. Only rows written outside the limits (before migration 0002, or by hand)
hold such times."""
FAR_PAST = datetime.min.replace(tzinfo=UTC)
"""How a stored time before year 1 reads ('-infinity', or a date BC)."""
UNREADABLE_JSON_KEY = "unreadable"
"""The one key of what a JSON value nested too deeply for Python's decoder reads as."""


class JobState(enum.StrEnum):
    """The life of a job; docs/architecture.md draws the transitions."""

    BLOCKED = "blocked"
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class JobRequest:
    """One job to dispatch (the arguments of `dispatch`, for `dispatch_many`): `delay` and
    `unique_for` in seconds or as a timedelta, as `dispatch` takes them."""

    type: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    delay: float | None = None
    run_at: datetime | None = None
    depends_on: Sequence[int] = ()
    max_attempts: int = 3
    unique_key: str | None = None
    concurrency_key: str | None = None
    tags: Sequence[str] = ()
    metadata: Mapping[str, Any] | None = None
    unique_for: float | None = None  # seconds
    unique_mode: str = "keep"
    depends_on_mode: str = "completed"

    def __post_init__(self) -> None:
        # A timedelta becomes its seconds, as `dispatch` takes it (frozen: set through object).
        delay: object = self.delay
        if isinstance(delay, timedelta):
            object.__setattr__(self, "delay", delay.total_seconds())
        unique_for: object = self.unique_for
        if isinstance(unique_for, timedelta):
            object.__setattr__(self, "unique_for", unique_for.total_seconds())


@dataclass(frozen=True, slots=True)
class ParentOutcome:
    """How one parent of a finished-mode child ended (`ctx.parents`): its state, its result
    (decoded JSON) when it completed, its error when it failed. `result_omitted`: the parents'
    results passed 8 MiB of JSON in all and this one was left out (read it with `wait`)."""

    id: int
    type: str
    state: JobState
    result: Any = None
    error: str | None = None
    result_omitted: bool = False

    @property
    def completed(self) -> bool:
        return self.state is JobState.COMPLETED


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker holds: what a handler needs, and the attempt it is on."""

    id: int
    queue: str
    type: str
    payload: JsonObject
    priority: int
    attempt: int
    max_attempts: int
    waited_seconds: float
    unreadable: str | None = None  # why the payload could not be decoded: the job fails with it
    metadata: JsonObject | None = None  # the job's metadata (its dispatcher's trace context), if any
    parents: tuple[ParentOutcome, ...] = ()  # a finished-mode child's parents, in id order
    handed: bool = False  # handed to this worker by a dispatch (handoff), not claimed by it


@dataclass(frozen=True)
class Job:
    """A job row, as `jobs show` prints it."""

    id: int
    queue: str
    type: str
    payload: JsonObject
    priority: int
    state: JobState
    run_at: datetime
    attempts: int
    max_attempts: int
    depends_on: list[int]
    waiting_on: int
    unique_key: str | None
    worker_id: str | None
    claimed_at: datetime | None
    heartbeat_at: datetime | None
    last_error: str | None
    result: Any
    progress: Any
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    snoozes: int = 0
    concurrency_key: str | None = None
    tags: list[str] = field(default_factory=list)
    metadata: JsonObject = field(default_factory=dict)
    depends_on_mode: str | None = None  # 'completed' or 'finished' for a job with parents

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        values = {name: row[name] for name in cls.__dataclass_fields__ if name in row}
        values["state"] = JobState(values["state"])
        values["depends_on"] = list(values["depends_on"] or [])
        values["tags"] = list(values["tags"] or [])
        values["metadata"] = values["metadata"] or {}
        return cls(**values)


@dataclass(frozen=True)
class FlowJob:
    """A job in another's flow (`jobs show`): a parent, or a descendant `depth` dependencies
    down, reached from `parent_id`."""

    id: int
    type: str
    state: JobState
    parent_id: int | None = None
    depth: int = 0


@dataclass(frozen=True)
class JobFlow:
    """A job's parents (at most a limit, then how many more) and its descendants (nearest first,
    at most a limit), and how many more descendants there are (`capped`: at least that many:
    the count stopped)."""

    parents: list[FlowJob]
    descendants: list[FlowJob]
    more_descendants: int = 0
    capped: bool = False
    more_parents: int = 0

    def to_json(self) -> dict[str, Any]:
        """As `jobs show --json` and the admin API's job give it."""
        return {
            "parents": [{"id": p.id, "type": p.type, "state": p.state.value} for p in self.parents],
            "more_parents": self.more_parents,
            "descendants": [
                {"id": d.id, "type": d.type, "state": d.state.value, "after": d.parent_id, "depth": d.depth}
                for d in self.descendants
            ],
            "more_descendants": self.more_descendants,
            "more_descendants_at_least": self.capped,
        }


@dataclass(frozen=True)
class QueueFlow:
    """One queue's flow control (`passito_jobs.queue_flow()`): its settings (None: no limit),
    its ready and processing jobs, and the ready jobs held back by a pause or a limit."""

    queue: str
    paused: bool
    concurrency: int | None
    rate_limit: int | None
    rate_period: float | None  # seconds
    key_concurrency: int | None
    ready: int
    processing: int
    held_back: int

    @property
    def limited(self) -> bool:
        return self.paused or any(
            v is not None for v in (self.concurrency, self.rate_limit, self.key_concurrency)
        )


@dataclass(frozen=True)
class FlowChange:
    """A change of a queue's flow control from the admin API or dashboard, and its audit row."""

    queue: str
    action: str  # pause, resume or limit
    created: bool
    """The queue had no flow-control row yet (a new name, or a typo: the answer says so)."""
    audit_id: int


@dataclass(frozen=True)
class QueueStats:
    """One queue's numbers, as health checks and the exporter see them (`Store.queue_stats`).

    `ready` jobs are pending jobs whose run_at has come; `stale` ones have been ready for longer
    than the stale threshold, `stuck` ones are processing without a heartbeat for longer than
    the stuck threshold. `failed` is the whole dead-letter set; the `*_recently` counts cover
    jobs that finished within the window.
    """

    queue: str
    blocked: int = 0
    pending: int = 0
    ready: int = 0
    stale: int = 0
    oldest_ready_age: float = 0.0
    processing: int = 0
    stuck: int = 0
    failed: int = 0
    completed_recently: int = 0
    failed_recently: int = 0
    paused: bool = False
    """Paused (docs/flow-control.md): its ready jobs wait on purpose and are not counted stale."""
    held_back: int = 0
    """Ready jobs a claim cannot take now: the queue is paused, at its concurrency, or their
    concurrency key is at the queue's key concurrency."""
    concurrency: int | None = None
    """The queue's limits (docs/flow-control.md), None when it has none: its concurrency, its
    rate in jobs started per second, and its key concurrency. Not added up in totals."""
    rate_per_second: float | None = None
    key_concurrency: int | None = None

    @property
    def failure_ratio(self) -> float:
        """Failed among the jobs that finished within the window; 0 when none finished."""
        finished = self.completed_recently + self.failed_recently
        return self.failed_recently / finished if finished else 0.0


@dataclass(frozen=True)
class Load:
    """What the autoscalers scale on (`passito_jobs.load()`): jobs ready now and jobs in flight."""

    ready: int
    processing: int

    @property
    def total(self) -> int:
        return self.ready + self.processing


@dataclass(frozen=True)
class RescuedJob:
    """A job the rescue touched: back to pending, or failed on its last attempt."""

    id: int
    state: str
    worker_id: str | None


@dataclass(frozen=True)
class ScheduleRow:
    """A schedule as the schedules table holds it (`passito-jobs schedules list`)."""

    name: str
    type: str
    queue: str
    cron: str | None
    every: float | None
    timezone: str
    catch_up: str
    paused: bool
    stale: bool
    last_slot: datetime | None
    last_job_id: int | None
    next_slot: datetime | None
    checked_at: datetime | None


@dataclass(frozen=True)
class JobResult:
    """A job's state, result (decoded JSON) and error (`passito_jobs.job_result()`)."""

    state: JobState
    result: Any
    last_error: str | None

    @property
    def finished(self) -> bool:
        return self.state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)
