"""Reading the queue load the scaling policy works on, over one reconnecting connection.

Shared by the local supervisor and the operator. The load is the jobs ready now plus the jobs
in flight, in the queues watched (`Store.load`). A failure is one `LoadUnavailableError` with a
one-line cause; the next read reconnects.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import psycopg

from passito_jobs.queue.models import DatabaseUnavailableError
from passito_jobs.queue.store import Store, connect


class LoadUnavailableError(Exception):
    """The load could not be read; the message is one line naming the cause."""


class LoadReader:
    """Reads the load; safe to call from several threads (calls are serialised)."""

    def __init__(self, database_url: str, *, timeout: float = 5.0) -> None:
        self.database_url = database_url
        self.timeout = timeout
        self._store: Store | None = None
        self._lock = threading.Lock()

    def read(self, queues: Sequence[str] | None = None) -> int:
        """Ready plus processing jobs in `queues` (None or empty: all queues)."""
        with self._lock:
            try:
                if self._store is None or self._store.conn.closed or self._store.conn.broken:
                    self._store = Store(connect(self.database_url, timeout=self.timeout))
                ready, processing = self._store.load(list(queues) if queues else None)
            except (psycopg.Error, DatabaseUnavailableError) as exc:
                self._drop()
                raise LoadUnavailableError(_first_line(exc)) from None
        return ready + processing

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._store is not None:
            self._store.conn.close()
            self._store = None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
