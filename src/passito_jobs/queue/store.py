"""The only module that executes queue SQL.

`Store` (synchronous) serves dispatch, the CLI, maintenance and health checks; `AsyncStore`
serves the worker's hot path (claim, complete, fail, heartbeat, listen). Both run the named
queries of `sql/queries.sql`; the state transitions themselves are SQL functions created by
the migrations in `sql/migrations/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any, TypeVar, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg.abc import AdaptContext, Buffer
from psycopg.rows import dict_row
from psycopg.types.datetime import TimestamptzBinaryLoader, TimestamptzLoader
from psycopg.types.json import Jsonb, set_json_loads

from passito_jobs.queue import conninfo
from passito_jobs.queue.limits import DEFAULT_MAX_PAYLOAD_BYTES, encode_payload
from passito_jobs.queue.models import (
    FAR_FUTURE,
    FAR_PAST,
    UNREADABLE_JSON_KEY,
    ClaimedJob,
    DatabaseUnavailableError,
    InvalidDatabaseUrlError,
    InvalidJobError,
    Job,
    JobRequest,
    QueueStats,
)

MIGRATION_LOCK_KEY = 0x7061_7373_6974_6F  # "passito": one advisory lock for all migrators
NOTIFY_CHANNEL = "passito_jobs"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]


# ---------------------------------------------------------------- SQL files


def queries() -> dict[str, str]:
    """The named queries of sql/queries.sql."""
    return named_queries("queries.sql")


@cache
def named_queries(filename: str) -> dict[str, str]:
    """The named queries of one file in sql/ (each starts with a `-- name: <name>` line)."""
    text = resources.files("passito_jobs.queue").joinpath(f"sql/{filename}").read_text("utf-8")
    found: dict[str, str] = {}
    for chunk in re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]:
        name, _, body = chunk.partition("\n")
        lines = [line for line in body.splitlines() if not line.lstrip().startswith("--")]
        found[name.strip()] = "\n".join(lines).strip()
    return found


def _q(name: str) -> str:
    """A named query. It comes from our own package files, never from input."""
    return queries()[name]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration shipped with the package, in order."""
    folder = resources.files("passito_jobs.queue").joinpath("sql/migrations")
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 0001, 0002, ... without gaps: {versions}")
    return tuple(found)


# ---------------------------------------------------------------- connections


def _connect_error(url: str, exc: Exception) -> DatabaseUnavailableError:
    # Mask first: a quoted piece of the URL must still match it.
    lines = [line.strip() for line in conninfo.redact(str(exc), url).splitlines() if line.strip()]
    cause = lines[0] if lines else type(exc).__name__
    # libpq repeats the target; keep its last, most specific clause.
    cause = re.sub(r"^connection (?:failed|to server at .*?failed):\s*", "", cause)
    cause = re.sub(r'^connection to server at "[^"]*"(?:\s*\([^)]*\))?, port \d+ failed:\s*', "", cause)
    return DatabaseUnavailableError(
        f"cannot connect to the database at {conninfo.describe_target(url)}: {cause}"
    )


def _connection_options(url: str, timeout: float) -> dict[str, Any]:
    """Defaults for what the URL does not say. TCP keepalives notice a database host that
    vanished (node loss, network partition) within about a minute, instead of a worker
    waiting forever on a dead socket. A malformed URL is a DatabaseUnavailableError that
    says what is wrong, with the password masked (conninfo.py)."""
    try:
        given = conninfo.parse(url)
    except InvalidDatabaseUrlError as exc:
        raise DatabaseUnavailableError(f"cannot connect to the database: {exc}") from None
    defaults: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "application_name": "passito-jobs",
    }
    options = {k: v for k, v in defaults.items() if k not in given}
    options["connect_timeout"] = max(1, round(timeout))
    return options


def connect(url: str, *, timeout: float = 5.0, autocommit: bool = True) -> Conn:
    """Open a connection; a failure is one DatabaseUnavailableError naming host and cause."""
    options = _connection_options(url, timeout)
    try:
        conn = psycopg.connect(url, autocommit=autocommit, **options)
    except (psycopg.Error, ValueError) as exc:
        raise _connect_error(url, exc) from None
    read_any_row(conn)
    return conn


async def connect_async(url: str, *, timeout: float = 5.0) -> AsyncConn:
    options = _connection_options(url, timeout)
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, **options)
    except (psycopg.Error, ValueError) as exc:
        raise _connect_error(url, exc) from None
    read_any_row(conn)
    return conn


# ---------------------------------------------------------------- reading rows outside the limits


