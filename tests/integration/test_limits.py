"""One set of input limits: the same rule and the same message from Python and from SQL (the
PHP app's path), and rows already outside the limits that every reader still reads."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from psycopg.types.json import Jsonb

from passito_jobs import InvalidJobError, JobRequest, dispatch, dispatch_many
from passito_jobs.health.exporter import QueueCollector
from passito_jobs.queue import limits
from passito_jobs.queue.asyncstore import AsyncStore
from passito_jobs.queue.connection import connect_async
from passito_jobs.queue.maintenance import Maintenance, MaintenanceConfig
from passito_jobs.queue.models import FAR_FUTURE, UNREADABLE_JSON_KEY
from passito_jobs.queue.store import Store
from tests.helpers import count_states, run_cli, run_main

Conn = psycopg.Connection[Any]

SQL_DISPATCH = (
    "SELECT passito_jobs.dispatch(job_type => %(type)s, payload => %(payload)s, queue => %(queue)s, "
    "run_at => %(run_at)s, depends_on => %(depends_on)s::bigint[], max_attempts => %(max_attempts)s, "
    "unique_key => %(unique_key)s)"
)
DEFAULTS: dict[str, Any] = {
    "type": "Noop",
    "payload": {},
    "queue": "default",
    "run_at": None,
    "depends_on": [],
    "max_attempts": 3,
    "unique_key": None,
}


def deep(levels: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(levels - 1):
        value = [value]
    return {"a": value}


def python_refusal(conn: Conn, **job: Any) -> str:
    args = {**DEFAULTS, **job}
    with pytest.raises(InvalidJobError) as caught:
        dispatch(
            args.pop("type"),
            args.pop("payload"),
            conn=conn,
            **args,
        )
    return str(caught.value)


def sql_refusal(conn: Conn, **job: Any) -> str:
    """What `SELECT passito_jobs.dispatch(...)` says, as PHP's PDO would see it."""
    args = {**DEFAULTS, **job}
    args["payload"] = Jsonb(args["payload"])
    with pytest.raises(psycopg.errors.CheckViolation) as caught:
        conn.execute(SQL_DISPATCH, args)
    assert caught.value.sqlstate == "23514"
    return str(caught.value.diag.message_primary)


RULES = {
    "blank type": {"type": " \t\u3000"},
    "long type": {"type": "t" * 129},
    "type with a newline": {"type": "Send\nEmail"},
    "empty queue": {"queue": ""},
    "long queue (8,001 bytes)": {"queue": "q" * 8001},
    "queue with an escape sequence": {"queue": "emails\x1b[2J"},
    "payload not an object": {"payload": [1, 2]},
    "payload over 1 MiB": {"payload": {"x": "y" * (1024 * 1024)}},
    "payload nested 101 levels": {"payload": deep(101)},
    "run_at before 1970": {"run_at": datetime(1969, 7, 20, 20, 17, tzinfo=UTC)},
    "no attempts": {"max_attempts": 0},
    "too many attempts": {"max_attempts": 1001},
    "a NULL parent": {"depends_on": [None]},
    "parent id 0": {"depends_on": [0]},
    "empty unique key": {"unique_key": ""},
    "unique key over 512 characters (3,000 bytes)": {"unique_key": "€" * 1000},
}


@pytest.mark.parametrize("job", RULES.values(), ids=RULES.keys())
def test_python_and_sql_refuse_with_the_same_message(conn: Conn, job: dict[str, Any]) -> None:
    from_python = python_refusal(conn, **job)
    assert from_python == sql_refusal(conn, **job)
    assert count_states(conn) == {}


def test_values_at_the_limits_are_accepted_both_ways(conn: Conn) -> None:
    at_limits = {
        "type": "T" * 128,
        "queue": "😀" * 128,
        "payload": {"x": "y" * (1024 * 1024 - 9), **{}},
        "max_attempts": 1000,
        "unique_key": "😀" * 512,  # 2,048 bytes: still fits the unique index
        "run_at": datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
    }
    assert len(json.dumps(at_limits["payload"]).encode()) == limits.DEFAULT_MAX_PAYLOAD_BYTES
    first = dispatch(at_limits["type"], at_limits["payload"], conn=conn, **_options(at_limits))
    from_sql = conn.execute(
        SQL_DISPATCH,
        {**DEFAULTS, **at_limits, "payload": Jsonb(at_limits["payload"]), "unique_key": "other"},
    ).fetchone()
    assert from_sql is not None
    deep_ok = dispatch("Noop", deep(100), conn=conn)
    assert len({first, from_sql[0], deep_ok}) == 3


