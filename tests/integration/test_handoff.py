"""Handoff (migration 0014): a plain job dispatched while a worker waits goes straight to that
worker, with no claim, on a real PostgreSQL.

The SQL tests play the worker with a connection of their own: it holds the listener's lock and
LISTENs on its channel, as a worker's listener does. The worker tests run a real Worker.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from passito_jobs import JobContext, dispatch, job_type
from passito_jobs.queue.asyncstore import handed_job
from passito_jobs.queue.connection import connect
from passito_jobs.queue.models import ClaimedJob
from passito_jobs.queue.store import Store
from passito_jobs.registry import Registry
from tests.helpers import wait_for
from tests.inprocess import InProcessWorker

Conn = psycopg.Connection[Any]

CHANNEL, LOCK_KEY = "passito_jobs_handoff_test", 424242
CLAIM = (
    "SELECT id, handed FROM passito_jobs.claim_or_wait(%(worker)s, %(queues)s::text[], %(batch)s, "
    "%(channel)s, %(lock_key)s, %(known)s::bigint[])"
)


@pytest.fixture
def listener(database_url: str) -> Iterator[Conn]:
    """A worker's listener: holds the lock that says it listens, and LISTENs on its channel."""
    with connect(database_url, autocommit=True) as conn:
        assert conn.execute("SELECT pg_try_advisory_lock(1885434740, %s)", (LOCK_KEY,)).fetchone() == (True,)
        conn.execute(f"LISTEN {CHANNEL}")
        yield conn


def wait_as(conn: Conn, worker: str = "w:1", *, batch: int = 2, queues: list[str] | None = None) -> list[Any]:
    """The worker's claim, leaving its free slots in waiting_workers; the rows it returns."""
    params = {
        "worker": worker,
        "queues": queues,
        "batch": batch,
        "channel": CHANNEL,
        "lock_key": LOCK_KEY,
        "known": [],
    }
    return conn.execute(CLAIM, params).fetchall()


