"""`AsyncStore`: the worker's hot path on one asynchronous connection (autocommit).

`settle_and_claim` sends the buffered outcomes and the next claim in one pipelined round trip.
`handed_job` reads a job a dispatch handed this worker on its own channel (handoff, migration
0014).
A database error leaves as the queue's own (errors.py): `ConnectionLostError` means reconnect
and send the same again; anything else is a statement the database refused.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import RowMaker

from passito_jobs.queue.backoff import clamp_delay
from passito_jobs.queue.connection import AsyncConn
from passito_jobs.queue.errors import translate
from passito_jobs.queue.models import ClaimedJob, JobState, ParentOutcome
from passito_jobs.queue.sqlfiles import query

Completed = tuple[int, int, str | None]  # job id, attempt, result as JSON text (None: no result)
Failed = tuple[int, int, str, float | None]  # job id, attempt, error text, retry delay (None: final)
Snoozed = tuple[int, int, float, int]  # job id, attempt, delay, the job type's max_snoozes
Held = tuple[int, int, str | None]  # job id, attempt, progress as JSON text (None: unchanged)

_BIGINT, _INT = 2**63 - 1, 2**31  # a handed job's numbers are the table's bigint and integers


class AsyncStore:
    """The worker's queue operations, as worker `worker_id` (`<worker name>:<pid>`)."""

    def __init__(self, conn: AsyncConn, worker_id: str) -> None:
        self.conn = conn
        self.worker_id = worker_id
        self._claim = query("claim")
        self._claim_alone = query("claim_alone")
        self._complete = query("complete")
        self._fail = query("fail")

    async def settle_and_claim(
        self,
        completed: Sequence[Completed],
        failed: Sequence[Failed],
        queues: Sequence[str] | None,
        batch: int,
        *,
        snoozed: Sequence[Snoozed] = (),
        released: Sequence[tuple[int, int]] = (),
        known: Sequence[int] = (),
        handoff: tuple[str, int] | None = None,
    ) -> list[ClaimedJob]:
        """Record finished attempts, give back `released` (id, attempt) jobs uncounted, and
        claim up to `batch` new jobs, in one round trip. The jobs handed to this worker (handoff,
        migration 0014) that are not in `known` (the ids it runs) come first, flagged `handed`;
        with `handoff` (its channel and lock key), a claim that comes back short leaves the
        free slots in waiting_workers."""
        conn = self.conn
        params = {
            "worker_id": self.worker_id,
            "queues": list(queues) if queues else None,
            "batch": batch,
            "channel": handoff[0] if handoff else None,
            "lock_key": handoff[1] if handoff else None,
            "known": list(known),
        }
        try:
            cur = conn.cursor(row_factory=claimed_rows)  # raises on a closed connection
            if not completed and not failed and not snoozed and not released:
                if batch <= 0:
                    return []
                # A claim alone (an idle worker woken by a notification) is one statement: a
                # pipeline around it would only add the work of its Sync to the pickup. Its
                # commit does not wait for the WAL flush (queries.sql, claim_alone).
                await cur.execute(self._claim_alone, params)
                return await cur.fetchall()
            async with conn.pipeline():
                if completed:
                    await conn.execute(self._complete, _completion_params(self.worker_id, completed))
                if failed:
                    await conn.execute(self._fail, _failure_params(self.worker_id, failed))
                if snoozed:
                    await conn.execute(query("snooze"), _snooze_params(self.worker_id, snoozed))
                if released:
                    await conn.execute(query("release"), _release_params(self.worker_id, released))
                if batch <= 0:
                    return []
                await cur.execute(self._claim, params)
            # Read once the pipeline's Sync has brought every result back: fetching inside the
            # block sends a Sync of its own first, a second round trip per claim.
            return await cur.fetchall()
        except (psycopg.Error, OSError) as exc:
            raise translate(exc, conn) from exc

    async def release(self, held: Sequence[tuple[int, int]]) -> int:
        """Give jobs back without counting the attempt (shutdown); how many were released."""
        row = await self._one("release", _release_params(self.worker_id, held))
        return int(row[0]) if row else 0

    async def stop_waiting(self, known: Sequence[int]) -> int:
        """Take no more handed jobs; those handed and not in `known` go back to pending. How
        many went back."""
        row = await self._one("stop_waiting", {"worker_id": self.worker_id, "known": list(known)})
        return int(row[0]) if row else 0

    async def heartbeat(self, held: Sequence[tuple[int, int, Any]]) -> set[int]:
        """Heart-beat (id, attempt, progress) jobs; return the ids still held. A progress of None
        leaves the stored one as it is."""
        return await self.heartbeat_json([(i, a, None if p is None else json.dumps(p)) for i, a, p in held])

    async def heartbeat_json(self, held: Sequence[Held]) -> set[int]:
        """`heartbeat` with each progress already encoded as JSON text (the worker checks it
        when the handler sets it)."""
        params = {
            "worker_id": self.worker_id,
            "ids": [h[0] for h in held],
            "attempts": [h[1] for h in held],
            "progress": [h[2] for h in held],
        }
        row = await self._one("heartbeat", params)
        return set(row[0]) if row else set()

    async def register_job_types(self, types: Sequence[str], queues: Sequence[str] | None = None) -> None:
        """Record that this worker runs `types` now, taking jobs from `queues` (None or empty:
        every queue): the job-type registry."""
        params = {
            "worker_id": self.worker_id,
            "types": list(types),
            "queues": list(queues) if queues else None,
        }
        await self._one("register_job_types", params, fetch=False)

    async def next_run_at(self, queues: Sequence[str] | None) -> float | None:
        """When the next delayed job is due, in seconds since the epoch (may be infinite)."""
        row = await self._one("next_run_at", {"queues": list(queues) if queues else None})
        return None if row is None or row[0] is None else float(row[0])

    async def next_paced_at(self, queues: Sequence[str] | None) -> float | None:
        """When the next rate-limited queue with ready jobs may start one (seconds since the
        epoch), or None."""
        row = await self._one("next_paced_at", {"queues": list(queues) if queues else None})
        return None if row is None or row[0] is None else float(row[0])

    async def listen(self, *, cancellations: bool = False) -> None:
        """LISTEN for ready jobs (channel `passito_jobs`, payload the queue) and, with
        `cancellations`, for processing jobs cancelled (`passito_jobs_cancel`, payload the id)."""
        await self._one("listen", None, fetch=False)
        if cancellations:
            await self._one("listen_cancel", None, fetch=False)

    async def listen_handoff(self, channel: str, lock_key: int) -> bool:
        """Take the lock that lets dispatches hand this worker jobs (migration 0014) and LISTEN
        on its channel; False, and no LISTEN, when another session holds that lock."""
        row = await self._one("listen_handoff", {"lock_key": lock_key})
        if not (row and row[0]):
            return False
        try:
            await self.conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except (psycopg.Error, OSError) as exc:
            raise translate(exc, self.conn) from exc
        return True

    async def cancelled_among(self, ids: Sequence[int]) -> set[int]:
        """Which of `ids` are cancelled."""
        row = await self._one("cancelled_among", {"ids": list(ids)})
        return set(row[0]) if row else set()

    async def notifications(self) -> AsyncIterator[psycopg.Notify]:
        """The notifications of the channels LISTENed to, until the connection breaks
        (ConnectionLostError)."""
        try:
            async for notify in self.conn.notifies():
                yield notify
        except (psycopg.Error, OSError) as exc:
            raise translate(exc, self.conn) from exc

    async def _one(self, name: str, params: dict[str, Any] | None, *, fetch: bool = True) -> Any:
        try:
            cur = await self.conn.execute(query(name), params)
            return await cur.fetchone() if fetch else None
        except (psycopg.Error, OSError) as exc:
            raise translate(exc, self.conn) from exc


