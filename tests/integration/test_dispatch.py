"""Dispatching: the Python API, the SQL function other languages call, bulk dispatch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from passito_jobs import InvalidJobError, JobRequest, dispatch, dispatch_many
from passito_jobs.queue.store import Store
from tests.helpers import count_states, job_state

Conn = psycopg.Connection[Any]


def test_dispatch_stores_every_field(conn: Conn, store: Store) -> None:
    parent = dispatch("Noop", conn=conn)
    job_id = dispatch(
        "GenerateQrCode",
        {"outpass_id": 7},
        queue="outpasses",
        priority=5,
        delay=timedelta(minutes=1),
        depends_on=[parent],
        max_attempts=4,
        unique_key="qr-7",
        conn=conn,
    )
    job = store.get_job(job_id)
    assert job is not None
    assert (job.type, job.payload, job.queue, job.priority, job.max_attempts, job.unique_key) == (
        "GenerateQrCode",
        {"outpass_id": 7},
        "outpasses",
        5,
        4,
        "qr-7",
    )
    assert job.depends_on == [parent]
    assert job.state.value == "blocked"
    assert job.attempts == 0
    assert job.run_at > job.created_at + timedelta(seconds=50)


def test_dispatch_in_a_rolled_back_transaction_leaves_no_job(database_url: str, conn: Conn) -> None:
    with psycopg.connect(database_url) as tx_conn:  # not autocommit: a transaction is open
        dispatch("Noop", {"n": 1}, conn=tx_conn)
        tx_conn.rollback()
        job_id = dispatch("Noop", {"n": 2}, conn=tx_conn)
        assert count_states(conn) == {}  # not visible before commit
        tx_conn.commit()
    rows = conn.execute("SELECT id, payload FROM passito_jobs.jobs").fetchall()
    assert rows == [(job_id, {"n": 2})]


def test_bulk_dispatch_in_a_rolled_back_transaction_leaves_no_job(database_url: str, conn: Conn) -> None:
    with psycopg.connect(database_url) as tx_conn:
        dispatch_many([JobRequest("Noop") for _ in range(50)], conn=tx_conn)
        tx_conn.rollback()
    assert count_states(conn) == {}


def test_unique_key_returns_the_unfinished_job(conn: Conn) -> None:
    first = dispatch("SendOutpassEmail", {"outpass_id": 1}, unique_key="mail-1", conn=conn)
    again = dispatch("SendOutpassEmail", {"outpass_id": 1}, unique_key="mail-1", conn=conn)
    assert again == first
    assert dispatch("SendOutpassEmail", {"outpass_id": 2}, unique_key="mail-2", conn=conn) != first
    conn.execute(
        "UPDATE passito_jobs.jobs SET state = 'completed', finished_at = now() WHERE id = %s",
        (first,),
    )
    after = dispatch("SendOutpassEmail", {"outpass_id": 1}, unique_key="mail-1", conn=conn)
    assert after != first


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"payload": [1, 2]}, "payload must be a JSON object"),
        ({"delay": -1}, "delay must not be negative"),
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"depends_on": [123456]}, "unknown parent job id(s): 123456"),
        ({"queue": ""}, "queue must be a non-empty string"),
        ({"delay": 5, "run_at": datetime.now(UTC)}, "either delay or run_at"),
        ({"run_at": datetime(2030, 1, 1)}, "timezone-aware"),
    ],
)
def test_invalid_dispatch_is_rejected_and_writes_nothing(
    conn: Conn, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidJobError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dispatch("Noop", **{"payload": {}, **kwargs}, conn=conn)
    assert count_states(conn) == {}


def test_empty_type_is_rejected(conn: Conn) -> None:
    with pytest.raises(InvalidJobError, match="job type"):
        dispatch("  ", conn=conn)


def test_dispatch_many_returns_ids_in_order_and_mixes_paths(conn: Conn, store: Store) -> None:
    parent = dispatch("Noop", conn=conn)
    ids = dispatch_many(
        [
            {"type": "Noop", "payload": {"i": 0}},
            JobRequest("Noop", {"i": 1}, depends_on=(parent,)),
            {"type": "Noop", "payload": {"i": 2}, "queue": "q2", "priority": 3, "delay": 60},
            JobRequest("Noop", {"i": 3}, unique_key="u"),
            JobRequest("Noop", {"i": 4}, unique_key="u"),
        ],
        conn=conn,
    )
    assert ids[3] == ids[4]
    payloads = [store.get_job(i).payload["i"] for i in ids]  # type: ignore[union-attr]
    assert payloads == [0, 1, 2, 3, 3]
    delayed = store.get_job(ids[2])
    assert delayed is not None
    assert (delayed.queue, delayed.priority) == ("q2", 3)
    assert delayed.run_at > delayed.created_at + timedelta(seconds=55)
    assert job_state(conn, ids[1]) == "blocked"


def test_dispatch_many_names_the_bad_item(conn: Conn) -> None:
    with pytest.raises(InvalidJobError, match=r"job 1: max_attempts must be at least 1"):
        dispatch_many([JobRequest("Noop"), JobRequest("Noop", max_attempts=0)], conn=conn)
    with pytest.raises(InvalidJobError, match=r"job 0: unknown argument\(s\): colour"):
        dispatch_many([{"type": "Noop", "colour": "red"}], conn=conn)
    assert count_states(conn) == {}


def test_a_job_request_takes_a_timedelta_as_dispatch_does(conn: Conn, store: Store) -> None:
    ids = dispatch_many(
        [JobRequest("Noop", delay=timedelta(minutes=1)), {"type": "Noop", "delay": timedelta(minutes=1)}],  # type: ignore[arg-type]
        conn=conn,
    )
    for job_id in ids:
        job = store.get_job(job_id)
        assert job is not None
        assert job.created_at + timedelta(seconds=55) < job.run_at < job.created_at + timedelta(seconds=65)


def test_dispatch_many_refuses_items_that_are_not_jobs_and_writes_nothing(conn: Conn) -> None:
    with pytest.raises(InvalidJobError, match=r"^job 1: must be a JobRequest or a mapping, got int$"):
        dispatch_many([JobRequest("Noop"), 5], conn=conn)  # type: ignore[list-item]
    assert count_states(conn) == {}


def test_dispatch_many_rejects_unknown_parents_atomically(conn: Conn) -> None:
    with pytest.raises(InvalidJobError, match="unknown parent"):
        dispatch_many([JobRequest("Noop"), JobRequest("Noop", depends_on=(999999,))], conn=conn)
    assert count_states(conn) == {}


def test_sql_function_dispatches_in_the_callers_transaction(database_url: str, conn: Conn) -> None:
    """What the PHP app does with PDO: call passito_jobs.dispatch in its own transaction."""
    with psycopg.connect(database_url) as php:
        php.execute("SELECT passito_jobs.dispatch('GenerateQrCode', '{\"outpass_id\": 9}'::jsonb)")
        php.rollback()
        row = php.execute(
            "SELECT passito_jobs.dispatch(job_type => 'GenerateQrCode', payload => %s::jsonb, "
            "queue => 'outpasses', priority => 2, unique_key => 'qr-9')",
            ('{"outpass_id": 9}',),
        ).fetchone()
        php.commit()
    assert row is not None
    stored = conn.execute(
        "SELECT type, payload, queue, priority, state::text FROM passito_jobs.jobs"
    ).fetchall()
    assert stored == [("GenerateQrCode", {"outpass_id": 9}, "outpasses", 2, "pending")]


def test_sql_function_rejects_bad_input_with_clear_errors(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.CheckViolation, match="payload must be a JSON object, got array"):
        conn.execute("SELECT passito_jobs.dispatch('Noop', '[1]'::jsonb)")
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="unknown parent job id"):
        conn.execute("SELECT passito_jobs.dispatch('Noop', depends_on => ARRAY[42]::bigint[])")


def test_dispatch_wakes_listeners_only_on_commit(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN passito_jobs")
        with psycopg.connect(database_url) as tx_conn:
            dispatch("Noop", queue="emails", conn=tx_conn)
            assert list(listener.notifies(timeout=0.2)) == []
            tx_conn.commit()
        got = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.payload for n in got] == ["emails"]


def test_the_three_ways_in_write_the_same_row(conn: Conn) -> None:
    """A plain job dispatched from Python is one INSERT (queries.sql, insert_job); from SQL it
    takes the dispatch function's fast path (migration 0013); a job with a unique_key takes the
    function's general path. The three rows differ only in id, key and times."""
    args = {"queue": "emails", "priority": 3, "max_attempts": 5, "tags": ["a"], "metadata": {"m": 1}}
    python = dispatch("Noop", {"n": 1}, concurrency_key="hostel", **args, conn=conn)
    row = conn.execute(
        "SELECT passito_jobs.dispatch(job_type => 'Noop', payload => '{\"n\": 1}', queue => 'emails',"
        " priority => 3, max_attempts => 5, concurrency_key => 'hostel', tags => ARRAY['a'],"
        " metadata => '{\"m\": 1}')"
    ).fetchone()
    assert row is not None
    general = dispatch("Noop", {"n": 1}, concurrency_key="hostel", unique_key="k", **args, conn=conn)
    skip = {"id", "unique_key", "created_at", "run_at"}
    rows = conn.execute(
        "SELECT to_jsonb(j) FROM passito_jobs.jobs j WHERE id = ANY(%s) ORDER BY id",
        ([python, row[0], general],),
    ).fetchall()
    python_row, sql_row, general_row = ({k: v for k, v in r[0].items() if k not in skip} for r in rows)
    assert python_row == sql_row == general_row
    assert (python_row["state"], python_row["depends_on"], python_row["waiting_on"]) == ("pending", [], 0)


