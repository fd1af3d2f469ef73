"""What the dashboard and the admin API read and do, on the queue's own connection.

Every read is bounded: a page walks an index for at most `limit` rows, or a window of ids when
a filter has no index of its own (docs/dashboard.md explains the windows); a list of workers,
children or flow nodes stops at a fixed size. Actions go through the SQL functions
`passito_jobs.retry` and `passito_jobs.cancel`, the same rules as the CLI and the PHP app, and
write `passito_jobs.audit_log` in the same statement. The SQL lives in `sql/admin.sql`, as named
queries; database errors leave as the queue's own (errors.py), as the Store's do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import class_row

from passito_jobs.queue.connection import read_any_row
from passito_jobs.queue.errors import FlowControlError, translate, translated
from passito_jobs.queue.flow import Rate
from passito_jobs.queue.models import FlowChange, Job, JobState, QueueFlow, QueueStats
from passito_jobs.queue.sqlfiles import named_queries, query
from passito_jobs.queue.store import RARE_TAG_JOBS, Store

ID_WINDOW = 50_000
"""Ids one window query covers when a filter has no index to walk (queue, type, created time,
states but failed and cancelled): the primary key's range scan reads at most this many rows."""
SCAN_BUDGET = 200_000
"""Ids one page request covers at most, window after window, before it answers with what it
found and a cursor to go on from."""
MAX_BULK = 10_000
"""Most jobs one bulk action changes; the answer says when more matched."""
MAX_CHILDREN = 200
MAX_FLOW = 60
MAX_WORKERS = 500
MAX_IDS_SHOWN = 100

INDEXED_STATES = (JobState.FAILED, JobState.CANCELLED)
"""States listed exactly by jobs_state_id_idx; the others are paged by windows of ids."""
# Job states each action applies to (the SQL functions' own rule; used to pick candidates).
RETRYABLE = (JobState.FAILED, JobState.CANCELLED)
CANCELLABLE = (JobState.BLOCKED, JobState.PENDING, JobState.PROCESSING)


def _q(name: str) -> str:
    return named_queries("admin.sql")[name]


@dataclass(frozen=True)
class JobFilter:
    """The filters of the jobs list and of bulk actions (all optional, combined with AND)."""

    state: JobState | None = None
    queue: str | None = None
    type: str | None = None
    tag: str | None = None
    id: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None

    def params(self) -> dict[str, Any]:
        return {
            "state": None if self.state is None else self.state.value,
            "queue": self.queue,
            "type": self.type,
            "tag": self.tag,
            "id": self.id,
            "created_from": self.created_from,
            "created_to": self.created_to,
        }

    def to_json(self) -> dict[str, Any]:
        """The filter as the audit log records it (only the filters that were given)."""
        values = self.params()
        return {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in values.items()
            if value is not None
        }

    @property
    def only_state(self) -> bool:
        """No filter but the state (and the id)."""
        others = (self.queue, self.type, self.tag, self.created_from, self.created_to)
        return all(v is None for v in others)

    @property
    def indexed_state(self) -> bool:
        """Whether the state picks the rows from an index of its own (the dead-letter view)."""
        return self.state in INDEXED_STATES


@dataclass(frozen=True)
class JobSummary:
    """One row of the jobs list: no payload or result, the first 400 characters of the error."""

    id: int
    queue: str
    type: str
    state: str
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker_id: str | None
    error_head: str | None


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobSummary]
    next_before: int | None
    """Pass as `before` for the next page; None when no older job can match."""
    searched_to: int | None
    """When the page holds fewer jobs than asked although `next_before` is set: the search
    covered ids down to this one (the scan budget ran out), and goes on from there."""


@dataclass(frozen=True)
class Relative:
    relation: str  # parent or child
    id: int
    type: str
    queue: str
    state: str


@dataclass(frozen=True)
class FlowNode:
    id: int
    type: str
    queue: str
    state: str
    depends_on: list[int]
    attempts: int
    max_attempts: int


@dataclass(frozen=True)
class WorkerSeen:
    worker_id: str | None
    jobs: int
    job_ids: list[int]
    queues: list[str]
    types: list[str]
    oldest_claim: datetime | None
    last_heartbeat: datetime | None
    heartbeat_age: float | None
    free_slots: int | None = None  # waiting for jobs with this many free slots (handoff); None: not waiting


@dataclass(frozen=True)
class ThroughputBucket:
    bucket: datetime
    completed: int
    failed: int


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    source: str
    job_ids: list[int]
    asked: int
    changed_ids: list[int]
    changed: int
    filter: dict[str, Any] | None
    job_changed: bool | None


@dataclass(frozen=True)
class ActionResult:
    action: str
    asked: list[int]
    changed: list[int]
    audit_id: int