def _options(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in {"type", "payload"}}


def test_payload_limit_is_a_setting_on_both_sides(
    conn: Conn, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = {"x": "y" * 2000}  # 2,009 bytes of JSON text
    monkeypatch.setenv("PASSITO_MAX_PAYLOAD_BYTES", "2000")
    assert (
        python_refusal(conn, payload=payload) == "payload must be at most 2000 bytes of JSON text, got 2009"
    )
    monkeypatch.setenv("PASSITO_MAX_PAYLOAD_BYTES", "4096")
    assert dispatch("Noop", payload, conn=conn) > 0

    # The database's own limit: set by an administrator for the PHP app's sessions.
    dbname = conn.info.dbname
    conn.execute(f"ALTER DATABASE {dbname} SET passito_jobs.max_payload_bytes = '2000'")
    with psycopg.connect(database_url, autocommit=True) as php:
        assert (
            sql_refusal(php, payload=payload) == "payload must be at most 2000 bytes of JSON text, got 2009"
        )
        php.execute("SET passito_jobs.max_payload_bytes = 'lots'")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="must be a whole number"):
            php.execute(SQL_DISPATCH, {**DEFAULTS, "payload": Jsonb({})})


def test_a_300_mb_payload_is_refused_before_it_reaches_the_database(conn: Conn) -> None:
    message = python_refusal(conn, payload={"blob": "x" * 300_000_000})
    assert message == "payload must be at most 1048576 bytes of JSON text, got 300000012"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"r": float("nan")}, "payload must not hold NaN or Infinity"),
        ({"r": float("inf")}, "payload must not hold NaN or Infinity"),
        ({"r": "bad\x00byte"}, "payload must not hold the NUL character"),
        ({"r": "\ud800"}, "payload must be valid Unicode text"),
        (deep(30_000), "payload must not be nested more than 100 levels deep"),
        ({"when": datetime(2025, 1, 1, tzinfo=UTC)}, "payload must hold only JSON values"),
    ],
)
def test_payloads_the_database_cannot_store_are_refused_in_python(
    conn: Conn, payload: dict[str, Any], message: str
) -> None:
    assert python_refusal(conn, payload=payload).startswith(message)
    with pytest.raises(InvalidJobError, match=f"job 1: {message}"):
        dispatch_many([JobRequest("Noop"), JobRequest("Noop", payload)], conn=conn)
    assert count_states(conn) == {}


def test_ids_and_delays_beyond_postgresql(conn: Conn) -> None:
    assert python_refusal(conn, depends_on=[2**63]) == (
        "depends_on must hold job ids (positive integers), got 9223372036854775808"
    )
    with pytest.raises(InvalidJobError, match="delay must not reach past 9999-12-31"):
        dispatch("Noop", delay=300_000_000_000, conn=conn)
    with pytest.raises(InvalidJobError, match="priority must be a whole number from"):
        dispatch("Noop", priority=2**31, conn=conn)


def test_sql_refuses_what_only_sql_can_be_given(conn: Conn) -> None:
    for run_at, shown in [("infinity", "infinity"), ("20000-01-01 00:00:00+00", "20000-01-01 00:00:00 UTC")]:
        with pytest.raises(psycopg.errors.CheckViolation) as caught:
            conn.execute("SELECT passito_jobs.dispatch('Noop', run_at => %s::timestamptz)", (run_at,))
        assert caught.value.diag.message_primary == (
            f"run_at must be between 1970-01-01 and 9999-12-31 (UTC), got {shown}"
        )
    with pytest.raises(psycopg.errors.CheckViolation, match="max_attempts must be a whole number, got null"):
        conn.execute("SELECT passito_jobs.dispatch('Noop', max_attempts => NULL)")
    with pytest.raises(psycopg.errors.CheckViolation, match="job type must be a non-empty string"):
        conn.execute("SELECT passito_jobs.dispatch(NULL)")


