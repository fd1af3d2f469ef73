"""Flow control across real worker processes: the limits hold for the fleet, however many
workers claim at once, sampled from the jobs table's own timestamps (not the workers' counters)."""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from passito_jobs import JobRequest, dispatch, dispatch_many
from passito_jobs.queue.flow import parse_rate
from passito_jobs.queue.store import Store
from tests.helpers import WorkerProcess, count_states, job_state, wait_for

Conn = psycopg.Connection[Any]

FAST_RESCUE = {
    "PASSITO_HEARTBEAT_INTERVAL": "0.3",
    "PASSITO_STUCK_AFTER": "2",
    "PASSITO_MAINTENANCE_INTERVAL": "0.5",
}


def most_at_once(conn: Conn, queue: str) -> int:
    """The largest number of the queue's jobs between started_at and finished_at at one moment."""
    rows = conn.execute(
        "SELECT started_at, finished_at FROM passito_jobs.jobs WHERE queue = %s AND started_at IS NOT NULL",
        (queue,),
    ).fetchall()
    # At the same instant an end comes before a start (0 < 1): a slot handed on is not an overlap.
    events = sorted([(s, 1) for s, _ in rows] + [(f, 0) for _, f in rows if f is not None])
    running = peak = 0
    for _, kind in events:
        running += 1 if kind else -1
        peak = max(peak, running)
    return peak


def workers(
    env: dict[str, str], tmp_path: Path, count: int, *args: str, name: str = "w"
) -> list[WorkerProcess]:
    return [WorkerProcess(env, tmp_path / f"{name}{i}.log", "--no-log-jobs", *args) for i in range(count)]


def stop_all(procs: list[WorkerProcess]) -> None:
    for proc in procs:
        proc.stop()


