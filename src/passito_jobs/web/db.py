"""The dashboard's database connections: a few long-lived ones, each used by one request at a time.

Queries run in worker threads (psycopg's synchronous connections, the queue's `Store`), so a slow
query never stalls the event loop; a request waits for a free connection. Each connection bounds
its statements with PASSITO_WEB_QUERY_TIMEOUT. Database trouble becomes `DatabaseError`, which the
app answers with 503 and one line (the password masked).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread

from passito_jobs.queue.admin import Admin
from passito_jobs.queue.connection import Conn, connect
from passito_jobs.queue.conninfo import redact
from passito_jobs.queue.errors import DatabaseUnavailableError, QueryTimeoutError, QueueError, cause
from passito_jobs.queue.store import Store, StoreHandle
from passito_jobs.settings import format_duration

T = TypeVar("T")


class DatabaseError(Exception):
    """The database could not answer; the message is safe to show (password masked)."""


class Database:
    def __init__(self, url: str, *, size: int, connect_timeout: float, query_timeout: float) -> None:
        self.url = url
        self.query_timeout = query_timeout
        self._connect_timeout = connect_timeout
        self._handles = [StoreHandle(self._open) for _ in range(size)]
        self._free: asyncio.Queue[StoreHandle] | None = None

    def _open(self) -> Conn:
        conn = connect(self.url, timeout=self._connect_timeout)
        Admin(Store(conn)).set_timeout(self.query_timeout)
        return conn

    async def run(self, action: Callable[[Admin], T]) -> T:
        """Run `action` on a free connection, in a worker thread."""
        if self._free is None:  # created on the running loop
            self._free = asyncio.Queue()
            for handle in self._handles:
                self._free.put_nowait(handle)
        handle = await self._free.get()
        try:
            return await anyio.to_thread.run_sync(handle.run, lambda store: action(Admin(store)))
        except DatabaseUnavailableError as exc:
            raise DatabaseError(redact(str(exc), self.url)) from None
        except QueryTimeoutError:
            raise DatabaseError(
                f"the query did not finish within {format_duration(self.query_timeout)} "
                "(PASSITO_WEB_QUERY_TIMEOUT)"
            ) from None
        except QueueError as exc:  # the handle translated the driver's error into the queue's own
            raise DatabaseError(redact(f"database error: {cause(exc)}", self.url)) from None
        finally:
            self._free.put_nowait(handle)

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