@pytest.mark.parametrize("batch", [None, 0, -1, 10_001])
def test_claim_batch_is_bounded(conn: Conn, batch: int | None) -> None:
    dispatch("Noop", conn=conn)
    with pytest.raises(psycopg.errors.CheckViolation, match="batch must be between 1 and 10000, got"):
        conn.execute("SELECT * FROM passito_jobs.claim('w', NULL, %s)", (batch,))
    assert count_states(conn) == {"pending": 1}
    assert len(conn.execute("SELECT * FROM passito_jobs.claim('w', NULL, 10000)").fetchall()) == 1


# Text PostgreSQL can store: no NUL, no surrogates.
storable_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))
json_without_floats = st.recursive(
    st.none() | st.booleans() | st.integers() | storable_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(storable_text, children, max_size=3),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(storable_text, json_without_floats, max_size=4))
def test_python_and_sql_measure_a_payload_alike(conn: Conn, payload: dict[str, Any]) -> None:
    """Size in bytes of JSON text and nesting depth: Python's measure is SQL's (floats aside,
    which each side may spell differently)."""
    text = limits.encode_payload(payload)
    depth = limits.nesting_depth(payload)
    row = conn.execute(
        "SELECT octet_length(%(p)s::jsonb::text), jsonb_path_exists(%(p)s::jsonb, %(at)s::jsonpath),"
        " jsonb_path_exists(%(p)s::jsonb, %(below)s::jsonpath)",
        {"p": text, "at": f"strict $.**{{{depth}}}", "below": f"strict $.**{{{depth + 1}}}"},
    ).fetchone()
    assert row == (len(text.encode()), True, False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(), max_size=6))
def test_python_and_sql_measure_numbers_alike(conn: Conn, numbers: list[float | int]) -> None:
    """jsonb writes a number without an exponent (Python's 1e+308 is 309 digits there) and a
    zero without its sign: the size Python checks is the database's, so a payload of exponents
    cannot pass Python's limit 50 times over."""
    payload = {"n": numbers}
    text = limits.encode_payload(payload)
    stored = conn.execute("SELECT octet_length(%s::jsonb::text)", (text,)).fetchone()
    assert stored is not None
    limits.encode_json(payload, what="payload", max_bytes=stored[0])
    with pytest.raises(limits.UnstorableValueError, match=f"got {stored[0]}$"):
        limits.encode_json(payload, what="payload", max_bytes=stored[0] - 1)


def test_a_payload_of_exponents_is_held_to_the_databases_size(conn: Conn) -> None:
    with pytest.raises(InvalidJobError, match="payload must be at most 1048576 bytes of JSON text, got 6220"):
        dispatch("Noop", {"a": [1e308] * 20_000}, conn=conn)
    assert count_states(conn) == {}


# ---------------------------------------------------------------- rows outside the limits


def insert_legacy_rows(conn: Conn) -> dict[str, int]:
    """Rows a database can hold from before migration 0002, or from hand-written SQL."""
    rows = {
        "long queue": "INSERT INTO passito_jobs.jobs (queue, type) VALUES (repeat('q', 9000), 'Noop')",
        "long type": "INSERT INTO passito_jobs.jobs (type) VALUES (repeat('T', 5000))",
        "control characters": (
            "INSERT INTO passito_jobs.jobs (queue, type) VALUES (E'evil\\n\\u001b[31mqueue', E'Bad\\rType')"
        ),
        "infinite run_at": "INSERT INTO passito_jobs.jobs (type, run_at) VALUES ('Noop', 'infinity')",
        "year 20000": "INSERT INTO passito_jobs.jobs (type, run_at) VALUES ('Noop', '20000-01-01')",
        "minus infinity": "INSERT INTO passito_jobs.jobs (type, run_at) VALUES ('Noop', '-infinity')",
        "5 MB payload": (
            "INSERT INTO passito_jobs.jobs (type, payload, run_at) "
            "VALUES ('Noop', jsonb_build_object('blob', repeat('x', 5000000)), now() + interval '1 day')"
        ),
        "2,000 levels deep": (
            "INSERT INTO passito_jobs.jobs (type, payload) "
            "VALUES ('Noop', ('{\"a\": ' || repeat('[', 2000) || repeat(']', 2000) || '}')::jsonb)"
        ),
        "a million attempts": "INSERT INTO passito_jobs.jobs (type, max_attempts) VALUES ('Noop', 1000000)",
        # Not only legacy: passito_jobs.dispatch takes any number jsonb holds, and jsonb writes
        # 1e5000 out as 5,001 digits, past the 4,300 Python converts.
        "a 5,001-digit number": (
            "INSERT INTO passito_jobs.jobs (type, payload) VALUES ('Noop', '{\"x\": 1e5000, \"y\": 1}')"
        ),
    }
    return {name: conn.execute(f"{sql} RETURNING id").fetchone()[0] for name, sql in rows.items()}  # type: ignore[index]


