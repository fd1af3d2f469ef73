# Longer than 400 lines: every synchronous queue operation, one short method each, in one place.
"""`Store`: the queue's operations on one synchronous connection, in its transaction.

It serves dispatch, the CLI, maintenance, health checks and the autoscalers' load; the worker's
hot path is `asyncstore.AsyncStore`. Both run the named queries of `sql/`; the state transitions
themselves are SQL functions created by the migrations. Database errors leave as the queue's own
(errors.py), and rows as named dataclasses, read by column name (models.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb

from passito_jobs.queue import migrate
from passito_jobs.queue.asyncstore import AsyncStore
from passito_jobs.queue.connection import (
    AsyncConn,
    Conn,
    ConnectionHandle,
    connect,
    connect_async,
    read_any_row,
)
from passito_jobs.queue.errors import InvalidJobError, translate, translated
from passito_jobs.queue.flowcontrol import FlowControl
from passito_jobs.queue.limits import DEFAULT_MAX_PAYLOAD_BYTES, encode_metadata, encode_payload
from passito_jobs.queue.models import (
    FlowJob,
    Job,
    JobFlow,
    JobRequest,
    JobState,
    Load,
    QueueStats,
    RescuedJob,
)
from passito_jobs.queue.schedulestore import ScheduleStore
from passito_jobs.queue.sqlfiles import Migration, migrations, named_queries, queries, query

__all__ = [  # the connection helpers too: the usual imports of code that runs queue operations
    "AsyncConn",
    "AsyncStore",
    "Conn",
    "Store",
    "StoreHandle",
    "connect",
    "connect_async",
    "migrations",
    "named_queries",
    "queries",
    "read_any_row",
]

T = TypeVar("T")

MAX_FLOW_SHOWN = 100
"""Descendants `jobs show` and the admin API list for one job; the rest are counted."""

RARE_TAG_JOBS = 10_000
"""A tag on fewer jobs is searched through its index, then sorted; on more, along the newest jobs."""

# Database errors that mean "this job cannot be stored as asked": refused input, not an outage.
_REFUSED = (
    pg_errors.CheckViolation,
    pg_errors.ForeignKeyViolation,
    pg_errors.ProgramLimitExceeded,  # e.g. an index entry too large, for a row beyond the limits
    pg_errors.InvalidParameterValue,  # passito_jobs.max_payload_bytes set to nonsense
)


class Store(ScheduleStore):
    """Queue operations on one synchronous connection, in the connection's transaction."""

    def __init__(self, conn: Conn, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.conn = conn
        self.max_payload_bytes = max_payload_bytes

    # --- migrations

    def migrate(self) -> list[Migration]:
        """Apply pending migrations in order (queue/migrate.py); return those applied."""
        return self._run(migrate.apply, self.conn)

    def schema_version(self) -> int | None:
        """The newest applied migration, or None when the schema is not installed."""
        return self._run(migrate.installed_version, self.conn)

    # --- dispatch

    @translated
    def dispatch(self, request: JobRequest, payload_json: str | None = None) -> int:
        """Dispatch one (validated) request. `payload_json`: its payload already encoded by
        limits.encode_payload; without it the payload is encoded and checked here."""
        if payload_json is None:
            payload_json = encode_payload(request.payload, self.max_payload_bytes)
        try:
            params = _dispatch_params(request, payload_json)
            if _plain(request):
                # Its own transaction (autocommit, no transaction block): a waiting worker may
                # take the job at once (handoff, migration 0014).
                own = self.conn.autocommit and self.conn.info.transaction_status == TransactionStatus.IDLE
                sql, params["hand_off"] = query("insert_job"), own
            else:
                sql = query("dispatch")
            row = self.conn.execute(sql, params).fetchone()
        except _REFUSED as exc:
            raise _invalid_job(exc) from None
        assert row is not None
        return int(row[0])

    def _payloads(
        self, requests: Sequence[JobRequest], given: Sequence[str] | None, max_bytes: int
    ) -> Callable[[int], str]:
        """The JSON text of each request's payload, by index: `given`, or encoded (and checked)
        as the rows are written. In the caller's transaction every payload is checked before
        anything is sent, so a refused one leaves that transaction usable; in a transaction of
        our own a refusal rolls the batch back, so encoding can overlap the COPY."""
        if given is not None:
            return given.__getitem__

        def encode(index: int) -> str:
            try:
                return encode_payload(requests[index].payload, max_bytes)
            except InvalidJobError as exc:
                raise InvalidJobError(f"job {index}: {exc}") from None

        if self.conn.autocommit:
            return encode
        return [encode(i) for i in range(len(requests))].__getitem__

    @translated
    def dispatch_many(
        self,
        requests: Sequence[JobRequest],
        payload_jsons: Sequence[str] | None = None,
        *,
        max_payload_bytes: int | None = None,
    ) -> list[int]:
        """Dispatch many (validated) jobs in the connection's transaction; return their ids in order.

        Plain jobs go in with one binary COPY; jobs with parents or a unique key go through
        the dispatch function, one pipelined statement each. `payload_jsons`: the payloads
        already encoded, as for `dispatch`; without them they are checked against
        `max_payload_bytes` (default: the store's).
        """
        conn = self.conn
        payload = self._payloads(requests, payload_jsons, max_payload_bytes or self.max_payload_bytes)
        plain = [i for i, r in enumerate(requests) if _plain(r)]
        ids: dict[int, int] = {}
        # In autocommit, make the batch atomic; otherwise it joins the caller's transaction
        # (psycopg's transaction() would commit it on exit).
        atomic = conn.transaction() if conn.autocommit else contextlib.nullcontext()
        with atomic:
            if plain:
                ids.update(self._copy(requests, plain, payload))
            rest = [i for i in range(len(requests)) if i not in ids]
            if rest:
                try:
                    with conn.pipeline():
                        cursors = [
                            conn.execute(query("dispatch"), _dispatch_params(requests[i], payload(i)))
                            for i in rest
                        ]
                except _REFUSED as exc:
                    raise _invalid_job(exc) from None
                for index, cur in zip(rest, cursors, strict=True):
                    fetched = cur.fetchone()
                    assert fetched is not None
                    ids[index] = int(fetched[0])
        return [ids[i] for i in range(len(requests))]

    def _copy(
        self, requests: Sequence[JobRequest], plain: Sequence[int], payload: Callable[[int], str]
    ) -> dict[int, int]:
        """COPY the plain jobs (no parents, no unique key); return their ids by index."""
        conn = self.conn
        ids: dict[int, int] = {}
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(query("reserve_ids"), {"count": len(plain)}).fetchone()
        assert row is not None
        now, reserved = row["now"], row["ids"]
        # Tags and metadata travel only in batches that have some: the usual batch copies as before.
        labelled = any(requests[i].tags or requests[i].metadata for i in plain)
        types = ["int8", "text", "text", "jsonb", "int4", "int4", "timestamptz", "text"]
        with conn.cursor().copy(query("copy_labelled_jobs" if labelled else "copy_jobs")) as copy:
            copy.set_types([*types, "text[]", "jsonb"] if labelled else types)
            for index, job_id in zip(plain, reserved, strict=True):
                request = requests[index]
                values: tuple[Any, ...] = (
                    job_id,
                    request.queue,
                    request.type,
                    _payload_param(payload(index)),
                    request.priority,
                    request.max_attempts,
                    _run_at(request, now),
                    request.concurrency_key,
                )
                if labelled:
                    values = (*values, list(request.tags) or None, _metadata_param(request))
                copy.write_row(values)
                ids[index] = job_id
        ready = sorted(
            {requests[i].queue for i in plain if not requests[i].delay and requests[i].run_at is None}
        )
        if ready:
            conn.execute(query("notify_ready"), {"queues": ready})
        return ids

    # --- operator commands

    @translated
    def get_job(self, job_id: int) -> Job | None:
        with self.conn.cursor(row_factory=dict_row) as cur:
            read_any_row(cur)
            row = cur.execute(query("get_job"), {"id": job_id}).fetchone()
        return None if row is None else Job.from_row(row)

    @translated
    def job_flow(self, job: Job, *, limit: int = MAX_FLOW_SHOWN, cap: int = 10_000) -> JobFlow:
        """`job`'s first `limit` parents, and its first `limit` descendants nearest first, with their states;
        the descendants are counted up to about `cap` dependencies walked."""
        params = {"id": job.id, "parents": list(job.depends_on), "limit": limit, "cap": cap}
        with self.conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("job_flow"), params).fetchall()
        parents, descendants, total, capped = [], [], 0, False
        for row in rows:
            found = FlowJob(row["id"], row["type"], JobState(row["state"]), row["parent_id"], row["depth"])
            if row["relation"] == "parent":
                parents.append(found)
            else:
                descendants.append(found)
                total, capped = int(row["total"]), bool(row["capped"])
        more_parents = max(0, len(set(job.depends_on)) - limit)
        return JobFlow(parents, descendants, max(0, total - len(descendants)), capped, more_parents)

    @translated
    def list_jobs(
        self,
        *,
        state: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        tag: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """The newest jobs matching every filter given; `tag`: jobs carrying that tag, in
        milliseconds however many jobs the table holds (a rare tag through its index, a common
        one along the newest jobs: queries.sql, tag_matches)."""
        params = {"state": state, "type": type, "queue": queue, "tag": tag, "limit": limit}
        name = "list_jobs"
        if tag is not None:
            row = self.conn.execute(query("tag_matches"), {"tag": tag, "cap": RARE_TAG_JOBS}).fetchone()
            if row is not None and row[0] < RARE_TAG_JOBS:
                name = "list_tagged_jobs"
        with self.conn.cursor(row_factory=dict_row) as cur:
            read_any_row(cur)
            rows = cur.execute(query(name), params).fetchall()
        return [Job.from_row(row) for row in rows]

    @translated
    def existing_ids(self, ids: Sequence[int]) -> set[int]:
        return set(self._column("existing_ids", {"ids": list(ids)}))

    @translated
    def failed_ids(self, *, type: str | None = None) -> list[int]:
        return self._column("failed_ids", {"type": type})

    @translated
    def retry(self, ids: Sequence[int]) -> list[int]:
        """Replay failed or cancelled jobs with their attempts reset; the ids replayed."""
        return list(self._value("retry", {"ids": list(ids)}) or [])

    @translated
    def dead_parents(self, ids: Sequence[int]) -> dict[int, tuple[int, str]]:
        """For each of `ids` that has a failed or cancelled parent: (that parent, its state)."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(query("dead_parents"), {"ids": list(ids)}).fetchall()
        return {int(r["id"]): (int(r["parent_id"]), str(r["parent_state"])) for r in rows}

    @translated
    def cancel(self, ids: Sequence[int]) -> list[int]:
        return list(self._value("cancel", {"ids": list(ids)}) or [])

    @translated
    def cancel_unfinished_tagged(self, tag: str) -> list[int]:
        """Cancel every blocked, pending or processing job carrying `tag`; their ids."""
        return list(self._value("cancel_unfinished_tagged", {"tag": tag}) or [])

    @translated
    def finished_among(self, ids: Sequence[int]) -> tuple[int, int]:
        """(finished, failed) among the jobs `ids` (a dispatched batch)."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(query("finished_among"), {"ids": list(ids)}).fetchone()
        assert row is not None
        return int(row["finished"]), int(row["failed"])

    @translated
    def known_job_types(self) -> list[str]:
        """Every job type a worker ever ran (the job-type registry)."""
        return [str(name) for name in self._column("known_job_types", {})]

    @translated
    def unserved_ready_jobs(self, *, live_within: float, timeout: float) -> dict[str, dict[str, int]]:
        """Ready jobs whose type no worker registered for their queue within `live_within`
        seconds: by type, then by queue."""
        with self.conn.transaction():
            self._statement_timeout(timeout)
            rows = self.conn.execute(query("unserved_ready_jobs"), {"live_within": live_within}).fetchall()
        unserved: dict[str, dict[str, int]] = {}
        for type_, queue, jobs in rows:
            unserved.setdefault(str(type_), {})[str(queue)] = int(jobs)
        return unserved

    @translated
    def unfinished(self) -> int:  # blocked, pending or processing, in every queue
        return int(self._value("unfinished_jobs", {}) or 0)

    @translated
    def load(self, queues: Sequence[str] | None = None) -> Load:
        """Jobs ready now and in flight in the given queues (None or empty: all), as
        `passito_jobs.load()` counts them for the autoscalers."""
        with self.conn.cursor(row_factory=class_row(Load)) as cur:
            row = cur.execute(query("load"), {"queues": list(queues) if queues else None}).fetchone()
        assert row is not None
        return row

    @translated
    def queue_stats(
        self, *, stale_after: float, stuck_after: float, window: float, timeout: float
    ) -> list[QueueStats]:
        """Every queue's numbers in one statement; QueryTimeoutError after `timeout` seconds."""
        params = {"stale_after": stale_after, "stuck_after": stuck_after, "window": window}
        with self.conn.transaction():
            self._statement_timeout(timeout)
            with self.conn.cursor(row_factory=class_row(QueueStats)) as cur:
                return cur.execute(query("queue_stats"), params).fetchall()

    @translated
    def blocked_orphans(self, *, timeout: float) -> dict[str, int]:
        """Blocked jobs with a failed or cancelled parent (they can never run), by queue;
        QueryTimeoutError after `timeout` seconds."""
        with self.conn.transaction():
            self._statement_timeout(timeout)
            with self.conn.cursor(row_factory=dict_row) as cur:
                rows = cur.execute(query("blocked_orphans")).fetchall()
        return {str(row["queue"]): int(row["jobs"]) for row in rows}

    def _statement_timeout(self, seconds: float) -> None:
        self.conn.execute(query("set_statement_timeout"), {"timeout_ms": max(1, round(seconds * 1000))})

    # --- flow control (docs/flow-control.md)

    @property
    def flow(self) -> FlowControl:
        """The queues' pause and limits, on this store's connection and transaction."""
        return FlowControl(self.conn)

    # --- maintenance

    @translated
    def rescue(self, stuck_after: float, batch: int = 1000) -> list[RescuedJob]:
        """Return stuck processing jobs to pending (or failed); one batch per call."""
        with self.conn.cursor(row_factory=class_row(RescuedJob)) as cur:
            return cur.execute(query("rescue"), {"stuck_after": stuck_after, "batch": batch}).fetchall()

    @translated
    def prune(self, keep_completed: float, keep_failed: float, batch: int = 1000) -> int:
        """Delete up to `batch` rows of each finished kind past retention; return rows deleted."""
        params = {"keep_completed": keep_completed, "keep_failed": keep_failed, "batch": batch}
        return int(self._value("prune", params) or 0)

    @translated
    def acquire_lease(self, lease: str, worker_id: str, ttl: float) -> bool:
        """Take (or keep) the lease for `ttl` seconds: whether `worker_id` holds it now."""
        return bool(self._value("acquire_lease", {"lease": lease, "worker_id": worker_id, "ttl": ttl}))

    @translated
    def release_lease(self, lease: str, worker_id: str) -> None:
        self.conn.execute(query("release_lease"), {"lease": lease, "worker_id": worker_id})

    # --- helpers

    def _run(self, action: Callable[[Conn], T], conn: Conn) -> T:
        try:
            return action(conn)
        except (psycopg.Error, OSError) as exc:
            raise translate(exc, conn) from exc

    def _value(self, name: str, params: dict[str, Any]) -> Any:
        """The single value a named query returns (None without a row)."""
        row = self.conn.execute(query(name), params).fetchone()
        return None if row is None else row[0]

    def _column(self, name: str, params: dict[str, Any]) -> list[Any]:
        return [row[0] for row in self.conn.execute(query(name), params)]


def _invalid_job(exc: pg_errors.Error) -> InvalidJobError:
    return InvalidJobError(exc.diag.message_primary or str(exc))


def _payload_param(text: str) -> Jsonb:
    """An already encoded (and checked) payload, sent without encoding it again."""
    return Jsonb(text, dumps=_as_is)


def _as_is(text: Any) -> str:
    return str(text)


def _plain(request: JobRequest) -> bool:
    """A job without parents or unique key (most jobs): written directly, by an INSERT or a COPY;
    the others go through the dispatch function, which locks parents and deduplicates keys."""
    return not request.depends_on and request.unique_key is None


def _dispatch_params(request: JobRequest, payload_json: str) -> dict[str, Any]:
    return {
        "type": request.type,
        "payload": _payload_param(payload_json),
        "queue": request.queue,
        "priority": request.priority,
        "run_at": request.run_at,
        "delay": request.delay,
        "depends_on": list(request.depends_on),
        "max_attempts": request.max_attempts,
        "unique_key": request.unique_key,
        "concurrency_key": request.concurrency_key,
        "tags": list(request.tags) or None,
        "metadata": _metadata_param(request),
        "unique_for": request.unique_for,
        "unique_mode": request.unique_mode,
        "depends_on_mode": request.depends_on_mode,
    }


def _metadata_param(request: JobRequest) -> Jsonb | None:
    """A request's metadata (checked by the dispatch that made the request), or None."""
    if not request.metadata:
        return None
    text = encode_metadata(request.metadata)
    return None if text is None else _payload_param(text)


def _run_at(request: JobRequest, now: datetime) -> datetime:
    """When a copied job is due, on the server's clock."""
    if request.run_at is not None:
        return request.run_at
    if request.delay:
        return now + timedelta(seconds=request.delay)
    return now


class StoreHandle:
    """A long-lived process's synchronous Store over one reconnecting connection
    (connection.ConnectionHandle); calls are serialised, so threads may share it."""

    def __init__(self, opener: Callable[[], Conn]) -> None:
        self._handle = ConnectionHandle(opener)

    @classmethod
    def to(cls, url: str, *, timeout: float = 5.0, prepare: bool = True) -> StoreHandle:
        return cls(lambda: connect(url, timeout=timeout, prepare=prepare))

    def run(self, action: Callable[[Store], T]) -> T:
        return self._handle.run(lambda conn: action(Store(conn)))

    def close(self) -> None:
        self._handle.close()
