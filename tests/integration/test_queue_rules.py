"""The queue's rules, exercised through the store on a real PostgreSQL (no worker process)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from passito_jobs import dispatch
from passito_jobs.queue.asyncstore import AsyncStore
from passito_jobs.queue.connection import connect_async
from passito_jobs.queue.maintenance import Maintenance, MaintenanceConfig
from passito_jobs.queue.models import ClaimedJob, JobState
from passito_jobs.queue.store import Store
from tests.helpers import job_state, wal_writes

Conn = psycopg.Connection[Any]


def claim(url: str, batch: int, *, worker: str = "w1", queues: list[str] | None = None) -> list[ClaimedJob]:
    async def go() -> list[ClaimedJob]:
        async with await connect_async(url) as aconn:
            return await AsyncStore(aconn, worker).settle_and_claim([], [], queues, batch)

    return asyncio.run(go())


def settle(
    url: str,
    *,
    worker: str = "w1",
    completed: list[tuple[int, int, str | None]] = (),  # type: ignore[assignment]
    failed: list[tuple[int, int, str, float | None]] = (),
) -> None:  # type: ignore[assignment]
    async def go() -> None:
        async with await connect_async(url) as aconn:
            await AsyncStore(aconn, worker).settle_and_claim(completed, failed, None, 0)

    asyncio.run(go())


def test_claim_order_is_priority_then_run_at_then_id(conn: Conn, database_url: str) -> None:
    past = datetime.now(UTC) - timedelta(minutes=5)
    low = dispatch("Noop", conn=conn)
    high_late = dispatch("Noop", priority=10, conn=conn)
    high_early = dispatch("Noop", priority=10, run_at=past, conn=conn)
    old_low = dispatch("Noop", run_at=past, conn=conn)
    future = dispatch("Noop", priority=100, delay=3600, conn=conn)
    claimed = [job.id for job in claim(database_url, 10)]
    assert claimed == [high_early, high_late, old_low, low]
    assert future not in claimed
    assert job_state(conn, future) == "pending"


def test_claim_counts_an_attempt_and_filters_queues(conn: Conn, database_url: str) -> None:
    mail = dispatch("Noop", queue="emails", conn=conn)
    dispatch("Noop", queue="pdfs", conn=conn)
    [job] = claim(database_url, 10, queues=["emails"])
    assert (job.id, job.queue, job.attempt, job.max_attempts) == (mail, "emails", 1, 3)
    row = conn.execute(
        "SELECT state::text, worker_id, started_at IS NOT NULL FROM passito_jobs.jobs WHERE id = %s",
        (mail,),
    ).fetchone()
    assert row == ("processing", "w1", True)


def test_an_idle_claim_does_not_wait_for_the_wal_flush_but_outcomes_do(conn: Conn, database_url: str) -> None:
    """A claim on its own (an idle worker's pickup) commits without waiting for the WAL to reach
    the disk: a crash can only undo the lease, and the job runs again. Outcomes, and a claim
    sent with them, wait for it: a job reported completed stays completed. Counted as the WAL
    writes of the worker's own backend (pg_stat_get_backend_io, PostgreSQL 18); the test server
    runs with synchronous_commit off, so the worker's session turns it on, as a production
    server has it. A backend also writes WAL when the WAL buffers are full, whatever it commits
    (pg_stat_get_backend_wal counts those times): a claim during which that happened proves
    nothing, and the claim is made again, at most three times."""
    for i in range(5):
        dispatch("Noop", {"i": i}, conn=conn)

    async def go() -> tuple[list[int], list[int]]:
        async with await connect_async(database_url) as aconn:
            await aconn.execute("SET synchronous_commit = on")
            store = AsyncStore(aconn, "w1")
            claim_alone: list[int] = []
            held = []
            for _ in range(3):
                writes, full = await wal_writes(aconn, conn)
                held += await store.settle_and_claim([], [], None, 1)
                writes_after, full_after = await wal_writes(aconn, conn)
                if full_after == full:
                    claim_alone.append(writes_after - writes)
                    break
            with_outcomes = []
            for then_claim in (1, 0):  # complete the job last claimed; with a claim, then alone
                job = held[-1]
                writes, _ = await wal_writes(aconn, conn)
                held += await store.settle_and_claim([(job.id, job.attempt, None)], [], None, then_claim)
                with_outcomes.append((await wal_writes(aconn, conn))[0] - writes)
            assert job_state(conn, held[-1].id) == "completed"
            setting = await (await aconn.execute("SHOW synchronous_commit")).fetchone()
            assert setting == ("on",)  # the claim turned it off for its own transaction only
            return claim_alone, with_outcomes

    claim_alone, with_outcomes = asyncio.run(go())
    assert claim_alone == [0], "the claim alone waited for the WAL flush (or the WAL buffers stayed full)"
    assert with_outcomes[0] >= 1, "a completion sent with a claim did not wait for the WAL flush"
    assert with_outcomes[1] >= 1, "a completion on its own did not wait for the WAL flush"


def test_concurrent_claimers_never_share_a_job(conn: Conn, database_url: str, store: Store) -> None:
    store.dispatch_many([store_request(i) for i in range(600)])
    results: list[list[int]] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        got: list[int] = []

        async def go() -> None:
            async with await connect_async(database_url) as aconn:
                s = AsyncStore(aconn, name)
                while batch := await s.settle_and_claim([], [], None, 7):
                    got.extend(job.id for job in batch)

        asyncio.run(go())
        with lock:
            results.append(got)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [job_id for got in results for job_id in got]
    assert len(everything) == 600
    assert len(set(everything)) == 600


def store_request(i: int) -> Any:
    from passito_jobs import JobRequest

    return JobRequest("Noop", {"i": i})


def test_complete_only_counts_for_the_holder_of_that_attempt(conn: Conn, database_url: str) -> None:
    job_id = dispatch("Noop", conn=conn)
    [job] = claim(database_url, 1, worker="w1")
    settle(database_url, worker="intruder", completed=[(job_id, job.attempt, None)])
    assert job_state(conn, job_id) == "processing"
    settle(database_url, worker="w1", completed=[(job_id, job.attempt + 1, None)])
    assert job_state(conn, job_id) == "processing"
    settle(database_url, worker="w1", completed=[(job_id, job.attempt, '{"ok": true}')])
    row = conn.execute(
        "SELECT state::text, result, finished_at IS NOT NULL FROM passito_jobs.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("completed", {"ok": True}, True)


def test_failures_retry_with_the_given_delay_then_fail_for_good(conn: Conn, database_url: str) -> None:
    job_id = dispatch("Noop", max_attempts=2, conn=conn)
    [job] = claim(database_url, 1)
    settle(database_url, failed=[(job_id, 1, "RuntimeError: one", 3600.0)])
    row = conn.execute(
        "SELECT state::text, attempts, run_at > now() + interval '50 minutes', last_error "
        "FROM passito_jobs.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("pending", 1, True, "RuntimeError: one")
    assert claim(database_url, 1) == []  # not due yet
    conn.execute("UPDATE passito_jobs.jobs SET run_at = now() WHERE id = %s", (job_id,))
    [job] = claim(database_url, 1)
    assert job.attempt == 2
    settle(database_url, failed=[(job_id, 2, "RuntimeError: two", 1.0)])  # last attempt: retry_in ignored
    row = conn.execute(
        "SELECT state::text, attempts, last_error, finished_at IS NOT NULL "
        "FROM passito_jobs.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("failed", 2, "RuntimeError: two", True)


def test_permanent_failure_skips_remaining_attempts(conn: Conn, database_url: str) -> None:
    job_id = dispatch("Noop", max_attempts=5, conn=conn)
    claim(database_url, 1)
    settle(database_url, failed=[(job_id, 1, "PermanentError: bad", None)])
    assert job_state(conn, job_id) == "failed"


def test_children_wait_for_every_parent(conn: Conn, database_url: str) -> None:
    a = dispatch("Noop", conn=conn)
    b = dispatch("Noop", conn=conn)
    child = dispatch("Noop", depends_on=[a, b], conn=conn)
    grandchild = dispatch("Noop", depends_on=[child], conn=conn)
    assert job_state(conn, child) == "blocked"
    assert sorted(j.id for j in claim(database_url, 10)) == [a, b]
    settle(database_url, completed=[(a, 1, None)])
    assert job_state(conn, child) == "blocked"
    settle(database_url, completed=[(b, 1, None)])
    assert job_state(conn, child) == "pending"
    assert job_state(conn, grandchild) == "blocked"
    [job] = claim(database_url, 10)
    assert job.id == child


def test_child_of_completed_parent_is_pending_at_once(conn: Conn, database_url: str) -> None:
    parent = dispatch("Noop", conn=conn)
    claim(database_url, 1)
    settle(database_url, completed=[(parent, 1, None)])
    assert job_state(conn, dispatch("Noop", depends_on=[parent], conn=conn)) == "pending"


def test_parent_failure_fails_all_descendants_naming_the_parent(conn: Conn, database_url: str) -> None:
    parent = dispatch("Noop", max_attempts=1, conn=conn)
    child = dispatch("Noop", depends_on=[parent], conn=conn)
    grandchild = dispatch("Noop", depends_on=[child], conn=conn)
    claim(database_url, 1)
    settle(database_url, failed=[(parent, 1, "RuntimeError: nope", None)])
    errors = dict(
        conn.execute(
            "SELECT id, last_error FROM passito_jobs.jobs WHERE id IN (%s, %s)", (child, grandchild)
        ).fetchall()
    )
    assert job_state(conn, child) == job_state(conn, grandchild) == "failed"
    assert errors[child] == f"parent job #{parent} failed"
    assert errors[grandchild] == f"parent job #{child} failed"
    late = dispatch("Noop", depends_on=[parent], conn=conn)
    assert job_state(conn, late) == "failed"


def test_cancelling_a_parent_fails_children(conn: Conn, store: Store) -> None:
    parent = dispatch("Noop", conn=conn)
    child = dispatch("Noop", depends_on=[parent], conn=conn)
    assert store.cancel([parent, 999999]) == [parent]
    assert job_state(conn, parent) == "cancelled"
    job = store.get_job(child)
    assert job is not None
    assert job.state is JobState.FAILED
    assert job.last_error == f"parent job #{parent} cancelled"


def test_retrying_a_failed_chain_reruns_it_in_order(conn: Conn, database_url: str, store: Store) -> None:
    parent = dispatch("Noop", max_attempts=1, conn=conn)
    child = dispatch("Noop", depends_on=[parent], conn=conn)
    claim(database_url, 1)
    settle(database_url, failed=[(parent, 1, "RuntimeError: x", None)])
    assert sorted(store.retry(store.failed_ids())) == [parent, child]
    assert (job_state(conn, parent), job_state(conn, child)) == ("pending", "blocked")
    [job] = claim(database_url, 10)
    assert (job.id, job.attempt) == (parent, 1)
    settle(database_url, completed=[(parent, 1, None)])
    assert job_state(conn, child) == "pending"


def test_concurrent_completion_of_two_parents_releases_the_child(database_url: str) -> None:
    """Two workers complete the two parents of one child at the same moment, many times over:
    the child must always be released (the waiting_on counter is updated under a row lock)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        pairs = []
        for _ in range(40):
            a = dispatch("Noop", conn=conn)
            b = dispatch("Noop", conn=conn)
            pairs.append((a, b, dispatch("Noop", depends_on=[a, b], conn=conn)))
        conn.execute(
            "UPDATE passito_jobs.jobs SET state = 'processing', attempts = 1, worker_id = 'w' "
            "WHERE state = 'pending'"
        )

        async def complete_all(index: int) -> None:
            async with await connect_async(database_url) as aconn:
                s = AsyncStore(aconn, "w")
                for pair in pairs:
                    await s.settle_and_claim([(pair[index], 1, None)], [], None, 0)

        async def both() -> None:
            await asyncio.gather(complete_all(0), complete_all(1))

        asyncio.run(both())
        states = {job_state(conn, child) for _, _, child in pairs}
        assert states == {"pending"}


def test_rescue_requeues_stuck_jobs_and_fails_on_last_attempt(
    conn: Conn, database_url: str, store: Store
) -> None:
    retryable = dispatch("Noop", max_attempts=3, conn=conn)
    last = dispatch("Noop", max_attempts=1, conn=conn)
    child = dispatch("Noop", depends_on=[last], conn=conn)
    fresh = dispatch("Noop", conn=conn)
    claim(database_url, 2)  # retryable and last (lower ids first)
    claim(database_url, 1, worker="alive")
    conn.execute(
        "UPDATE passito_jobs.jobs SET heartbeat_at = now() - interval '2 minutes' WHERE worker_id = 'w1'"
    )
    result = Maintenance(store, "m", MaintenanceConfig(stuck_after=60)).rescue()
    assert result.rescued == [retryable]
    assert result.failed == [last]
    assert job_state(conn, fresh) == "processing"
    row = conn.execute(
        "SELECT state::text, attempts, last_error FROM passito_jobs.jobs WHERE id = %s",
        (retryable,),
    ).fetchone()
    assert row is not None
    assert row[:2] == ("pending", 1)
    assert "worker w1 stopped heart-beating during attempt 1 of 3" in row[2]
    assert job_state(conn, child) == "failed"


def test_heartbeat_reports_jobs_no_longer_held(conn: Conn, database_url: str, store: Store) -> None:
    kept = dispatch("Noop", conn=conn)
    gone = dispatch("Noop", conn=conn)
    claim(database_url, 2)
    store.cancel([gone])

    async def beat() -> set[int]:
        async with await connect_async(database_url) as aconn:
            return await AsyncStore(aconn, "w1").heartbeat([(kept, 1, {"pct": 50}), (gone, 1, None)])

    assert asyncio.run(beat()) == {kept}
    row = conn.execute("SELECT progress FROM passito_jobs.jobs WHERE id = %s", (kept,)).fetchone()
    assert row == ({"pct": 50},)


def test_release_returns_jobs_without_counting_the_attempt(conn: Conn, database_url: str) -> None:
    job_id = dispatch("Noop", conn=conn)
    claim(database_url, 1)

    async def give_back() -> int:
        async with await connect_async(database_url) as aconn:
            return await AsyncStore(aconn, "w1").release([(job_id, 1)])

    assert asyncio.run(give_back()) == 1
    row = conn.execute(
        "SELECT state::text, attempts, worker_id FROM passito_jobs.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row == ("pending", 0, None)


def test_prune_deletes_only_finished_jobs_past_retention(conn: Conn, store: Store) -> None:
    ids = {
        name: dispatch("Noop", conn=conn)
        for name in ("old_done", "new_done", "old_failed", "mid_failed", "pending")
    }
    conn.execute(
        "UPDATE passito_jobs.jobs SET state = 'completed', finished_at = now() - interval '8 days' "
        "WHERE id = %s",
        (ids["old_done"],),
    )
    conn.execute(
        "UPDATE passito_jobs.jobs SET state = 'completed', finished_at = now() - interval '1 day' "
        "WHERE id = %s",
        (ids["new_done"],),
    )
    conn.execute(
        "UPDATE passito_jobs.jobs SET state = 'failed', finished_at = now() - interval '31 days' "
        "WHERE id = %s",
        (ids["old_failed"],),
    )
    conn.execute(
        "UPDATE passito_jobs.jobs SET state = 'failed', finished_at = now() - interval '8 days' "
        "WHERE id = %s",
        (ids["mid_failed"],),
    )
    conn.execute("UPDATE passito_jobs.jobs SET created_at = now() - interval '60 days'")
    result = Maintenance(store, "m", MaintenanceConfig(batch_size=1)).prune()
    assert result.pruned == 2
    left = {row[0] for row in conn.execute("SELECT id FROM passito_jobs.jobs")}
    assert left == {ids["new_done"], ids["mid_failed"], ids["pending"]}


def test_maintenance_lease_has_one_holder(store: Store, database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as other_conn:
        other = Store(other_conn)
        assert store.acquire_lease("maintenance", "a", 30)
        assert not other.acquire_lease("maintenance", "b", 30)
        assert store.acquire_lease("maintenance", "a", 30)  # renewal
        store.release_lease("maintenance", "a")
        assert other.acquire_lease("maintenance", "b", 30)


@pytest.mark.parametrize("ttl", [0.0])
def test_expired_lease_can_be_taken_over(store: Store, ttl: float) -> None:
    assert store.acquire_lease("maintenance", "a", ttl)
    assert store.acquire_lease("maintenance", "b", 30)


def test_a_parent_skipped_while_a_child_locks_it_is_announced_again(conn: Conn, database_url: str) -> None:
    """Dispatching a child locks its parent; a worker claiming at that moment skips the parent
    (SKIP LOCKED). The child's commit must wake the parent's queue, or the parent would wait
    for the next poll."""
    parent = dispatch("Noop", queue="outpasses", conn=conn)
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN passito_jobs")
        with psycopg.connect(database_url) as tx_conn:
            dispatch("Noop", depends_on=[parent], conn=tx_conn)
            assert claim(database_url, 10) == []  # the parent's row is locked: skipped
            tx_conn.commit()
        got = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.payload for n in got] == ["outpasses"]
    assert [job.id for job in claim(database_url, 10)] == [parent]


def test_maintenance_logs_one_clean_line(
    conn: Conn, database_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = dispatch("Noop", conn=conn)
    claim(database_url, 1)
    conn.execute("UPDATE passito_jobs.jobs SET heartbeat_at = now() - interval '2 minutes'")
    with caplog.at_level("INFO", logger="passito_jobs.maintenance"):
        Maintenance(store, "m", MaintenanceConfig(stuck_after=60)).run_once()
    assert caplog.messages == [
        f"Maintenance: rescued 1 stuck job(s) (#{job_id}), failed 0, pruned 0 finished job(s)"
    ]