class _FarTimestamptzLoader(TimestamptzLoader):
    """Reads a time past year 9999 (or 'infinity') as FAR_FUTURE and one before year 1 as
    FAR_PAST, where psycopg would raise: such a row must not break `jobs list` or a worker."""

    def load(self, data: Buffer) -> datetime:
        try:
            return super().load(data)
        except psycopg.DataError:
            text = bytes(data)
            return FAR_PAST if text.startswith(b"-") or text.endswith(b" BC") else FAR_FUTURE


class _FarTimestamptzBinaryLoader(TimestamptzBinaryLoader):
    def load(self, data: Buffer) -> datetime:
        try:
            return super().load(data)
        except psycopg.DataError:
            return FAR_PAST if bytes(data)[0] & 0x80 else FAR_FUTURE  # the sign of int8 microseconds


def _load_json(data: str | bytes) -> Any:
    """json.loads, except that JSON nested deeper than Python's decoder goes (stored before the
    nesting limit) reads as {"unreadable": "..."} rather than raising RecursionError."""
    try:
        return json.loads(data)
    except RecursionError:
        return {UNREADABLE_JSON_KEY: f"JSON of {len(data)} bytes, nested too deeply for Python to read"}


def read_any_row(context: AdaptContext) -> None:
    """Make a connection (or cursor) read every job row, even one written outside the limits."""
    adapters = context.adapters
    adapters.register_loader("timestamptz", _FarTimestamptzLoader)
    adapters.register_loader("timestamptz", _FarTimestamptzBinaryLoader)
    set_json_loads(_load_json, context)


def _invalid_job(exc: pg_errors.Error) -> InvalidJobError:
    message = exc.diag.message_primary or str(exc)
    return InvalidJobError(message)


# Database errors that mean "this job cannot be stored as asked": refused input, not an outage.
_REFUSED = (
    pg_errors.CheckViolation,
    pg_errors.ForeignKeyViolation,
    pg_errors.ProgramLimitExceeded,  # e.g. an index entry too large, for a row beyond the limits
    pg_errors.InvalidParameterValue,  # passito_jobs.max_payload_bytes set to nonsense
)


def _payload_param(text: str) -> Jsonb:
    """An already encoded (and checked) payload, sent without encoding it again."""
    return Jsonb(text, dumps=_as_is)


def _as_is(text: Any) -> str:
    return str(text)


def _jsonb_list(values: Iterable[Any]) -> list[Jsonb | None]:
    return [None if v is None else Jsonb(v) for v in values]


# ---------------------------------------------------------------- synchronous store


