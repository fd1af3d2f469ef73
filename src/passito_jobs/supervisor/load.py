"""Reading the load the scaling policy works on, over one reconnecting connection.

Shared by the local supervisor and the operator. The load is the jobs ready now plus the jobs
in flight, in the queues watched, as the SQL function `passito_jobs.load()` counts them (the
chart's KEDA ScaledObject calls the same function). A failure is one `LoadUnavailableError`
with a one-line cause, with the database password masked; the next read reconnects.
"""

from __future__ import annotations

from collections.abc import Sequence

from passito_jobs.queue.conninfo import redacted_line
from passito_jobs.queue.errors import QueueError
from passito_jobs.queue.store import StoreHandle


class LoadUnavailableError(Exception):
    """The load could not be read; the message is one line naming the cause."""


class LoadReader:
    """Reads the load; safe to call from several threads (calls are serialised)."""

    def __init__(self, database_url: str, *, timeout: float = 5.0, prepare: bool = True) -> None:
        self._url = database_url
        self._handle = StoreHandle.to(database_url, timeout=timeout, prepare=prepare)

    def read(self, queues: Sequence[str] | None = None) -> int:
        """Ready plus processing jobs in `queues` (None or empty: all queues)."""
        try:
            return self._handle.run(lambda store: store.load(list(queues) if queues else None)).total
        except QueueError as exc:
            raise LoadUnavailableError(redacted_line(exc, self._url)) from None

    def close(self) -> None:
        self._handle.close()