@dataclass(frozen=True)
class Actor:
    """Who asks for an action, as the audit log records it."""

    name: str
    role: str
    source: str  # dashboard or api

    def params(self) -> dict[str, str]:
        """The audit row's columns actor, role and source, as query parameters."""
        return {"actor": self.name, "role": self.role, "source": self.source}


class Admin:
    """The dashboard's queries and actions over one Store (its connection, autocommit)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.conn = store.conn

    def _rows(self, cls: type[Any], query: str, params: dict[str, Any]) -> list[Any]:
        with self.conn.cursor(row_factory=class_row(cls)) as cur:
            read_any_row(cur)
            return cur.execute(_q(query), params).fetchall()

    @translated
    def set_timeout(self, seconds: float) -> None:
        """Bound every later statement on this connection."""
        self.conn.execute(_q("set_session_timeout"), {"timeout_ms": max(1, round(seconds * 1000))})

    # ------------------------------------------------------------ reads

    def queue_stats(
        self, *, window: float, stale_after: float, stuck_after: float, timeout: float
    ) -> list[QueueStats]:
        return self.store.queue_stats(
            stale_after=stale_after, stuck_after=stuck_after, window=window, timeout=timeout
        )

    def job(self, job_id: int) -> Job | None:
        return self.store.get_job(job_id)

    @translated
    def list_jobs(self, where: JobFilter, *, before: int | None, limit: int) -> JobPage:
        """A page of jobs, newest first, with ids below `before` (None: from the newest)."""
        row = self.conn.execute(_q("job_id_range")).fetchone()
        lowest, highest = (row[0], row[1]) if row else (None, None)
        if lowest is None or highest is None:
            return JobPage([], None, None)
        top = highest + 1 if before is None else min(before, highest + 1)
        if where.id is not None:
            top = min(top, where.id + 1)
            lowest = max(lowest, where.id)
        if where.tag is not None and self._rare_tag(where.tag):
            # A rare tag's jobs come from its index (jobs_tags_idx), sorted: an exact page.
            jobs = self._page("jobs_with_tag", where, top, lowest, limit)
            more = len(jobs) == limit
            return JobPage(jobs, jobs[-1].id if more else None, None)
        if where.indexed_state and where.only_state:
            # The state's index gives exactly the next page.
            jobs = self._page("jobs_in_state", where, top, lowest, limit)
            more = len(jobs) == limit
            return JobPage(jobs, jobs[-1].id if more else None, None)
        return self._windowed(where, top, lowest, limit)

    def _rare_tag(self, tag: str) -> bool:
        """Whether fewer than RARE_TAG_JOBS jobs carry `tag` (Store.list_jobs decides the same way:
        the planner cannot tell a rare tag from a common one)."""
        row = self.conn.execute(query("tag_matches"), {"tag": tag, "cap": RARE_TAG_JOBS}).fetchone()
        return row is not None and int(row[0]) < RARE_TAG_JOBS

    def _page(self, query: str, where: JobFilter, before: int, floor: int, limit: int) -> list[JobSummary]:
        params = {**where.params(), "before": before, "floor": floor, "limit": limit}
        rows: list[JobSummary] = self._rows(JobSummary, query, params)
        return rows

    def _windowed(self, where: JobFilter, top: int, lowest: int, limit: int) -> JobPage:
        """Walk windows of ids down from `top` until the page is full, the ids run out, or the
        scan budget is spent."""
        if where.indexed_state:
            query = "jobs_in_state"
        elif where.created_from is not None and where.created_to is not None:
            query = "jobs_in_created_range"
        else:
            query = "jobs_in_id_window"
        jobs: list[JobSummary] = []
        scanned = 0
        before = top
        while before > lowest and scanned < SCAN_BUDGET and len(jobs) < limit:
            floor = max(lowest, before - ID_WINDOW)
            jobs += self._page(query, where, before, floor, limit - len(jobs))
            scanned += before - floor
            before = floor
        if len(jobs) == limit:
            return JobPage(jobs, jobs[-1].id, None)
        if before > lowest:
            return JobPage(jobs, before, before)
        return JobPage(jobs, None, None)

    @translated
    def relatives(self, job: Job) -> list[Relative]:
        """The job's parents and its first MAX_CHILDREN children, with their states."""
        params = {"parents": list(job.depends_on), "id": job.id, "limit": MAX_CHILDREN}
        rows: list[Relative] = self._rows(Relative, "relatives", params)
        return rows

    @translated
    def flow(self, job_id: int) -> list[FlowNode]:
        """The jobs connected to `job_id` by dependencies, nearest first, at most MAX_FLOW."""
        rows: list[FlowNode] = self._rows(FlowNode, "flow", {"id": job_id, "limit": MAX_FLOW})
        return rows

    @translated
    def workers(self) -> list[WorkerSeen]:
        rows: list[WorkerSeen] = self._rows(
            WorkerSeen, "workers", {"ids": MAX_IDS_SHOWN, "limit": MAX_WORKERS}
        )
        return rows

    @translated
    def throughput(self, *, span: float, bucket: float) -> list[ThroughputBucket]:
        rows: list[ThroughputBucket] = self._rows(
            ThroughputBucket, "throughput", {"span": span, "bucket": bucket}
        )
        return rows

    @translated
    def audit(self, *, before: int | None, limit: int) -> list[AuditEntry]:
        params = {"before": before or 2**63 - 1, "limit": limit, "ids": MAX_IDS_SHOWN}
        rows: list[AuditEntry] = self._rows(AuditEntry, "audit_page", params)
        return rows

    @translated
    def audit_of_job(self, job_id: int, *, limit: int = 50) -> list[AuditEntry]:
        params = {"job": job_id, "limit": limit, "ids": MAX_IDS_SHOWN}
        rows: list[AuditEntry] = self._rows(AuditEntry, "audit_of_job", params)
        return rows

    @translated
    def job_states(self, ids: Sequence[int]) -> dict[int, str]:
        return {int(r[0]): str(r[1]) for r in self.conn.execute(_q("job_states"), {"ids": list(ids)})}

    # ------------------------------------------------------------ actions

    @translated
    def candidates(self, where: JobFilter, states: Sequence[JobState], *, most: int) -> list[int]:
        """The ids a bulk action over `where` would ask for: jobs in `states` (narrowed by the
        filter's own state), oldest first, at most `most`."""
        if where.state is not None:
            states = [s for s in states if s is where.state]
        if not states:
            return []
        params = {**where.params(), "states": [s.value for s in states], "max": most}
        return [int(row[0]) for row in self.conn.execute(_q("action_candidates"), params)]

    def retry(self, ids: Sequence[int], actor: Actor, where: JobFilter | None = None) -> ActionResult:
        return self._act("retry", ids, actor, where)

    def cancel(self, ids: Sequence[int], actor: Actor, where: JobFilter | None = None) -> ActionResult:
        return self._act("cancel", ids, actor, where)

    def queue_flow(self) -> list[QueueFlow]:
        """Every queue's flow control: settings, ready, processing and held-back jobs."""
        return self.store.flow.queues()

    def set_paused(self, queue: str, *, paused: bool, actor: Actor) -> FlowChange:
        """Pause or resume `queue` through passito_jobs.pause_queue / resume_queue, with an
        audit row; a name the SQL function refuses raises FlowControlError."""
        action = "pause" if paused else "resume"
        params = {"queue": queue, **actor.params()}
        try:
            row = self.conn.execute(_q(f"{action}_logged"), params).fetchone()
        except pg_errors.CheckViolation as exc:
            raise FlowControlError(exc.diag.message_primary or str(exc)) from None
        except (psycopg.Error, OSError) as exc:
            raise translate(exc, self.conn) from exc
        assert row is not None
        return FlowChange(queue, action, bool(row[0]), int(row[1]))

    @translated
    def set_schedule_paused(self, name: str, *, paused: bool, actor: Actor) -> int | None:
        """Pause or resume the schedule `name`, with an audit row; the audit row's id, or None
        when no schedule has that name (nothing is written then)."""
        action = "pause" if paused else "resume"
        params = {"name": name, "paused": paused, "action": action, **actor.params()}
        row = self.conn.execute(_q("schedule_paused_logged"), params).fetchone()
        return None if row is None else int(row[0])

    def set_limits(self, queue: str, given: dict[str, Any], actor: Actor) -> FlowChange:
        """Set the given limits of `queue` (FlowControl.set_limits) and an audit row naming
        them, in one transaction; a value the rules refuse raises FlowControlError."""
        shown = {name: str(v) if isinstance(v, Rate) else v for name, v in given.items()}
        params = {"queue": queue, "limits": json.dumps(shown), **actor.params()}
        with self.conn.transaction():
            created = self.store.flow.set_limits(queue, **given)
            row = self.conn.execute(_q("limits_logged"), params).fetchone()
        assert row is not None
        return FlowChange(queue, "limit", created, int(row[0]))

    @translated
    def _act(self, action: str, ids: Sequence[int], actor: Actor, where: JobFilter | None) -> ActionResult:
        params = {
            "ids": list(ids),
            **actor.params(),
            "filter": None if where is None else json.dumps(where.to_json()),
        }
        row = self.conn.execute(_q(f"{action}_logged"), params).fetchone()
        assert row is not None
        return ActionResult(action, list(ids), [int(i) for i in row[0] or []], int(row[1]))