def listening(conn: Conn) -> int:
    """How many connections to this database LISTEN (one per worker that is ready)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%%'"
    ).fetchone()
    return int(row[0]) if row else 0


def test_concurrency_holds_across_three_workers(
    conn: Conn, store: Store, cli_env: dict[str, str], tmp_path: Path
) -> None:
    store.flow.set_limits("pdf", concurrency=3)
    conn.commit()
    env = {**cli_env, "PASSITO_POLL_INTERVAL": "0.2"}
    # Each worker may run 2 at once (6 in all, twice the cap): no single worker can hold the
    # queue's 3 slots by itself, so reaching 3 takes two workers at once. With a per-worker
    # concurrency above the cap, one worker could keep every slot (it claims again in the round
    # trip that frees one), and "more than one worker took jobs" was a race (failed once in CI).
    procs = workers(env, tmp_path, 3, "--concurrency", "2")
    try:
        wait_for(lambda: listening(conn) >= 3, timeout=120, message="three workers listening")
        # A trickle, so that every dispatch wakes all three workers and they race for slots.
        for _ in range(30):
            dispatch("Sleep", {"seconds": 0.3}, queue="pdf", conn=conn)
            conn.commit()
            time.sleep(0.05)
        wait_for(
            lambda: count_states(conn).get("completed") == 30, timeout=180, message="30 jobs to complete"
        )
    finally:
        stop_all(procs)
    assert most_at_once(conn, "pdf") == 3
    assert len({w for (w,) in conn.execute("SELECT DISTINCT worker_id FROM passito_jobs.jobs")}) >= 2


def test_a_rate_spreads_the_starts_across_workers(
    conn: Conn, store: Store, cli_env: dict[str, str], tmp_path: Path
) -> None:
    store.flow.set_limits("mail", rate=parse_rate("10/1s"))
    conn.commit()
    dispatch_many([JobRequest("Noop", queue="mail") for _ in range(25)], conn=conn)
    conn.commit()
    procs = workers(cli_env, tmp_path, 3, "--concurrency", "5")
    try:
        wait_for(
            lambda: count_states(conn).get("completed") == 25, timeout=180, message="25 jobs to complete"
        )
    finally:
        stop_all(procs)
    starts: list[datetime] = [
        s for (s,) in conn.execute("SELECT started_at FROM passito_jobs.jobs ORDER BY 1")
    ]
    # 10/1s allows no burst: starts are at least 100 ms apart, so no second holds more than 10.
    busiest = max(sum(1 for t in starts if s <= t < s + timedelta(seconds=1)) for s in starts)
    assert busiest <= 10
    assert min(b - a for a, b in itertools.pairwise(starts)) >= timedelta(milliseconds=100)
    assert starts[-1] - starts[0] >= timedelta(seconds=2.4)


def test_a_paused_queue_waits_while_others_drain_and_resume_wakes_it(
    conn: Conn, store: Store, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "PASSITO_POLL_INTERVAL": "60"}  # only notifications can make this fast
    in_flight = dispatch("Sleep", {"seconds": 1.5}, queue="held", conn=conn)
    conn.commit()
    (proc,) = workers(env, tmp_path, 1, "--concurrency", "5")
    try:
        wait_for(
            lambda: job_state(conn, in_flight) == "processing", timeout=60, message="the sleeper to start"
        )
        store.flow.pause("held")
        conn.commit()
        held = dispatch_many([JobRequest("Noop", queue="held") for _ in range(5)], conn=conn)
        dispatch_many([JobRequest("Noop", queue="other") for _ in range(5)], conn=conn)
        conn.commit()
        wait_for(
            lambda: job_state(conn, in_flight) == "completed",
            timeout=60,
            message="the job in flight to finish",
        )
        wait_for(
            lambda: count_states(conn).get("completed") == 6, timeout=60, message="the other queue to drain"
        )
        attempts = conn.execute(
            "SELECT max(attempts) FROM passito_jobs.jobs WHERE id = ANY(%s)", (held,)
        ).fetchone()
        assert attempts == (0,)
        assert {job_state(conn, i) for i in held} == {"pending"}
        resumed = time.monotonic()
        store.flow.resume("held")
        conn.commit()
        wait_for(
            lambda: count_states(conn).get("completed") == 11, timeout=30, message="the paused jobs to run"
        )
        assert time.monotonic() - resumed < 10  # a notification, not the 60 s poll
    finally:
        proc.stop()


def test_one_keys_backlog_does_not_block_another_key(
    conn: Conn, store: Store, cli_env: dict[str, str], tmp_path: Path
) -> None:
    store.flow.set_limits("outpass", key_concurrency=2)
    conn.commit()
    dispatch_many(
        [
            JobRequest("Sleep", {"seconds": 0.1}, queue="outpass", concurrency_key="hostel:ganga")
            for _ in range(200)
        ],
        conn=conn,
    )
    other = dispatch("Noop", queue="outpass", concurrency_key="hostel:yamuna", conn=conn)
    conn.commit()
    procs = workers(cli_env, tmp_path, 2, "--concurrency", "10")
    try:
        wait_for(lambda: job_state(conn, other) == "completed", timeout=60, message="the other key's job")
        left = conn.execute(
            "SELECT count(*) FROM passito_jobs.jobs"
            " WHERE concurrency_key = 'hostel:ganga' AND state = 'pending'"
        ).fetchone()
        assert left is not None
        assert left[0] > 100
        peak = conn.execute(
            "SELECT count(*) FROM passito_jobs.jobs"
            " WHERE concurrency_key = 'hostel:ganga' AND state = 'processing'"
        ).fetchone()
        assert peak is not None
        assert peak[0] <= 2
    finally:
        stop_all(procs)
    assert most_at_once(conn, "outpass") <= 3  # two of ganga and yamuna's one, never more


def test_after_a_sigkill_the_rescue_frees_the_slots_and_the_queue_drains(
    conn: Conn, store: Store, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, **FAST_RESCUE}
    store.flow.set_limits("pdf", concurrency=2)
    conn.commit()
    doomed = dispatch_many(
        [JobRequest("Sleep", {"seconds": 600}, queue="pdf", max_attempts=2) for _ in range(2)], conn=conn
    )
    conn.commit()
    (first,) = workers(env, tmp_path, 1, "--concurrency", "5")
    wait_for(
        lambda: {job_state(conn, i) for i in doomed} == {"processing"}, timeout=60, message="two sleepers"
    )
    first.kill()
    conn.execute("UPDATE passito_jobs.jobs SET payload = '{\"seconds\": 0.1}' WHERE id = ANY(%s)", (doomed,))
    rest = dispatch_many([JobRequest("Sleep", {"seconds": 0.1}, queue="pdf") for _ in range(10)], conn=conn)
    conn.commit()
    (second,) = workers(env, tmp_path, 1, "--concurrency", "5", name="second")
    try:
        wait_for(lambda: count_states(conn).get("completed") == 12, timeout=120, message="the queue to drain")
    finally:
        second.stop()
    assert {job_state(conn, i) for i in [*doomed, *rest]} == {"completed"}
    (row,) = store.flow.queues(["pdf"])
    assert (row.processing, row.ready, row.held_back) == (0, 0, 0)
    # The killed worker's jobs held their slots until the rescue (which set their run_at):
    # none of the others started before that.
    row = conn.execute(
        "SELECT (SELECT min(started_at) FROM passito_jobs.jobs WHERE id = ANY(%s))"
        " >= (SELECT min(run_at) FROM passito_jobs.jobs WHERE id = ANY(%s))",
        (rest, doomed),
    ).fetchone()
    assert row == (True,)
