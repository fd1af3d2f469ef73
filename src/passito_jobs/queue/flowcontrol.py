"""`FlowControl`: the queues' pause and limits on one connection, in its transaction
(docs/flow-control.md). The rules for the values are flow.py's; the SQL functions of migration
0005 check them again (for the PHP app) with the same words, and `claim` enforces them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import class_row

from passito_jobs.queue.connection import Conn
from passito_jobs.queue.errors import FlowControlError, translate
from passito_jobs.queue.flow import UNCHANGED, Rate, Unchanged, check_limit, check_rate
from passito_jobs.queue.models import QueueFlow
from passito_jobs.queue.sqlfiles import query


class FlowControl:
    """Read and change the queues' flow control; `Store.flow` makes one."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def queues(self, queues: Sequence[str] | None = None) -> list[QueueFlow]:
        """Each queue's settings, ready and processing jobs, and jobs held back (None: all)."""
        try:
            with self.conn.cursor(row_factory=class_row(QueueFlow)) as cur:
                return cur.execute(
                    query("queue_flow"), {"queues": list(queues) if queues else None}
                ).fetchall()
        except (psycopg.Error, OSError) as exc:
            raise translate(exc, self.conn) from exc

    def pause(self, queue: str) -> bool:
        """Pause `queue`; True when it had no row yet (it was created, paused)."""
        return bool(self._call("pause_queue", {"queue": queue}))

    def resume(self, queue: str) -> bool:
        """Resume `queue` and wake its workers; True when it had no row yet."""
        return bool(self._call("resume_queue", {"queue": queue}))

    def set_limits(
        self,
        queue: str,
        *,
        concurrency: int | Unchanged | None = UNCHANGED,
        rate: Rate | Unchanged | None = UNCHANGED,
        key_concurrency: int | Unchanged | None = UNCHANGED,
    ) -> bool:
        """Set the given limits of `queue` (None: no limit; a limit not given stays as it is),
        all in one transaction; True when the queue had no row yet."""
        calls: list[tuple[str, dict[str, Any]]] = []
        if not isinstance(concurrency, Unchanged):
            calls.append(("set_queue_concurrency", {"value": check_limit("concurrency", concurrency)}))
        if not isinstance(key_concurrency, Unchanged):
            value = check_limit("key concurrency", key_concurrency)
            calls.append(("set_queue_key_concurrency", {"value": value}))
        if not isinstance(rate, Unchanged):
            check_rate(rate)
            limit, period = (None, None) if rate is None else (rate.limit, rate.period)
            calls.append(("set_queue_rate", {"rate_limit": limit, "rate_period": period}))
        atomic = self.conn.transaction() if self.conn.autocommit else contextlib.nullcontext()
        created = False
        with atomic:
            for name, params in calls:
                created |= bool(self._call(name, {"queue": queue, **params}))
        return created

    def _call(self, name: str, params: dict[str, Any]) -> Any:
        try:
            row = self.conn.execute(query(name), params).fetchone()
        except pg_errors.CheckViolation as exc:
            raise FlowControlError(exc.diag.message_primary or str(exc)) from None
        except (psycopg.Error, OSError) as exc:
            raise translate(exc, self.conn) from exc
        return None if row is None else row[0]