class Store:
    """Queue operations on one synchronous connection, in the connection's transaction."""

    def __init__(self, conn: Conn, *, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> None:
        self.conn = conn
        self.max_payload_bytes = max_payload_bytes

    # --- migrations

    def migrate(self) -> list[Migration]:
        """Apply pending migrations in order under an advisory lock; return those applied.

        Safe to run from many processes at once: they queue on the lock, and each migration
        runs in its own transaction together with its bookkeeping row.
        """
        conn = self.conn
        applied: list[Migration] = []
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute("CREATE SCHEMA IF NOT EXISTS passito_jobs")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS passito_jobs.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {
                row[0]: row[1]
                for row in conn.execute("SELECT version, checksum FROM passito_jobs.schema_migrations")
            }
            for migration in migrations():
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise RuntimeError(
                            f"migration {migration.version:04d}_{migration.name} was changed after "
                            "it was applied; add a new migration instead"
                        )
                    continue
                conn.execute(migration.sql)
                conn.execute(
                    "INSERT INTO passito_jobs.schema_migrations (version, name, checksum)"
                    " VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
                applied.append(migration)
        return applied

    def schema_version(self) -> int | None:
        """The newest applied migration, or None when the schema is not installed."""
        row = self.conn.execute("SELECT to_regclass('passito_jobs.schema_migrations') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return None
        row = self.conn.execute("SELECT max(version) FROM passito_jobs.schema_migrations").fetchone()
        return None if row is None else cast("int | None", row[0])

    # --- dispatch

    def dispatch(self, request: JobRequest, payload_json: str | None = None) -> int:
        """Dispatch one (validated) request. `payload_json`: its payload already encoded by
        limits.encode_payload; without it the payload is encoded and checked here."""
        if payload_json is None:
            payload_json = encode_payload(request.payload, self.max_payload_bytes)
        try:
            row = self.conn.execute(_q("dispatch"), _dispatch_params(request, payload_json)).fetchone()
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
        plain = [i for i, r in enumerate(requests) if not r.depends_on and r.unique_key is None]
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
                            conn.execute(_q("dispatch"), _dispatch_params(requests[i], payload(i)))
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
        row = conn.execute(_q("reserve_ids"), {"count": len(plain)}).fetchone()
        assert row is not None
        now, reserved = row
        with conn.cursor().copy(_q("copy_jobs")) as copy:
            copy.set_types(["int8", "text", "text", "jsonb", "int4", "int4", "timestamptz"])
            for index, job_id in zip(plain, reserved, strict=True):
                request = requests[index]
                copy.write_row(
                    (
                        job_id,
                        request.queue,
                        request.type,
                        _payload_param(payload(index)),
                        request.priority,
                        request.max_attempts,
                        _run_at(request, now),
                    )
                )
                ids[index] = job_id
        ready = sorted(
            {requests[i].queue for i in plain if not requests[i].delay and requests[i].run_at is None}
        )
        if ready:
            conn.execute(_q("notify_ready"), {"queues": ready})
        return ids

    # --- operator commands

    def get_job(self, job_id: int) -> Job | None:
        with self.conn.cursor(row_factory=dict_row) as cur:
            read_any_row(cur)
            row = cur.execute(_q("get_job"), {"id": job_id}).fetchone()
        return None if row is None else Job.from_row(row)

    def list_jobs(
        self,
        *,
        state: str | None = None,
        type: str | None = None,
        queue: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            read_any_row(cur)
            rows = cur.execute(
                _q("list_jobs"), {"state": state, "type": type, "queue": queue, "limit": limit}
            ).fetchall()
        return [Job.from_row(row) for row in rows]

    def existing_ids(self, ids: Sequence[int]) -> set[int]:
        return {row[0] for row in self.conn.execute(_q("existing_ids"), {"ids": list(ids)})}

    def failed_ids(self, *, type: str | None = None) -> list[int]:
        return [row[0] for row in self.conn.execute(_q("failed_ids"), {"type": type})]

    def retry(self, ids: Sequence[int]) -> list[int]:
        row = self.conn.execute(_q("retry"), {"ids": list(ids)}).fetchone()
        return list(row[0]) if row else []

    def dead_parents(self, ids: Sequence[int]) -> dict[int, tuple[int, str]]:
        """For each of `ids` that has a failed or cancelled parent: (that parent, its state)."""
        rows = self.conn.execute(_q("dead_parents"), {"ids": list(ids)})
        return {int(r[0]): (int(r[1]), str(r[2])) for r in rows}

    def cancel(self, ids: Sequence[int]) -> list[int]:
        row = self.conn.execute(_q("cancel"), {"ids": list(ids)}).fetchone()
        return list(row[0]) if row else []

    def finished_between(self, first: int, last: int) -> tuple[int, int]:
        """(finished, failed) among the jobs with ids first..last (a dispatched batch)."""
        row = self.conn.execute(_q("finished_between"), {"first": first, "last": last}).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def load(self, queues: Sequence[str] | None = None) -> tuple[int, int]:
        """(ready, processing) jobs in the given queues (None: all)."""
        row = self.conn.execute(_q("load"), {"queues": list(queues) if queues else None}).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def queue_stats(
        self, *, stale_after: float, stuck_after: float, window: float, timeout: float
    ) -> list[QueueStats]:
        """Every queue's numbers in one statement, cancelled after `timeout` seconds.

        Raises psycopg.errors.QueryCanceled when the statement timeout strikes.
        """
        params = {"stale_after": stale_after, "stuck_after": stuck_after, "window": window}
        with self.conn.transaction():
            self.conn.execute(_q("set_statement_timeout"), {"timeout_ms": max(1, round(timeout * 1000))})
            rows = self.conn.execute(_q("queue_stats"), params).fetchall()
        return [QueueStats(*row) for row in rows]

    def blocked_orphans(self, *, timeout: float) -> dict[str, int]:
        """Blocked jobs with a failed or cancelled parent (they can never run), by queue.

        Raises psycopg.errors.QueryCanceled when the statement timeout strikes.
        """
        with self.conn.transaction():
            self.conn.execute(_q("set_statement_timeout"), {"timeout_ms": max(1, round(timeout * 1000))})
            rows = self.conn.execute(_q("blocked_orphans")).fetchall()
        return {str(row[0]): int(row[1]) for row in rows}

    # --- maintenance

    def rescue(self, stuck_after: float, batch: int = 1000) -> list[tuple[int, str, str | None]]:
        """Return stuck processing jobs to pending (or failed); one batch per call."""
        rows = self.conn.execute(_q("rescue"), {"stuck_after": stuck_after, "batch": batch})
        return [(int(r[0]), str(r[1]), r[2]) for r in rows]

    def prune(self, keep_completed: float, keep_failed: float, batch: int = 1000) -> int:
        """Delete up to `batch` rows of each finished kind past retention; return rows deleted."""
        row = self.conn.execute(
            _q("prune"),
            {"keep_completed": keep_completed, "keep_failed": keep_failed, "batch": batch},
        ).fetchone()
        return int(row[0]) if row else 0

    def acquire_lease(self, lease: str, holder: str, ttl: float) -> bool:
        row = self.conn.execute(
            _q("acquire_lease"), {"lease": lease, "holder": holder, "ttl": ttl}
        ).fetchone()
        return bool(row and row[0])

    def release_lease(self, lease: str, holder: str) -> None:
        self.conn.execute(_q("release_lease"), {"lease": lease, "holder": holder})


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
    }


def _run_at(request: JobRequest, now: datetime) -> datetime:
    """When a copied job is due, on the server's clock."""
    if request.run_at is not None:
        return request.run_at
    if request.delay:
        return now + timedelta(seconds=request.delay)
    return now


T = TypeVar("T")


class StoreHandle:
    """A long-lived process's synchronous Store: the connection is opened on first use and
    again after any database error; calls are serialised, so threads may share it."""

    def __init__(self, opener: Callable[[], Conn]) -> None:
        self._open = opener
        self._lock = threading.Lock()
        self._store: Store | None = None

    @classmethod
    def to(cls, url: str, *, timeout: float = 5.0) -> StoreHandle:
        return cls(lambda: connect(url, timeout=timeout))

    def run(self, action: Callable[[Store], T]) -> T:
        with self._lock:
            store = self._store
            if store is None or store.conn.closed or store.conn.broken:
                self._drop()
                store = self._store = Store(self._open())
            try:
                return action(store)
            except psycopg.Error:
                self._drop()  # a timeout or a lost connection: start afresh next time
                raise

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._store is not None:
            with contextlib.suppress(psycopg.Error):
                self._store.conn.close()
            self._store = None


# ---------------------------------------------------------------- asynchronous store (worker)


class AsyncStore:
    """The worker's hot path on one asynchronous connection (autocommit).

    `settle_and_claim` sends the buffered outcomes and the next claim in one pipelined
    round trip.
    """

    def __init__(self, conn: AsyncConn, worker: str) -> None:
        self.conn = conn
        self.worker = worker

    async def settle_and_claim(
        self,
        completed: Sequence[tuple[int, int, Any]],
        failed: Sequence[tuple[int, int, str, float | None]],
        queues: Sequence[str] | None,
        batch: int,
    ) -> list[ClaimedJob]:
        """Record finished attempts and claim up to `batch` new jobs, in one round trip."""
        conn = self.conn
        async with conn.pipeline():
            if completed:
                await conn.execute(_q("complete"), _completion_params(self.worker, completed))
            if failed:
                await conn.execute(_q("fail"), _failure_params(self.worker, failed))
            if batch <= 0:
                return []
            cur = await conn.execute(
                _q("claim"),
                {"worker": self.worker, "queues": list(queues) if queues else None, "batch": batch},
            )
            rows = await cur.fetchall()
        return [ClaimedJob(*row) for row in rows]

    async def release(self, held: Sequence[tuple[int, int]]) -> int:
        cur = await self.conn.execute(
            _q("release"),
            {"worker": self.worker, "ids": [h[0] for h in held], "attempts": [h[1] for h in held]},
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def heartbeat(self, held: Sequence[tuple[int, int, Any]]) -> set[int]:
        """Heart-beat (id, attempt, progress) jobs; return the ids still held."""
        cur = await self.conn.execute(
            _q("heartbeat"),
            {
                "worker": self.worker,
                "ids": [h[0] for h in held],
                "attempts": [h[1] for h in held],
                "progress": _jsonb_list(h[2] for h in held),
            },
        )
        row = await cur.fetchone()
        return set(row[0]) if row else set()

    async def next_run_at(self, queues: Sequence[str] | None) -> datetime | None:
        cur = await self.conn.execute(_q("next_run_at"), {"queues": list(queues) if queues else None})
        row = await cur.fetchone()
        return None if row is None else cast("datetime | None", row[0])

    async def listen(self) -> None:
        await self.conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def notifications(self) -> AsyncIterator[psycopg.Notify]:
        return self.conn.notifies()


def _completion_params(worker: str, completed: Sequence[tuple[int, int, Any]]) -> dict[str, Any]:
    return {
        "worker": worker,
        "ids": [c[0] for c in completed],
        "attempts": [c[1] for c in completed],
        "results": [c[2] for c in completed],  # JSON text, encoded by the worker
    }


def _failure_params(worker: str, failed: Sequence[tuple[int, int, str, float | None]]) -> dict[str, Any]:
    return {
        "worker": worker,
        "ids": [f[0] for f in failed],
        "attempts": [f[1] for f in failed],
        "errors": [f[2] for f in failed],
        "retry_in": [f[3] for f in failed],
    }