def test_a_plain_dispatch_with_no_labels_stores_none(conn: Conn) -> None:
    """Empty tags and metadata are stored as NULL on every path, as the function stores them."""
    python = dispatch("Noop", tags=[], metadata={}, conn=conn)
    row = conn.execute("SELECT passito_jobs.dispatch('Noop', tags => '{}', metadata => '{}')").fetchone()
    assert row is not None
    stored = conn.execute(
        "SELECT tags, metadata FROM passito_jobs.jobs WHERE id = ANY(%s)", ([python, row[0]],)
    ).fetchall()
    assert stored == [(None, None), (None, None)]


def test_a_delayed_dispatch_wakes_no_one(database_url: str, conn: Conn) -> None:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN passito_jobs")
        dispatch("Noop", queue="later", delay=3600, conn=conn)
        dispatch("Noop", queue="now", conn=conn)
        got = list(listener.notifies(timeout=5, stop_after=1))
        got += list(listener.notifies(timeout=0.2))
    assert [n.payload for n in got] == ["now"]


def test_default_connection_follows_the_database_url(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    # Without PASSITO_DATABASE_URL it is the CLI's embedded PostgreSQL: test_default_database.py.
    from passito_jobs.queue import dispatch as module

    module._shared.close()
    monkeypatch.setenv("PASSITO_DATABASE_URL", database_url)
    try:
        assert dispatch("Noop") > 0
    finally:
        module._shared.close()