def claimed_rows(cursor: Any) -> RowMaker[ClaimedJob]:
    """A row factory: claimed rows as ClaimedJob, read by column name. The payload comes as JSON
    text; one Python cannot decode becomes `unreadable`, and the worker fails that job with it."""
    names = [column.name for column in cursor.description or ()]
    at = {name: index for index, name in enumerate(names)}
    id_, queue, type_, payload = at["id"], at["queue"], at["type"], at["payload"]
    priority, attempts, max_attempts, waited = (
        at["priority"],
        at["attempts"],
        at["max_attempts"],
        at["waited_seconds"],
    )
    meta = at["metadata"]
    parents = at.get("parents")  # None: a query without the column (a test's own claim)
    handed = at.get("handed")

    def make(row: Sequence[Any]) -> ClaimedJob:
        decoded, unreadable = _payload(row[payload])
        metadata = row[meta]
        outcomes: tuple[ParentOutcome, ...] = ()
        if parents is not None and row[parents] is not None:
            try:
                outcomes = parent_outcomes(row[parents])
            except (RecursionError, ValueError, TypeError, KeyError) as exc:
                unreadable = unreadable or f"parents are not readable: {exc!r}"
        return ClaimedJob(
            row[id_],
            row[queue],
            row[type_],
            decoded,
            row[priority],
            row[attempts],
            row[max_attempts],
            row[waited],
            unreadable,
            None if metadata is None else _metadata(metadata),
            outcomes,
            handed is not None and bool(row[handed]),
        )

    return make


