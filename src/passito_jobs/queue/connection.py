"""Connections to the queue's database: opening them, reading any row, and keeping them open.

`connect`/`connect_async` open a connection with keepalives and the queue's row loaders; a
failure is one DatabaseUnavailableError naming the target (conninfo.py masks the password).
`prepare=False` is for a pooler in transaction mode (PgBouncer): psycopg then never prepares a
statement on the server, since the pooler may run the next transaction on another server
connection, where that statement does not exist. Nothing else here keeps session state: the
queue's locks are transaction advisory locks or rows (the maintenance lease), and settings are
set for one transaction (`set_config(..., true)`).
`ConnectionHandle` (synchronous) and `AsyncConnectionHandle` are the two reconnecting handles
every long-lived process uses: a connection opened on first use and again after it broke, with
growing, jittered delays between attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg.abc import AdaptContext, Buffer
from psycopg.types.datetime import TimestamptzBinaryLoader, TimestamptzLoader
from psycopg.types.json import set_json_loads

from passito_jobs.queue import conninfo
from passito_jobs.queue.errors import (
    DatabaseUnavailableError,
    InvalidDatabaseUrlError,
    InvalidJobError,
    JobDataError,
    QueueError,
    first_line,
    translate,
)
from passito_jobs.queue.models import FAR_FUTURE, FAR_PAST, UNREADABLE_JSON_KEY

Conn = psycopg.Connection[Any]
AsyncConn = psycopg.AsyncConnection[Any]
T = TypeVar("T")

RECONNECT_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
"""Seconds between attempts to reconnect (then every 5 s), each with jitter."""


def _connect_error(url: str, exc: Exception) -> DatabaseUnavailableError:
    cause = conninfo.redacted_line(exc, url)
    # libpq repeats the target; keep its last, most specific clause.
    cause = re.sub(r"^connection (?:failed|to server at .*?failed):\s*", "", cause)
    cause = re.sub(r'^connection to server at "[^"]*"(?:\s*\([^)]*\))?, port \d+ failed:\s*', "", cause)
    return DatabaseUnavailableError(
        f"cannot connect to the database at {conninfo.describe_target(url)}: {cause}"
    )


def _connection_options(url: str, timeout: float) -> dict[str, Any]:
    """Defaults for what the URL does not say. TCP keepalives notice a database host that
    vanished (node loss, network partition) within about a minute on an idle connection, and
    tcp_user_timeout within 30 s on one waiting for an answer to what it sent (a claim sent
    just as the primary's node died would otherwise wait out the kernel's retransmissions,
    many minutes), instead of a worker waiting on a dead socket. A malformed URL is a
    DatabaseUnavailableError that says what is wrong, with the password masked (conninfo.py)."""
    try:
        given = conninfo.parse(url)
    except InvalidDatabaseUrlError as exc:
        raise DatabaseUnavailableError(f"cannot connect to the database: {exc}") from None
    defaults: dict[str, Any] = {
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": 30_000,  # milliseconds
        "application_name": "passito-jobs",
    }
    options = {k: v for k, v in defaults.items() if k not in given}
    options["connect_timeout"] = max(1, round(timeout))
    return options


def connect(url: str, *, timeout: float = 5.0, autocommit: bool = True, prepare: bool = True) -> Conn:
    """Open a connection; a failure is one DatabaseUnavailableError naming host and cause.
    `prepare=False`: no statement is prepared on the server (a transaction pooler)."""
    options = _connection_options(url, timeout)
    try:
        conn = psycopg.connect(url, autocommit=autocommit, **options)
        if not prepare:
            conn.prepare_threshold = None
    except (psycopg.Error, ValueError) as exc:
        raise _connect_error(url, exc) from None
    read_any_row(conn)
    return conn


async def connect_async(url: str, *, timeout: float = 5.0, prepare: bool = True) -> AsyncConn:
    options = _connection_options(url, timeout)
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, **options)
        if not prepare:
            conn.prepare_threshold = None
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
    """json.loads, except that JSON Python cannot read reads as {"unreadable": "..."} rather than
    raising: nested deeper than Python's decoder goes (stored before the nesting limit), or with
    an integer longer than Python converts (sys.get_int_max_str_digits(); jsonb keeps any number,
    and writes 1e5000 out as 5,001 digits)."""
    try:
        return json.loads(data)
    except RecursionError:
        return {UNREADABLE_JSON_KEY: f"JSON of {len(data)} bytes, nested too deeply for Python to read"}
    except ValueError as exc:  # the server's JSON is valid: this is an integer too long to convert
        return {UNREADABLE_JSON_KEY: f"JSON of {len(data)} bytes that Python cannot read: {first_line(exc)}"}


def read_any_row(context: AdaptContext) -> None:
    """Make a connection (or cursor) read every job row, even one written outside the limits."""
    adapters = context.adapters
    adapters.register_loader("timestamptz", _FarTimestamptzLoader)
    adapters.register_loader("timestamptz", _FarTimestamptzBinaryLoader)
    set_json_loads(_load_json, context)


def reconnect_delay(attempt: int) -> float:
    """The wait before reconnect attempt `attempt` (0-based), jittered so that many workers
    that lost the database together do not all come back at once."""
    delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
    return delay * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not crypto


# ---------------------------------------------------------------- the reconnecting handles


class ConnectionHandle:
    """A long-lived process's synchronous connection: opened on first use and again after a
    database error; calls are serialised, so threads may share it."""

    def __init__(self, opener: Callable[[], Conn]) -> None:
        self._open = opener
        self._lock = threading.Lock()
        self._conn: Conn | None = None

    @classmethod
    def to(cls, url: str, *, timeout: float = 5.0, prepare: bool = True) -> ConnectionHandle:
        return cls(lambda: connect(url, timeout=timeout, prepare=prepare))

    def run(self, action: Callable[[Conn], T]) -> T:
        """`action(connection)`; a database error (translated into the queue's own) drops the
        connection, so the next call starts afresh."""
        with self._lock:
            conn = self._conn
            if conn is None or conn.closed or conn.broken:
                self._drop()
                conn = self._conn = self._open()
            try:
                return action(conn)
            except (InvalidJobError, JobDataError):
                raise  # refused input: the connection is fine
            except (QueueError, psycopg.Error, OSError) as exc:
                self._drop()  # a timeout or a lost connection: start afresh next time
                error = translate(exc, conn)
                if error is exc:
                    raise
                raise error from exc

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error, OSError):
                self._conn.close()
            self._conn = None


class AsyncConnectionHandle:
    """An asyncio task's connection that reconnects: `connection()` opens it on first use,
    `reconnect()` replaces a broken one, retrying with growing, jittered delays."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        prepare: bool = True,
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.prepare = prepare
        self._on_retry = on_retry
        self._conn: AsyncConn | None = None

    @property
    def broken(self) -> bool:
        return self._conn is None or self._conn.closed or self._conn.broken

    async def connection(self) -> AsyncConn:
        """The open connection, or a new one (one attempt: DatabaseUnavailableError)."""
        if self.broken:
            await self.drop()
            self._conn = await connect_async(self.url, timeout=self.timeout, prepare=self.prepare)
        assert self._conn is not None
        return self._conn

    async def reconnect(self, *, give_up: Callable[[], bool] = lambda: False) -> AsyncConn | None:
        """Drop the connection and open a new one, waiting between attempts, until it works or
        `give_up()` says to stop (then None)."""
        await self.drop()
        attempt = 0
        while not give_up():
            await asyncio.sleep(reconnect_delay(attempt))
            attempt += 1
            try:
                return await self.connection()
            except DatabaseUnavailableError as exc:
                if self._on_retry is not None:
                    self._on_retry(exc)
        return None

    async def drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    close = drop
