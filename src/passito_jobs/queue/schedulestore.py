"""The schedules table's queries (queue/schedules.py runs the rounds), a part of `Store`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from psycopg.rows import class_row, dict_row

from passito_jobs.queue.connection import Conn, read_any_row
from passito_jobs.queue.errors import translated
from passito_jobs.queue.models import ScheduleRow
from passito_jobs.queue.sqlfiles import query

if TYPE_CHECKING:
    from passito_jobs.queue.schedules import Schedule


class ScheduleStore:
    conn: Conn

    @translated
    def sync_schedules(self, schedules: Sequence[Schedule]) -> None:
        """Write the definitions the lease holder knows; mark the others stale."""
        with self.conn.transaction():
            if schedules:
                self.conn.cursor().executemany(query("sync_schedule"), [s.row() for s in schedules])
            self.conn.execute(query("mark_stale_schedules"), {"names": [s.name for s in schedules]})

    @translated
    def schedule_states(self, names: Sequence[str]) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query("schedule_states"), {"names": list(names)}).fetchall()

    @translated
    def lock_schedule(self, name: str) -> dict[str, Any] | None:
        """The schedule's row, locked until the end of the caller's transaction."""
        with self.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query("lock_schedule"), {"name": name}).fetchone()

    @translated
    def mark_schedule(
        self, name: str, last_slot: datetime, last_job_id: int | None, next_slot: datetime
    ) -> None:
        params = {"name": name, "last_slot": last_slot, "last_job_id": last_job_id, "next_slot": next_slot}
        self.conn.execute(query("mark_schedule"), params)

    @translated
    def touch_schedules(self, next_slots: dict[str, datetime]) -> None:
        """Record that the lease holder looked at these schedules now (the catch-up rule)."""
        params = {"names": list(next_slots), "next_slots": list(next_slots.values())}
        self.conn.execute(query("touch_schedules"), params)

    @translated
    def list_schedules(self) -> list[ScheduleRow]:
        with self.conn.cursor(row_factory=class_row(ScheduleRow)) as cur:
            read_any_row(cur)
            return cur.execute(query("list_schedules")).fetchall()

    @translated
    def pause_schedule(self, name: str, *, paused: bool = True) -> bool:
        """Pause (or resume) a schedule; False when no schedule has that name."""
        row = self.conn.execute(query("pause_schedule"), {"name": name, "paused": paused}).fetchone()
        return row is not None