def handed_job(message: str) -> ClaimedJob | int | None:
    """A job a dispatch handed this worker, from its channel's message (insert_plain_job,
    migration 0014): the job; its id alone when the job was too long for a notification (the
    next claim returns it); None for a message that is not one (anyone may NOTIFY)."""
    head, _, rest = message.partition("\n")
    try:
        fields = json.loads(head)
    except (RecursionError, ValueError):
        return None
    if not isinstance(fields, list) or not all(type(f) in (int, str) for f in fields):
        return None
    if len(fields) == 1 and type(fields[0]) is int and 0 < fields[0] <= _BIGINT:
        return fields[0]
    if len(fields) != 6 or [type(f) for f in fields] != [int, str, str, int, int, int]:
        return None
    job_id, queue, type_, priority, attempt, max_attempts = fields
    in_range = 0 < job_id <= _BIGINT and -_INT <= priority < _INT
    if not (in_range and 0 < attempt < _INT and 0 < max_attempts < _INT):
        return None
    metadata, _, payload = rest.partition("\n")
    decoded, unreadable = _payload(payload)
    return ClaimedJob(
        job_id,
        queue,
        type_,
        decoded,
        priority,
        attempt,
        max_attempts,
        0.0,
        unreadable,
        None if metadata == "null" else _metadata(metadata),
        handed=True,
    )


def _payload(text: str) -> tuple[dict[str, Any], str | None]:
    """A payload's JSON text, decoded; or an empty one and why it could not be (the worker
    fails that job with the reason)."""
    try:
        decoded = json.loads(text)
    except RecursionError:
        return {}, "payload is not readable: it is nested too deeply for Python's JSON parser"
    except ValueError as exc:
        return {}, f"payload is not readable: {exc}"
    if not isinstance(decoded, dict):
        return {}, "payload is not readable: it is not a JSON object"
    return decoded, None


def parent_outcomes(text: str) -> tuple[ParentOutcome, ...]:
    """The `parents` column of a claim (passito_jobs.parent_outcomes) as records."""
    return tuple(
        ParentOutcome(
            int(item["id"]),
            str(item["type"]),
            JobState(item["state"]),
            item.get("result"),
            item.get("error"),
            bool(item.get("result_omitted")),
        )
        for item in json.loads(text)
    )


def _metadata(text: str) -> dict[str, Any] | None:
    """Metadata is for the worker's trace link and log lines: one it cannot read is left out."""
    try:
        value = json.loads(text)
    except (RecursionError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _release_params(worker_id: str, held: Sequence[tuple[int, int]]) -> dict[str, Any]:
    return {"worker_id": worker_id, "ids": [h[0] for h in held], "attempts": [h[1] for h in held]}


def _completion_params(worker_id: str, completed: Sequence[Completed]) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "ids": [c[0] for c in completed],
        "attempts": [c[1] for c in completed],
        "results": [c[2] for c in completed],  # JSON text, encoded by the worker
    }


def _failure_params(worker_id: str, failed: Sequence[Failed]) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "ids": [f[0] for f in failed],
        "attempts": [f[1] for f in failed],
        "errors": [f[2] for f in failed],
        "retry_in": [None if f[3] is None else clamp_delay(f[3]) for f in failed],
    }


def _snooze_params(worker_id: str, snoozed: Sequence[Snoozed]) -> dict[str, Any]:
    return {
        "worker_id": worker_id,
        "ids": [s[0] for s in snoozed],
        "attempts": [s[1] for s in snoozed],
        "delays": [clamp_delay(s[2]) for s in snoozed],
        "max_snoozes": [s[3] for s in snoozed],
    }