def test_rows_outside_the_limits_are_read_by_the_cli_and_health(
    conn: Conn, cli_env: dict[str, str], cli_in_process: dict[str, str]
) -> None:
    ids = insert_legacy_rows(conn)
    conn.execute(  # stale, so health names its queue
        "UPDATE passito_jobs.jobs SET run_at = now() - interval '1 hour' WHERE id = %s",
        (ids["control characters"],),
    )
    listed = run_cli(["jobs", "list"], cli_env)
    assert (listed.returncode, listed.stderr) == (0, "")
    assert len(listed.stdout.splitlines()) == 1 + len(ids)
    assert "evil\\n\\x1b[31mqueue" in listed.stdout  # escaped, one line per job
    assert max(len(line) for line in listed.stdout.splitlines()) < 400
    assert "infinity" in listed.stdout
    as_json = run_cli(["jobs", "list", "--json"], cli_env)
    assert as_json.returncode == 0, as_json.stderr
    jobs = {job["id"]: job for job in json.loads(as_json.stdout)}
    assert jobs[ids["infinite run_at"]]["run_at"] == "infinity"
    assert jobs[ids["year 20000"]]["run_at"] == "infinity"
    assert jobs[ids["minus infinity"]]["run_at"] == "-infinity"
    assert UNREADABLE_JSON_KEY in jobs[ids["2,000 levels deep"]]["payload"]
    assert "integer string conversion" in jobs[ids["a 5,001-digit number"]]["payload"][UNREADABLE_JSON_KEY]
    for job_id in ids.values():
        code, out, err = run_main(["jobs", "show", str(job_id)])
        assert (code, err) == (0, ""), job_id
        assert all(line.isprintable() for line in out.splitlines())
        code, out, err = run_main(["jobs", "show", str(job_id), "--json"])
        assert json.loads(out)["id"] == job_id

    for args in (["health"], ["health", "--json"]):
        checked = run_cli(args, cli_env)
        assert checked.returncode == 0, checked.stderr
        assert "Traceback" not in checked.stderr
    report = json.loads(run_cli(["health", "--json"], cli_env).stdout, parse_constant=_no_constants)
    assert report["totals"]["stale"] >= 1
    assert report["totals"]["oldest_ready_age"] < 100 * 365 * 86400  # measured from 1970 at most
    text = run_cli(["health"], cli_env).stdout
    assert "evil\\n\\x1b[31mqueue" in text
    assert "\x1b" not in text


def _no_constants(name: str) -> None:
    raise AssertionError(f"health --json printed {name}, which is not JSON")


def test_rows_outside_the_limits_are_read_by_the_exporter(conn: Conn, database_url: str) -> None:
    insert_legacy_rows(conn)
    collector = QueueCollector(
        database_url, stale_after=60, stuck_after=60, window=3600, query_timeout=5, connect_timeout=5
    )
    registry = CollectorRegistry()
    registry.register(collector)
    try:
        metrics = generate_latest(registry).decode()
    finally:
        collector.close()
    assert "passito_jobs_database_up 1.0" in metrics
    assert 'queue="evil\\n\x1b[31mqueue"' in metrics  # the exposition format escapes the newline
    assert "+Inf" not in metrics.split("passito_jobs_queue_oldest_ready_age_seconds")[-1].split("#")[0]


