"""Results: `wait(job_id)` returns a job's result once it finished, or raises with its error.

The waiter marks the job `awaited`; a trigger then announces its end on the channel
`passito_jobs_finished` (migration 0005), so `wait` sleeps on LISTEN instead of polling, and
other jobs pay nothing but the trigger's WHEN test. The mark and the first read are one
statement after LISTEN, so a job that finishes at any moment is seen: before the mark (the
statement reads it finished), or after (the notification comes). A re-read every few seconds is
the guarantee should a notification be lost. With `listen=False` (a pooler that drops LISTEN)
it polls, backing off from 50 ms to 2 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from passito_jobs.queue import dispatch, limits
from passito_jobs.queue.connection import Conn, read_any_row
from passito_jobs.queue.errors import QueueError, translate
from passito_jobs.queue.models import JobResult, JobState
from passito_jobs.queue.sqlfiles import query

RECHECK = 5.0
"""Seconds between re-reads while listening: the guarantee against a lost notification."""
POLL_FIRST, POLL_MAX = 0.05, 2.0
MAX_TIMEOUT = 36500 * 86400.0


class JobFailedError(QueueError):
    """The job waited on ended failed or cancelled; `state` and `error` say how."""

    def __init__(self, job_id: int, state: str, error: str | None) -> None:
        first = (error or "").strip().splitlines()[:1]
        super().__init__(f"job #{job_id} {state}" + (f": {first[0]}" if first else ""))
        self.job_id = job_id
        self.state = state
        self.error = error


class JobNotFoundError(QueueError, LookupError):
    """No job has this id (never dispatched, or pruned)."""


class WaitTimeoutError(QueueError, TimeoutError):
    """The job did not finish within the timeout; it goes on (wait again, or cancel it)."""


def wait(
    job_id: int,
    timeout: float = 60.0,
    *,
    connect: Callable[[], Conn] | None = None,
    listen: bool = True,
) -> Any:
    """The result of job `job_id` once it completed (None if its handler returned nothing).

    Raises JobFailedError when it ends failed or cancelled, WaitTimeoutError after `timeout`
    seconds, JobNotFoundError for an unknown id. `connect` opens the connection it waits on
    (default: PASSITO_DATABASE_URL); it is closed on return.
    """
    limits.check_job_id("job_id", job_id)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout <= MAX_TIMEOUT:
        shown = limits.shown(timeout, quoted=True)
        raise ValueError(f"timeout must be 0 to {MAX_TIMEOUT:.0f} seconds, got {shown}")
    conn = (connect or dispatch.defaults.connect)()
    try:
        return _wait(conn, job_id, time.monotonic() + timeout, listen=listen)
    except (psycopg.Error, OSError) as exc:
        raise translate(exc, conn) from exc
    finally:
        conn.close()


def _wait(conn: Conn, job_id: int, deadline: float, *, listen: bool) -> Any:
    if listen:
        conn.execute(query("listen_finished"))
    found = _read(conn, "await_job" if listen else "job_result", job_id)
    delay = POLL_FIRST
    while not found.finished:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeoutError(f"job #{job_id} did not finish in time (it is {found.state.value})")
        if listen:
            for notify in conn.notifies(timeout=min(remaining, RECHECK)):
                if notify.payload == str(job_id):
                    break
        else:
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX)
        found = _read(conn, "job_result", job_id)
    if found.state is JobState.COMPLETED:
        return found.result
    raise JobFailedError(job_id, found.state.value, found.last_error)


def _read(conn: Conn, name: str, job_id: int) -> JobResult:
    with conn.cursor(row_factory=dict_row) as cur:
        read_any_row(cur)
        row = cur.execute(query(name), {"id": job_id}).fetchone()
    if row is None:
        raise JobNotFoundError(f"no job #{job_id}")
    return JobResult(JobState(row["state"]), row["result"], row["last_error"])


def job_result(conn: Conn, job_id: int) -> JobResult | None:
    """A job's state, result and error now (None: no such job), as `passito_jobs.job_result()`."""
    try:
        return _read(conn, "job_result", job_id)
    except JobNotFoundError:
        return None
    except (psycopg.Error, OSError) as exc:
        raise translate(exc, conn) from exc