def job(conn: Conn, job_id: int) -> tuple[str, int, str | None]:
    found = conn.execute(
        "SELECT state::text, attempts, worker_id FROM passito_jobs.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert found is not None
    return found


def messages(listener: Conn) -> list[str]:
    return [n.payload for n in listener.notifies(timeout=0.5, stop_after=10) if n.channel == CHANNEL]


def test_a_due_plain_job_goes_to_the_waiting_worker_with_what_its_handler_needs(
    conn: Conn, listener: Conn
) -> None:
    assert wait_as(conn) == []
    job_id = dispatch(
        "Echo", {"text": 'naïve \u2028 \\ "q"'}, priority=3, metadata={"tenant": "x"}, conn=conn
    )
    assert job(conn, job_id) == ("processing", 1, "w:1")
    assert conn.execute("SELECT slots, handed FROM passito_jobs.waiting_workers").fetchone() == (1, [job_id])
    (message,) = messages(listener)
    handed = handed_job(message)
    assert isinstance(handed, ClaimedJob)
    assert (handed.id, handed.queue, handed.type, handed.priority, handed.attempt, handed.max_attempts) == (
        job_id,
        "default",
        "Echo",
        3,
        1,
        3,
    )
    assert handed.payload == {"text": 'naïve \u2028 \\ "q"'}
    assert handed.metadata == {"tenant": "x"}
    assert handed.handed
    assert handed.unreadable is None


def test_the_sql_dispatch_function_never_hands_off(conn: Conn, listener: Conn) -> None:
    """It cannot tell whether its caller's transaction ends with the statement (a PHP call may
    sit in a long one): its jobs are claimed."""
    wait_as(conn)
    (job_id,) = conn.execute("SELECT passito_jobs.dispatch('Noop')").fetchone() or ()
    assert job(conn, job_id) == ("pending", 0, None)
    assert messages(listener) == []


@pytest.mark.parametrize(
    "case",
    [
        "delayed",
        "other queue",
        "paused queue",
        "limited queue",
        "older job due",
        "higher priority pending",
        "no free slot",
        "unique key",
    ],
)
def test_no_handoff_where_the_claim_must_decide(conn: Conn, listener: Conn, case: str) -> None:
    """Each of these jobs stays pending, with the usual notification: claim's rules (order, flow
    control, due time, the worker's queues, its free slots) decide who runs it."""
    queues = ["mail"] if case == "other queue" else None
    wait_as(conn, batch=1, queues=queues)
    kwargs: dict[str, Any] = {}
    if case == "delayed":
        kwargs["delay"] = 60
    elif case == "paused queue":
        conn.execute("SELECT passito_jobs.pause_queue('default')")
    elif case == "limited queue":
        conn.execute("SELECT passito_jobs.set_queue_concurrency('default', 5)")
    elif case == "older job due":
        conn.execute("INSERT INTO passito_jobs.jobs (type) VALUES ('Noop')")
    elif case == "higher priority pending":  # even one not due yet: the test stays one index step
        conn.execute(
            "INSERT INTO passito_jobs.jobs (type, priority, run_at) VALUES ('Noop', 1, now() + '1h')"
        )
    elif case == "no free slot":
        dispatch("Noop", conn=conn)  # takes the one slot
        messages(listener)
    elif case == "unique key":
        kwargs["unique_key"] = "once"
    job_id = dispatch("Noop", conn=conn, **kwargs)
    assert job(conn, job_id) == ("pending", 0, None)
    assert messages(listener) == []


def test_delayed_jobs_of_its_priority_or_lower_do_not_stop_a_handoff_nor_get_read(
    conn: Conn, listener: Conn, database_url: str
) -> None:
    """A queue full of delayed jobs (retries in backoff, jobs scheduled ahead; here of 1,000
    priorities at or below the new job's) still hands a new job over, and finding that none of
    them comes first costs the dispatch no more buffers than in an empty queue: not a walk of
    20,000 index entries, nor one step per priority (PostgreSQL 18's skip scan of a test on
    `run_at` alone). Counted as the dispatching backend's own buffer hits (PostgreSQL 18)."""
    conn.execute(
        "INSERT INTO passito_jobs.jobs (type, priority, run_at) "
        "SELECT 'Noop', -(i % 1000), now() + make_interval(mins => i) FROM generate_series(1, 20000) i"
    )
    conn.execute("ANALYZE passito_jobs.jobs")
    wait_as(conn, batch=3)
    with connect(database_url, autocommit=True) as observer:

        def hits() -> int:
            conn.execute("SELECT pg_stat_force_next_flush()")  # flushed before it answers
            row = observer.execute(
                "SELECT coalesce(sum(hits), 0)::int FROM pg_stat_get_backend_io(%s) "
                "WHERE object = 'relation'",
                (conn.info.backend_pid,),
            ).fetchone()
            return int(row[0]) if row else 0

        dispatch("Noop", queue="warm-up", conn=conn)  # plans and caches, once
        before = hits()
        empty = dispatch("Noop", queue="empty", conn=conn)
        middle = hits()
        crowded = dispatch("Noop", conn=conn)
        after = hits()
    assert job(conn, empty) == ("processing", 1, "w:1")
    assert job(conn, crowded) == ("processing", 1, "w:1")
    assert (after - middle) - (middle - before) < 20


def test_a_worker_whose_listener_is_gone_gets_nothing_and_its_row_goes(conn: Conn, database_url: str) -> None:
    with connect(database_url, autocommit=True) as gone:
        gone.execute("SELECT pg_advisory_lock(1885434740, %s)", (LOCK_KEY,))
        wait_as(conn)
    # Its backend ends a moment after the client closed the connection; the lock goes with it.
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1885434740 AND objid = %s"
    wait_for(lambda: conn.execute(held, (LOCK_KEY,)).fetchone() == (0,), message="the lock to go")
    job_id = dispatch("Noop", conn=conn)
    assert job(conn, job_id) == ("pending", 0, None)
    assert conn.execute("SELECT count(*) FROM passito_jobs.waiting_workers").fetchone() == (0,)


def test_a_gone_listener_with_handed_jobs_keeps_them_for_its_next_claim_and_prune_forgets_it_later(
    conn: Conn, database_url: str
) -> None:
    """The listener's connection broke after a dispatch handed it a job and before the
    notification arrived: the next dispatch closes the worker's row (no slots) instead of
    deleting what it was handed, so the worker's next claim takes the job back. A row whose
    worker never comes back goes with the maintenance's prune once its handed jobs are done."""
    held = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 1885434740 AND objid = %s"
    with connect(database_url, autocommit=True) as gone:
        gone.execute("SELECT pg_advisory_lock(1885434740, %s)", (LOCK_KEY,))
        wait_as(conn, batch=2)
        handed = dispatch("Noop", conn=conn)
    wait_for(lambda: conn.execute(held, (LOCK_KEY,)).fetchone() == (0,), message="the lock to go")
    assert job(conn, dispatch("Noop", queue="other", conn=conn)) == ("pending", 0, None)
    assert conn.execute("SELECT slots, handed FROM passito_jobs.waiting_workers").fetchone() == (0, [handed])
    assert conn.execute("SELECT passito_jobs.forget_waiting_workers()").fetchone() == (0,)  # still processing
    # The worker, its listener back: its claim returns the job it was handed.
    assert wait_as(conn, batch=2)[0] == (handed, True)
    # A worker that never comes back: once its handed job is done, the prune forgets its row.
    with connect(database_url, autocommit=True) as gone:
        gone.execute("SELECT pg_advisory_lock(1885434740, %s)", (LOCK_KEY + 1,))
        params = {"worker": "w:2", "queues": None, "batch": 1, "channel": CHANNEL, "lock_key": LOCK_KEY + 1}
        conn.execute(CLAIM, {**params, "known": []})
        second = dispatch("Noop", queue="third", conn=conn)
    wait_for(lambda: conn.execute(held, (LOCK_KEY + 1,)).fetchone() == (0,), message="the lock to go")
    conn.execute(
        "SELECT passito_jobs.complete('w:2', ARRAY[%s]::bigint[], ARRAY[1], ARRAY[NULL]::jsonb[])", (second,)
    )
    Store(conn).prune(3600, 3600)
    workers = [row[0] for row in conn.execute("SELECT worker_id FROM passito_jobs.waiting_workers")]
    assert "w:2" not in workers


def test_a_dispatch_inside_a_longer_transaction_is_not_handed(
    conn: Conn, listener: Conn, database_url: str
) -> None:
    """Its lock on the worker's row would last until the commit, and the job would reach the
    worker only then (rescued meanwhile, past PASSITO_STUCK_AFTER): such a job is claimed."""
    wait_as(conn, batch=3)
    with connect(database_url, autocommit=False) as producer:  # psycopg opens a transaction
        in_python = dispatch("Noop", conn=producer)
        (in_sql,) = producer.execute("SELECT passito_jobs.dispatch('Noop', queue => 'sql')").fetchone() or ()
        producer.commit()
    with connect(database_url) as producer, producer.transaction():  # a block on an autocommit one
        in_block = dispatch("Noop", queue="block", conn=producer)
    assert job(conn, in_python) == ("pending", 0, None)
    assert job(conn, in_sql) == ("pending", 0, None)
    assert job(conn, in_block) == ("pending", 0, None)
    assert messages(listener) == []


def test_a_job_too_long_for_a_notification_is_sent_by_id_and_read_by_the_next_claim(
    conn: Conn, listener: Conn
) -> None:
    wait_as(conn)
    job_id = dispatch("Echo", {"text": "x" * 9000}, conn=conn)
    (message,) = messages(listener)
    assert handed_job(message) == job_id
    # The next claim returns it, flagged handed; named as known, it is not returned again.
    assert wait_as(conn, batch=2) == [(job_id, True)]
    assert wait_as(conn, batch=2) == []


def test_the_next_claim_returns_handed_jobs_the_worker_does_not_know_and_claims_fewer(
    conn: Conn, listener: Conn
) -> None:
    wait_as(conn, batch=2)
    handed = dispatch("Noop", conn=conn)
    conn.execute("INSERT INTO passito_jobs.jobs (type) VALUES ('Noop'), ('Noop')")
    rows = wait_as(conn, batch=2)
    assert rows[0] == (handed, True)
    assert len(rows) == 2  # one claimed: the handed job took a slot
    assert rows[1][1] is False
    params = {
        "worker": "w:1",
        "queues": None,
        "batch": 2,
        "channel": None,
        "lock_key": None,
        "known": [handed],
    }
    assert [r[1] for r in conn.execute(CLAIM, params).fetchall()] == [False]


def test_stop_waiting_gives_back_the_handed_jobs_the_worker_does_not_run(conn: Conn, listener: Conn) -> None:
    wait_as(conn, batch=3)
    running = dispatch("Noop", conn=conn)
    unseen = dispatch("Noop", conn=conn)
    assert conn.execute("SELECT passito_jobs.stop_waiting('w:1', %s)", ([running],)).fetchone() == (1,)
    assert job(conn, running) == ("processing", 1, "w:1")
    assert job(conn, unseen) == ("pending", 0, None)
    assert conn.execute("SELECT count(*) FROM passito_jobs.waiting_workers").fetchone() == (0,)


@pytest.mark.parametrize(
    "message",
    [
        "",
        "[]",
        "[1, 2]",
        "[true]",
        "[1.5]",
        '["1"]',
        '[1,"q","T",0,1]',
        '[1,"q","T",0,1,true]',
        "{}",
        "[" * 100_000,
        "[0]",
        "[9223372036854775808]",
        '[1,"q","T",0,0,3]\nnull\n{}',
        '[1,"q","T",2147483648,1,3]\nnull\n{}',
        '[1,"q","T",0,1,0]\nnull\n{}',
        '[1,"q","T",0,1,3]\nnull\n[1]',
        '[1,"q","T",0,1,3]\n{\n{"a":}',
    ],
)
def test_a_message_that_is_not_a_handed_job_is_ignored_or_fails_only_its_job(message: str) -> None:
    """Anyone with the database may NOTIFY: a message that is not one reads as None, and a
    payload that cannot be read fails that job (unreadable), like a claimed one."""
    handed = handed_job(message)
    if isinstance(handed, ClaimedJob):
        assert handed.unreadable is not None
        assert handed.metadata is None
    else:
        assert handed is None


# --------------------------------------------------------------- a real worker


def make_registry(release: threading.Event, running: list[int], peak: list[int]) -> Registry:
    registry = Registry()

    @job_type("Held", into=registry)
    def held(ctx: JobContext) -> None:
        running.append(ctx.id)
        peak[0] = max(peak[0], len(running))
        try:
            release.wait(30)
        finally:
            running.remove(ctx.id)

    return registry


def waiting_row(conn: Conn, worker: InProcessWorker) -> Any:
    return conn.execute(
        "SELECT slots, channel FROM passito_jobs.waiting_workers WHERE worker_id = %s",
        (worker.worker.worker_id,),
    ).fetchone()


def test_an_idle_worker_runs_a_handed_job_without_claiming_it(conn: Conn, database_url: str) -> None:
    # No poll meanwhile: a poll's claim takes the worker's row back for a moment, and a dispatch
    # in that moment is claimed instead (as it should be).
    with InProcessWorker(database_url, concurrency=4, poll_interval=60) as worker:
        wait_for(lambda: waiting_row(conn, worker), message="the worker to wait")
        batches = worker.metric("passito_jobs_worker_claim_batch_size_count")
        job_id = dispatch("Noop", conn=conn)
        wait_for(lambda: job(conn, job_id)[0] == "completed", message="the handed job to complete")
        assert job(conn, job_id) == ("completed", 1, worker.worker.worker_id)
        assert worker.metric("passito_jobs_worker_handed_jobs_total", {"result": "started"}) == 1
        # Its claim after the completion came back empty: no claim returned the job.
        assert worker.metric("passito_jobs_worker_claim_batch_size_count") == batches
        wait_for(
            lambda: waiting_row(conn, worker) == (4, waiting_row(conn, worker)[1]),
            message="all 4 slots free again",
        )
    assert waiting_row(conn, worker) is None  # a stopped worker waits no more
    assert job(conn, dispatch("Noop", conn=conn))[0] == "pending"


def test_concurrency_holds_when_dispatches_hand_jobs_to_a_busy_worker(conn: Conn, database_url: str) -> None:
    """A job handed to a worker whose slots filled meanwhile goes back to pending (returned),
    and runs later: never more than PASSITO_CONCURRENCY at once."""
    release, running, peak = threading.Event(), [], [0]
    with InProcessWorker(
        database_url, concurrency=2, registry=make_registry(release, running, peak)
    ) as worker:
        wait_for(lambda: waiting_row(conn, worker), message="the worker to wait")
        # Two slots are free and offered; one job a dispatch hands it, one is claimed, and a
        # third job is handed behind the claim's back (as a dispatch that raced the claim).
        first = dispatch("Held", conn=conn)
        wait_for(lambda: len(running) == 1, message="the first job to run")
        second = dispatch("Held", conn=conn)
        wait_for(lambda: len(running) == 2, message="the second job to run")
        raced = conn.execute(
            "INSERT INTO passito_jobs.jobs (type, state, attempts, worker_id, claimed_at, heartbeat_at) "
            "VALUES ('Held', 'processing', 1, %s, now(), now()) RETURNING id",
            (worker.worker.worker_id,),
        ).fetchone()[0]
        channel = waiting_row(conn, worker)[1]
        conn.execute(
            "SELECT pg_notify(%s, %s)",
            (channel, json.dumps([raced, "default", "Held", 0, 1, 3]) + "\nnull\n{}"),
        )
        wait_for(lambda: job(conn, raced)[0] == "pending", message="the raced job to go back")
        assert job(conn, raced) == ("pending", 0, None)
        assert worker.metric("passito_jobs_worker_handed_jobs_total", {"result": "returned"}) == 1
        release.set()
        wait_for(
            lambda: all(job(conn, j)[0] == "completed" for j in (first, second, raced)), message="all three"
        )
    assert peak[0] == 2


def test_a_handed_job_whose_notification_was_lost_runs_at_the_next_poll(
    conn: Conn, database_url: str
) -> None:
    with InProcessWorker(database_url, poll_interval=0.2) as worker:
        wait_for(lambda: waiting_row(conn, worker), message="the worker to wait")
        # A handoff whose NOTIFY never reached the worker (its listener's connection broke).
        with conn.transaction():
            lost = conn.execute(
                "INSERT INTO passito_jobs.jobs (type, state, attempts, worker_id, claimed_at, heartbeat_at) "
                "VALUES ('Noop', 'processing', 1, %s, now(), now()) RETURNING id",
                (worker.worker.worker_id,),
            ).fetchone()[0]
            conn.execute(
                "UPDATE passito_jobs.waiting_workers SET slots = slots - 1, handed = handed || %s::bigint "
                "WHERE worker_id = %s",
                (lost, worker.worker.worker_id),
            )
        wait_for(lambda: job(conn, lost)[0] == "completed", timeout=10, message="the lost handoff to run")
        assert job(conn, lost) == ("completed", 1, worker.worker.worker_id)


def test_a_claim_that_returns_after_a_handed_job_started_gives_back_what_has_no_slot(
    conn: Conn, database_url: str
) -> None:
    """The race a tester found: a dispatch holds the worker's row while handing it a job, so the
    worker's claim, skipping that row, asks for every free slot; the handed job starts while the
    claim is on its way. The claim's extra job goes back to pending: never more than
    PASSITO_CONCURRENCY at once. The claim is held on its way by a lock on a limited queue's row
    (as another worker's claim holds it)."""
    release, running, peak = threading.Event(), [], [0]
    registry = make_registry(release, running, peak)
    conn.execute("SELECT passito_jobs.set_queue_concurrency('b', 5)")
    with InProcessWorker(database_url, concurrency=2, poll_interval=60, registry=registry) as worker:
        wait_for(lambda: waiting_row(conn, worker), message="the worker to wait")
        me = worker.worker.worker_id
        with (
            connect(database_url, autocommit=False) as queue_lock,
            connect(database_url, autocommit=False) as producer,
        ):
            queue_lock.execute("SELECT 1 FROM passito_jobs.queues WHERE name = 'b' FOR UPDATE")
            channel = producer.execute(
                "SELECT channel FROM passito_jobs.waiting_workers WHERE worker_id = %s FOR UPDATE", (me,)
            ).fetchone()[0]
            conn.execute("INSERT INTO passito_jobs.jobs (type, queue) VALUES ('Held', 'b'), ('Held', 'b')")
            conn.execute("SELECT pg_notify('passito_jobs', 'b')")
            waiting = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE '%claim_or_wait%'"
            )
            wait_for(
                lambda: conn.execute(waiting).fetchone() == (1,), message="the claim to wait on the lock"
            )
            handed = producer.execute(
                "INSERT INTO passito_jobs.jobs (type, state, attempts, worker_id, claimed_at, heartbeat_at) "
                "VALUES ('Held', 'processing', 1, %s, now(), now()) RETURNING id",
                (me,),
            ).fetchone()[0]
            producer.execute(
                "UPDATE passito_jobs.waiting_workers SET slots = slots - 1, handed = handed || %s::bigint "
                "WHERE worker_id = %s",
                (handed, me),
            )
            producer.execute(
                "SELECT pg_notify(%s, %s)",
                (channel, json.dumps([handed, "default", "Held", 0, 1, 3]) + "\nnull\n{}"),
            )
            producer.commit()
            wait_for(lambda: running == [handed], message="the handed job to start")
            queue_lock.commit()
        states = "SELECT state::text, attempts FROM passito_jobs.jobs WHERE queue = 'b' ORDER BY state"
        wait_for(
            lambda: conn.execute(states).fetchall() == [("pending", 0), ("processing", 1)],
            message="one claimed job to run and the other to go back",
        )
        assert len(running) == 2
        release.set()
        wait_for(
            lambda: (
                conn.execute("SELECT count(*) FROM passito_jobs.jobs WHERE state <> 'completed'").fetchone()
                == (0,)
            ),
            message="all three to complete",
        )
    assert peak[0] == 2


def test_a_worker_stopped_while_its_claim_is_on_the_way_leaves_no_waiting_row(
    conn: Conn, database_url: str
) -> None:
    """stop() came while a claim was on its way (held here on a limited queue's lock); the claim
    came back short and left the worker's free slots in waiting_workers again. The worker takes
    them back before it exits: no dispatch hands a job to a worker that is gone."""
    conn.execute("SELECT passito_jobs.set_queue_concurrency('b', 5)")
    with InProcessWorker(database_url, poll_interval=60) as worker:
        wait_for(lambda: waiting_row(conn, worker), message="the worker to wait")
        with connect(database_url, autocommit=False) as queue_lock:
            queue_lock.execute("SELECT 1 FROM passito_jobs.queues WHERE name = 'b' FOR UPDATE")
            conn.execute("SELECT pg_notify('passito_jobs', 'default')")
            waiting = (
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND query LIKE '%claim_or_wait%'"
            )
            wait_for(
                lambda: conn.execute(waiting).fetchone() == (1,), message="the claim to wait on the lock"
            )
            worker.worker.stop()
            queue_lock.commit()
        worker.stop()
    assert waiting_row(conn, worker) is None
    assert job(conn, dispatch("Noop", conn=conn))[0] == "pending"