def test_rows_outside_the_limits_are_claimed_and_rescued_by_workers(conn: Conn, database_url: str) -> None:
    ids = insert_legacy_rows(conn)
    conn.execute(
        "UPDATE passito_jobs.jobs SET run_at = now() + interval '1 hour' WHERE id = %s",
        (ids["5 MB payload"],),
    )

    async def work() -> tuple[Any, list[Any]]:
        async with await connect_async(database_url) as aconn:
            store = AsyncStore(aconn, "w1")
            due = await store.next_run_at(None)
            claimed = await store.settle_and_claim([], [], None, 100)
            await store.settle_and_claim([(job.id, job.attempt, "null") for job in claimed], [], None, 0)
            later = await store.next_run_at(None)
            return (due, later), claimed

    (due, later), claimed = asyncio.run(work())
    assert due is not None
    assert later is not None
    assert later < FAR_FUTURE.timestamp()  # the 5 MB payload job, an hour from now (epoch seconds)
    by_id = {job.id: job for job in claimed}
    unreadable = by_id[ids["2,000 levels deep"]].unreadable  # the worker fails that job with this
    assert unreadable is not None
    assert "nested too deeply" in unreadable
    huge = by_id[ids["a 5,001-digit number"]].unreadable
    assert huge is not None
    assert "integer string conversion" in huge
    assert {ids["long queue"], ids["control characters"], ids["minus infinity"]} <= set(by_id)
    assert ids["infinite run_at"] not in by_id

    # A stuck job in a queue whose name is too long for NOTIFY: rescue still works, and wakes.
    stuck = conn.execute(
        "INSERT INTO passito_jobs.jobs (queue, type, state, attempts, worker_id, heartbeat_at) "
        "VALUES (repeat('z', 9000), 'Noop', 'processing', 1, 'gone', now() - interval '1 hour') RETURNING id"
    ).fetchone()
    assert stuck is not None
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN passito_jobs")
        result = Maintenance(Store(conn), "m", MaintenanceConfig(stuck_after=60)).rescue()
        got = list(listener.notifies(timeout=5, stop_after=1))
    assert result.rescued == [stuck[0]]
    assert [n.payload for n in got] == [""]


def test_rows_with_far_dates_do_not_stop_a_worker(conn: Conn, cli_env: dict[str, str], tmp_path: Any) -> None:
    from tests.helpers import WorkerProcess, wait_for

    conn.execute("INSERT INTO passito_jobs.jobs (type, run_at) VALUES ('Noop', 'infinity')")
    conn.execute("INSERT INTO passito_jobs.jobs (type, run_at) VALUES ('Noop', '20000-01-01')")
    worker = WorkerProcess({**cli_env, "PASSITO_POLL_INTERVAL": "0.2"}, tmp_path / "w.log")
    try:
        job_id = dispatch("Noop", conn=conn)
        wait_for(
            lambda: conn.execute(
                "SELECT state = 'completed' FROM passito_jobs.jobs WHERE id = %s", (job_id,)
            ).fetchone()[0],  # type: ignore[index]
            timeout=60,
            message="the normal job completed",
        )
        later = dispatch("Noop", conn=conn)
        wait_for(
            lambda: conn.execute(
                "SELECT state = 'completed' FROM passito_jobs.jobs WHERE id = %s", (later,)
            ).fetchone()[0],  # type: ignore[index]
            timeout=60,
            message="a job dispatched after some idle polls completed",
        )
        assert worker.proc.poll() is None, worker.log()
    finally:
        assert worker.stop() == 0, worker.log()


def test_a_refused_payload_leaves_the_callers_transaction_usable(database_url: str, conn: Conn) -> None:
    """In the caller's transaction every payload is checked before anything is written."""
    with psycopg.connect(database_url) as caller:
        caller.execute("SELECT 1")  # a transaction is open
        bad = [JobRequest("Noop"), JobRequest("Noop"), JobRequest("Noop", {"x": float("nan")})]
        with pytest.raises(InvalidJobError, match="job 2: payload must not hold NaN"):
            dispatch_many(bad, conn=caller)
        assert len(dispatch_many([JobRequest("Noop")], conn=caller)) == 1
        caller.commit()
    assert count_states(conn) == {"pending": 1}
