"""Unique-job modes (unique_for, replace) and completion callbacks (depends_on_mode="finished",
dispatch_batch), on a real PostgreSQL with real workers and concurrent dispatchers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import tests.jobtypes  # noqa: F401 - registers AlwaysPermanent, SyncSleep
from passito_jobs import (
    InvalidJobError,
    JobContext,
    JobRequest,
    dispatch,
    dispatch_batch,
    job_type,
    wait,
)
from passito_jobs.queue.connection import connect
from passito_jobs.queue.store import Store
from tests.helpers import count_states, run_main, wait_for
from tests.inprocess import InProcessWorker

Conn = psycopg.Connection[Any]


@job_type("ReportParents")
def report_parents(ctx: JobContext) -> list[dict[str, Any]]:
    """A finish job: returns how each parent ended, as ctx.parents tells it (the first line of
    an error: a traceback follows)."""
    return [
        {
            "id": p.id,
            "type": p.type,
            "state": str(p.state),
            "result": p.result,
            "error": p.error and p.error.splitlines()[0],
        }
        for p in ctx.parents
    ]


@job_type("Echo")
def echo(ctx: JobContext) -> Any:
    return ctx.payload.get("value")


def row(conn: Conn, job_id: int, columns: str = "state::text") -> Any:
    found = conn.execute(f"SELECT {columns} FROM passito_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
    assert found is not None
    return found if len(found) > 1 else found[0]


def keyed_jobs(conn: Conn, key: str) -> int:
    found = conn.execute("SELECT count(*) FROM passito_jobs.jobs WHERE unique_key = %s", (key,)).fetchone()
    assert found is not None
    return int(found[0])


def in_threads(database_url: str, threads: int, action: Callable[[Conn, int], int]) -> list[int]:
    """Run `action(conn, i)` in `threads` threads at once, each on a connection of its own."""
    barrier = threading.Barrier(threads)
    results: list[int | BaseException] = [0] * threads

    def run(i: int) -> None:
        try:
            with psycopg.connect(database_url, autocommit=True) as own:
                barrier.wait(timeout=30)
                results[i] = action(own, i)
        except BaseException as exc:  # the test reports it
            results[i] = exc

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return [int(r) for r in results]  # type: ignore[arg-type]


def finish(conn: Conn, job_id: int) -> None:
    """Claim and complete one job as a worker would (through the SQL functions)."""
    claimed = conn.execute("SELECT id, attempts FROM passito_jobs.claim('test-worker', NULL, 1)").fetchone()
    assert claimed is not None
    assert claimed[0] == job_id
    conn.execute(
        "SELECT passito_jobs.complete('test-worker', %s, %s, ARRAY['{}'::jsonb])", ([job_id], [claimed[1]])
    )


# ---------------------------------------------------------------- unique_for


def test_twelve_concurrent_dispatchers_with_unique_for_give_one_job_even_while_it_finishes(
    conn: Conn, database_url: str
) -> None:
    # Each thread dispatches the key 20 times while a worker runs (and finishes) the job: a
    # finished job is outside the unique index, so only the advisory lock keeps a second one out.
    def dispatch_many_times(own: Conn, i: int) -> int:
        ids = {dispatch("Noop", {"i": i}, unique_key="nightly", unique_for=3600, conn=own) for _ in range(20)}
        assert len(ids) == 1
        return ids.pop()

    with InProcessWorker(database_url):
        ids = in_threads(database_url, 12, dispatch_many_times)
        wait_for(lambda: row(conn, ids[0]) == "completed", message="the job to complete")
        assert dispatch("Noop", unique_key="nightly", unique_for=3600, conn=conn) == ids[0]
    assert set(ids) == {ids[0]}
    assert keyed_jobs(conn, "nightly") == 1


@pytest.mark.parametrize("ending", ["completed", "failed", "cancelled"])
def test_unique_for_dedupes_against_a_job_that_finished_within_the_window_and_not_after(
    conn: Conn, ending: str
) -> None:
    first = dispatch("Noop", unique_key="k", conn=conn)
    if ending == "completed":
        finish(conn, first)
    elif ending == "failed":
        conn.execute("SELECT passito_jobs.claim('test-worker', NULL, 1)")
        conn.execute(
            "SELECT passito_jobs.fail('test-worker', %s, ARRAY[1], ARRAY['boom'], ARRAY[NULL]::float8[])",
            ([first],),
        )
    else:
        Store(conn).cancel([first])
    assert row(conn, first) == ending
    # Within the window: the finished job's id, nothing new.
    assert dispatch("Noop", unique_key="k", unique_for=timedelta(hours=1), conn=conn) == first
    assert dispatch("Noop", unique_key="k", unique_for=60, unique_mode="replace", conn=conn) == first
    assert keyed_jobs(conn, "k") == 1
    # Past the window (it ended more than 0.2 s ago): a new job; without unique_for, too.
    wait_for(
        lambda: row(conn, first, "now() - finished_at > interval '0.2 s', 1") == (True, 1),
        message="the window to pass",
    )
    second = dispatch("Noop", unique_key="k", unique_for=0.2, conn=conn)
    assert second != first
    assert dispatch("Noop", unique_key="k", unique_for=3600, conn=conn) == second  # unfinished now
    assert keyed_jobs(conn, "k") == 2


def test_unique_for_from_sql_and_without_it_as_before(conn: Conn) -> None:
    first = conn.execute("SELECT passito_jobs.dispatch('Noop', unique_key => 'sql')").fetchone()
    assert first is not None
    finish(conn, first[0])
    again = conn.execute(
        "SELECT passito_jobs.dispatch('Noop', unique_key => 'sql', unique_for => interval '1 hour')"
    ).fetchone()
    assert again == first
    # The PHP app's call, as before: unfinished jobs only.
    fresh = conn.execute(
        "SELECT passito_jobs.dispatch('Noop', '{}', 'default', 0, NULL, '{}', 3, 'sql')"
    ).fetchone()
    assert fresh is not None
    assert fresh != first


# ---------------------------------------------------------------- replace


def test_twelve_concurrent_replacing_dispatchers_give_one_job_with_one_of_their_payloads(
    conn: Conn, database_url: str
) -> None:
    def replace(own: Conn, i: int) -> int:
        return dispatch("Noop", {"n": i}, unique_key="debounce", unique_mode="replace", delay=3600, conn=own)

    ids = in_threads(database_url, 12, replace)
    assert set(ids) == {ids[0]}
    assert keyed_jobs(conn, "debounce") == 1
    assert row(conn, ids[0], "payload, state::text")[0]["n"] in range(12)


def test_replace_gives_a_job_that_has_not_started_the_new_payload_and_run_at(conn: Conn) -> None:
    first = dispatch("Noop", {"v": 1}, unique_key="r", delay=3600, conn=conn)
    assert dispatch("Noop", {"v": 2}, unique_key="r", unique_mode="replace", delay=600, conn=conn) == first
    payload, run_at = row(conn, first, "payload, run_at")
    assert payload == {"v": 2}
    assert timedelta(seconds=590) < run_at - datetime.now(UTC) < timedelta(seconds=610)
    # The default mode keeps it as it is.
    assert dispatch("Noop", {"v": 3}, unique_key="r", conn=conn) == first
    assert row(conn, first, "payload, 1")[0] == {"v": 2}
    # Debounce: now, and a worker may take it at once.
    assert dispatch("Noop", {"v": 4}, unique_key="r", unique_mode="replace", conn=conn) == first
    assert row(conn, first, "payload, run_at <= now()") == ({"v": 4}, True)


def test_replace_never_touches_a_processing_job(conn: Conn) -> None:
    first = dispatch("Noop", {"v": 1}, unique_key="p", conn=conn)
    conn.execute("SELECT passito_jobs.claim('test-worker', NULL, 1)")
    before = row(conn, first, "payload, run_at, state::text, attempts")
    assert dispatch("Noop", {"v": 2}, unique_key="p", unique_mode="replace", delay=5, conn=conn) == first
    assert row(conn, first, "payload, run_at, state::text, attempts") == before
    assert before[2] == "processing"
    assert keyed_jobs(conn, "p") == 1


def test_replace_of_a_blocked_child_keeps_its_parents(conn: Conn) -> None:
    parent = dispatch("Noop", delay=3600, conn=conn)
    child = dispatch("Noop", {"v": 1}, depends_on=[parent], unique_key="c", conn=conn)
    assert dispatch("Noop", {"v": 2}, unique_key="c", unique_mode="replace", conn=conn) == child
    assert row(conn, child, "payload, state::text, depends_on") == ({"v": 2}, "blocked", [parent])


# ---------------------------------------------------------------- finished mode


@pytest.mark.parametrize("isolation", ["thread", "process"])
def test_finished_mode_fan_in_runs_once_after_the_last_parent_and_sees_every_outcome(
    conn: Conn, database_url: str, isolation: str
) -> None:
    failing = [dispatch("AlwaysPermanent", conn=conn) for _ in range(2)]
    cancelled = dispatch("Echo", delay=3600, conn=conn)
    completing = [
        dispatch("Echo", {"value": {"rows": 7}}, conn=conn),
        dispatch("SyncSleep", {"seconds": 1.0}, conn=conn),  # the last to end
    ]
    parents = [*failing, cancelled, *completing]
    child = dispatch("ReportParents", depends_on=parents, depends_on_mode="finished", conn=conn)
    completed_child = dispatch("Noop", depends_on=parents, conn=conn)
    assert row(conn, child, "state::text, waiting_on, depends_on_mode") == ("blocked", 5, "finished")
    Store(conn).cancel([cancelled])
    assert row(conn, child, "state::text, waiting_on") == ("blocked", 4)
    with InProcessWorker(database_url, sync_isolation=isolation, job_modules=("tests.jobtypes",)):
        outcomes = wait(child, timeout=60, connect=lambda: connect(database_url))
    assert outcomes == [
        {
            "id": failing[0],
            "type": "AlwaysPermanent",
            "state": "failed",
            "result": None,
            "error": "PermanentError: the payload is wrong and retrying will not help",
        },
        {
            "id": failing[1],
            "type": "AlwaysPermanent",
            "state": "failed",
            "result": None,
            "error": "PermanentError: the payload is wrong and retrying will not help",
        },
        {"id": cancelled, "type": "Echo", "state": "cancelled", "result": None, "error": None},
        {"id": completing[0], "type": "Echo", "state": "completed", "result": {"rows": 7}, "error": None},
        {"id": completing[1], "type": "SyncSleep", "state": "completed", "result": 1.0, "error": None},
    ]
    attempts, started = row(conn, child, "attempts, started_at")
    last_parent_end = conn.execute(
        "SELECT max(finished_at) FROM passito_jobs.jobs WHERE id = ANY(%s)", (parents,)
    ).fetchone()
    assert attempts == 1
    assert last_parent_end is not None
    assert started >= last_parent_end[0]
    # Completed mode unchanged: the first parent to fail or be cancelled fails its child, naming it.
    assert row(conn, completed_child, "state::text, last_error") == (
        "failed",
        f"parent job #{cancelled} cancelled",
    )


def test_completed_mode_is_unchanged_and_a_finished_mode_grandchild_is_released(conn: Conn) -> None:
    parent = dispatch("Noop", conn=conn)
    child = dispatch("Noop", depends_on=[parent], conn=conn)  # completed mode: fails with the parent
    grandchild = dispatch("Noop", depends_on=[child], depends_on_mode="finished", conn=conn)
    sibling = dispatch("Noop", depends_on=[parent, grandchild], conn=conn)
    Store(conn).cancel([parent])
    assert row(conn, child, "state::text, last_error") == ("failed", f"parent job #{parent} cancelled")
    # The grandchild's parent ended (failed): it runs; the sibling waits on it and on the parent.
    assert row(conn, grandchild, "state::text, waiting_on") == ("pending", 0)
    assert row(conn, sibling, "state::text, last_error") == ("failed", f"parent job #{parent} cancelled")
    claimed = conn.execute("SELECT id, parents FROM passito_jobs.claim('w', NULL, 10)").fetchall()
    assert claimed == [
        (
            grandchild,
            [
                {
                    "id": child,
                    "type": "Noop",
                    "state": "failed",
                    "result": None,
                    "error": f"parent job #{parent} cancelled",
                    "result_omitted": False,
                }
            ],
        )
    ]


def test_a_wide_fan_in_gets_its_parents_results_up_to_8_mib_and_the_rest_marked_omitted(conn: Conn) -> None:
    parents = [dispatch("Noop", conn=conn) for _ in range(3)]
    child = dispatch("Noop", depends_on=parents, depends_on_mode="finished", conn=conn)
    claimed = conn.execute("SELECT id, attempts FROM passito_jobs.claim('w', NULL, 10)").fetchall()
    big = '{"blob": "' + "x" * 3_000_000 + '"}'  # 3 MB each: the third passes 8 MiB in all
    conn.execute(
        "SELECT passito_jobs.complete('w', %s, %s, array_fill(%s::jsonb, ARRAY[3]))",
        ([c[0] for c in claimed], [c[1] for c in claimed], big),
    )
    found = conn.execute("SELECT id, parents FROM passito_jobs.claim('w', NULL, 10)").fetchone()
    assert found is not None
    assert found[0] == child
    outcomes = {p["id"]: (p["result"] is not None, p["result_omitted"]) for p in found[1]}
    assert outcomes == {parents[0]: (True, False), parents[1]: (True, False), parents[2]: (False, True)}


def test_a_finished_mode_child_is_dispatched_ready_when_its_parents_have_ended(conn: Conn) -> None:
    parent = dispatch("Noop", conn=conn)
    Store(conn).cancel([parent])
    child = dispatch("Noop", depends_on=[parent], depends_on_mode="finished", conn=conn)
    assert row(conn, child, "state::text, waiting_on") == ("pending", 0)
    completed_mode = dispatch("Noop", depends_on=[parent], conn=conn)
    assert row(conn, completed_mode, "state::text") == "failed"


def test_a_finished_mode_child_behind_a_failed_parent_is_no_orphan_and_can_be_retried(conn: Conn) -> None:
    failed = dispatch("Noop", conn=conn)
    waiting = dispatch("Noop", delay=3600, conn=conn)
    child = dispatch("Noop", depends_on=[failed, waiting], depends_on_mode="finished", conn=conn)
    store = Store(conn)
    store.cancel([failed])
    assert store.blocked_orphans(timeout=10) == {}
    store.cancel([child])
    assert store.dead_parents([child]) == {}
    assert store.retry([child]) == [child]
    assert row(conn, child, "state::text, waiting_on") == ("blocked", 1)


def test_retrying_a_parent_makes_its_finished_mode_child_wait_for_it_again(conn: Conn) -> None:
    first = dispatch("Noop", conn=conn)
    second = dispatch("Noop", delay=3600, conn=conn)
    child = dispatch("Noop", depends_on=[first, second], depends_on_mode="finished", conn=conn)
    store = Store(conn)
    store.cancel([first])
    assert row(conn, child, "state::text, waiting_on") == ("blocked", 1)
    assert store.retry([first]) == [first]
    assert row(conn, child, "state::text, waiting_on") == ("blocked", 2)
    store.cancel([first, second])
    assert row(conn, child, "state::text, waiting_on") == ("pending", 0)
    # Retried alone while its parents are cancelled, a finished-mode child runs again.
    store.cancel([child])
    assert store.retry([child]) == [child]
    assert row(conn, child, "state::text, waiting_on") == ("pending", 0)


def test_dispatch_batch_runs_the_finish_job_once_every_job_ended(conn: Conn, database_url: str) -> None:
    batch = dispatch_batch(
        [
            JobRequest("Echo", {"value": 1}),
            {"type": "AlwaysPermanent"},
            {"type": "Echo", "payload": {"value": 3}},
        ],
        on_finish={"type": "ReportParents", "queue": "reports"},
        conn=conn,
    )
    assert len(batch.job_ids) == 3
    assert row(conn, batch.on_finish, "state::text, depends_on, queue") == (
        "blocked",
        batch.job_ids,
        "reports",
    )
    with InProcessWorker(database_url):
        outcomes = wait(batch.on_finish, timeout=60, connect=lambda: connect(database_url))
    assert [(o["state"], o["result"]) for o in outcomes] == [
        ("completed", 1),
        ("failed", None),
        ("completed", 3),
    ]


def test_dispatch_batch_is_one_transaction(conn: Conn) -> None:
    with pytest.raises(InvalidJobError, match="job 1: queue must be a non-empty string"):
        dispatch_batch([{"type": "Noop"}, {"type": "Noop", "queue": ""}], on_finish="Noop", conn=conn)
    with pytest.raises(InvalidJobError, match="on_finish: unique_mode must be 'keep' or 'replace'"):
        dispatch_batch([{"type": "Noop"}], on_finish={"type": "Noop", "unique_mode": "x"}, conn=conn)
    assert count_states(conn) == {}
    # A finish job with a unique key could come back as an existing job that does not wait for
    # the batch (replace even moved its run_at to now and cleared its parents).
    later = dispatch("Noop", unique_key="fin-r", delay=1000, conn=conn)
    for mode in ("keep", "replace"):
        finish_job = {"type": "Noop", "unique_key": "fin-r", "unique_mode": mode}
        with pytest.raises(InvalidJobError, match="on_finish: unique_key is not allowed"):
            dispatch_batch([{"type": "Noop"}], on_finish=finish_job, conn=conn)
    assert count_states(conn) == {"pending": 1}
    assert conn.execute(
        "SELECT run_at > now() + interval '900 seconds' FROM passito_jobs.jobs WHERE id = %s", (later,)
    ).fetchone() == (True,)
    conn.execute("DELETE FROM passito_jobs.jobs")
    only = dispatch_batch([], on_finish="Noop", conn=conn)
    assert only.job_ids == []
    assert row(conn, only.on_finish) == "pending"


def test_the_cli_dispatches_with_the_new_options(conn: Conn, cli_in_process: dict[str, str]) -> None:
    code, out, err = run_main(["dispatch", "Noop", "--unique-key", "cli", "--unique-for", "5m"])
    assert code == 0, err
    first = int(out)
    finish(conn, first)
    code, out, err = run_main(["dispatch", "Noop", "--unique-key", "cli", "--unique-for", "300"])
    assert (code, int(out)) == (0, first)
    code, out, err = run_main(
        ["dispatch", "Noop", "--unique-key", "cli2", "--unique-mode", "replace", "--payload", '{"a": 1}']
    )
    assert code == 0, err
    second = int(out)
    code, out, err = run_main(
        ["dispatch", "Noop", "--unique-key", "cli2", "--unique-mode", "replace", "--payload", '{"a": 2}']
    )
    assert (code, int(out)) == (0, second)
    assert row(conn, second, "payload, 1")[0] == {"a": 2}
    code, out, err = run_main(
        ["dispatch", "Noop", "--depends-on", str(first), "--depends-on-mode", "finished"]
    )
    assert code == 0, err
    assert row(conn, int(out), "depends_on_mode") == "finished"


# ---------------------------------------------------------------- hostile input

BAD_PYTHON: dict[str, tuple[dict[str, Any], str]] = {
    "NaN": (
        {"unique_key": "k", "unique_for": float("nan")},
        "unique_for must be a positive duration, got nan seconds",
    ),
    "negative": (
        {"unique_key": "k", "unique_for": -5},
        "unique_for must be a positive duration, got -5 seconds",
    ),
    "zero": (
        {"unique_key": "k", "unique_for": timedelta(0)},
        "unique_for must be a positive duration, got 0 seconds",
    ),
    "huge": (
        {"unique_key": "k", "unique_for": 1e300},
        "unique_for must be at most 36500d (100 years), got 1e+300",
    ),
    "infinite": (
        {"unique_key": "k", "unique_for": float("inf")},
        "unique_for must be at most 36500d (100 years)",
    ),
    "huge int": (
        {"unique_key": "k", "unique_for": 10**400},
        "unique_for must be at most 36500d (100 years), got a number of about 400 digits seconds",
    ),
    "text": ({"unique_key": "k", "unique_for": "5m"}, "unique_for must be a duration in seconds, got string"),
    "bool": (
        {"unique_key": "k", "unique_for": True},
        "unique_for must be a duration in seconds, got boolean",
    ),
    "no key": ({"unique_for": 5}, "unique_for needs a unique_key"),
    "unknown mode": (
        {"unique_key": "k", "unique_mode": "merge"},
        "unique_mode must be 'keep' or 'replace', got 'merge'",
    ),
    "mode None": (
        {"unique_key": "k", "unique_mode": None},
        "unique_mode must be 'keep' or 'replace', got null",
    ),
    "replace without key": ({"unique_mode": "replace"}, "unique_mode 'replace' needs a unique_key"),
    "dependency mode": (
        {"depends_on_mode": "any"},
        "depends_on_mode must be 'completed' or 'finished', got 'any'",
    ),
    "dependency mode list": (
        {"depends_on_mode": ["finished"]},
        "depends_on_mode must be 'completed' or 'finished'",
    ),
}


@pytest.mark.parametrize(("kwargs", "message"), BAD_PYTHON.values(), ids=BAD_PYTHON.keys())
def test_bad_new_arguments_are_clear_errors_in_python(
    conn: Conn, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidJobError) as raised:
        dispatch("Noop", conn=conn, **kwargs)
    assert str(raised.value).startswith(message)
    assert count_states(conn) == {}


BAD_SQL = {
    "negative": (
        "unique_key => 'k', unique_for => interval '-5 seconds'",
        "unique_for must be a positive duration, got -5 seconds",
    ),
    "huge": (
        "unique_key => 'k', unique_for => interval '200 years'",
        "unique_for must be at most 36500d (100 years)",
    ),
    "no key": ("unique_for => interval '5 s'", "unique_for needs a unique_key"),
    "mode": (
        "unique_key => 'k', unique_mode => 'merge'",
        "unique_mode must be 'keep' or 'replace', got 'merge'",
    ),
    "null mode": (
        "unique_key => 'k', unique_mode => NULL",
        "unique_mode must be 'keep' or 'replace', got null",
    ),
    "replace without key": ("unique_mode => 'replace'", "unique_mode 'replace' needs a unique_key"),
    "dependency mode": (
        "depends_on_mode => 'any'",
        "depends_on_mode must be 'completed' or 'finished', got 'any'",
    ),
}


@pytest.mark.parametrize(("args", "message"), BAD_SQL.values(), ids=BAD_SQL.keys())
def test_bad_new_arguments_are_clear_errors_in_sql(conn: Conn, args: str, message: str) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as raised:
        conn.execute(f"SELECT passito_jobs.dispatch('Noop', {args})")
    assert str(raised.value).startswith(message)
    assert count_states(conn) == {}


BAD_CLI = {
    "negative": (["--unique-key", "k", "--unique-for=-5s"], "argument --unique-for: must be a duration"),
    "NaN": (["--unique-key", "k", "--unique-for", "nan"], "argument --unique-for: must be a duration"),
    "huge": (["--unique-key", "k", "--unique-for", "1e999"], "argument --unique-for: must be a duration"),
    "past 100 years": (
        ["--unique-key", "k", "--unique-for", "300000000000"],
        "argument --unique-for: must be at most 36500d",
    ),
    "zero": (
        ["--unique-key", "k", "--unique-for", "0"],
        "argument --unique-for: unique_for must be a positive duration",
    ),
    "no key": (["--unique-for", "5m"], "argument --unique-for: unique_for needs a unique_key"),
    "mode": (
        ["--unique-key", "k", "--unique-mode", "merge"],
        "argument --unique-mode: invalid choice: 'merge'",
    ),
    "replace without key": (
        ["--unique-mode", "replace"],
        "argument --unique-mode: unique_mode 'replace' needs a unique_key",
    ),
    "dependency mode": (["--depends-on-mode", "any"], "argument --depends-on-mode: invalid choice: 'any'"),
}


@pytest.mark.parametrize(("args", "message"), BAD_CLI.values(), ids=BAD_CLI.keys())
def test_bad_new_arguments_are_one_line_and_exit_2_in_the_cli(
    conn: Conn, cli_in_process: dict[str, str], args: list[str], message: str
) -> None:
    code, out, err = run_main(["dispatch", "Noop", *args])
    lines = [line for line in err.splitlines() if line.strip()]
    assert (code, len(lines), out) == (2, 1, ""), err
    assert lines[0].startswith("passito-jobs"), err
    assert f": error: {message}" in lines[0], err
    assert count_states(conn) == {}


def test_the_window_check_can_read_finished_jobs_by_key_through_an_index(conn: Conn) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = conn.execute(
            "EXPLAIN SELECT id FROM passito_jobs.jobs WHERE unique_key = 'k' "
            "AND state IN ('completed', 'failed', 'cancelled') AND finished_at >= now() - interval '1 h'"
        ).fetchall()
    assert "jobs_unique_key_finished_idx" in " ".join(str(r[0]) for r in plan)


# ---------------------------------------------------------------- jobs show


def test_jobs_show_prints_the_flow(conn: Conn, cli_in_process: dict[str, str]) -> None:
    parent = dispatch("Noop", conn=conn)
    job = dispatch("Report", depends_on=[parent], depends_on_mode="finished", conn=conn)
    children = [dispatch("Noop", depends_on=[job], conn=conn) for _ in range(103)]
    grandchild = dispatch("Email", depends_on=[children[0]], conn=conn)
    code, out, err = run_main(["jobs", "show", str(job)])
    assert code == 0, err
    assert "depends on mode  finished" in out
    flow = out[out.index("flow:\n") :].splitlines()
    assert flow[1].split() == ["parent", f"#{parent}", "pending", "Noop"]
    assert flow[2].split() == ["descendant", f"#{children[0]}", "blocked", "Noop", "after", f"#{job}"]
    assert len(flow) == 1 + 1 + 100 + 1
    assert flow[-1] == "  and 4 more descendant(s)"  # 3 children and the grandchild
    code, out, err = run_main(["jobs", "show", str(job), "--json"])
    shown = json.loads(out)["flow"]
    assert (len(shown["descendants"]), shown["more_descendants"]) == (100, 4)
    code, out, err = run_main(["jobs", "show", str(grandchild)])
    assert out.splitlines()[-2] == "flow:"
    assert out.splitlines()[-1].split() == ["parent", f"#{children[0]}", "blocked", "Noop"]
