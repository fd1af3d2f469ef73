"""Tags and metadata: dispatched from Python, the CLI and SQL (the PHP app's path), found by tag
through an index, shown by `jobs show`, and refused with the same message everywhere when they
break a limit."""

from __future__ import annotations

import json
import re
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from passito_jobs import InvalidJobError, JobRequest, dispatch, dispatch_many
from passito_jobs.queue.store import Store
from tests.helpers import run_main

Conn = psycopg.Connection[Any]

SQL_DISPATCH = (
    "SELECT passito_jobs.dispatch(job_type => 'Noop', tags => %(tags)s::text[], metadata => %(metadata)s)"
)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def stored(conn: Conn, job_id: int) -> tuple[Any, Any]:
    row = conn.execute("SELECT tags, metadata FROM passito_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_tags_and_metadata_from_python_sql_and_the_cli(conn: Conn, cli_in_process: dict[str, str]) -> None:
    by_python = dispatch(
        "Noop", tags=["outpass:4711", "hostel:ganga"], metadata={"requested_by": "warden"}, conn=conn
    )
    by_sql = conn.execute(
        SQL_DISPATCH, {"tags": ["outpass:4711"], "metadata": Jsonb({"traceparent": TRACEPARENT})}
    ).fetchone()
    assert by_sql is not None
    code, out, err = run_main(
        [
            "dispatch",
            "Noop",
            "--tag",
            "outpass:4711",
            "--tag",
            "hostel:yamuna",
            "--metadata",
            '{"via": "cli"}',
        ]
    )
    assert code == 0, err
    by_cli = int(out)
    conn.commit()
    assert stored(conn, by_python) == (["outpass:4711", "hostel:ganga"], {"requested_by": "warden"})
    assert stored(conn, by_sql[0]) == (["outpass:4711"], {"traceparent": TRACEPARENT})
    assert stored(conn, by_cli) == (["outpass:4711", "hostel:yamuna"], {"via": "cli"})
    # An untagged job stores nothing: no index entry, no metadata.
    assert stored(conn, dispatch("Noop", conn=conn)) == (None, None)

    code, out, _ = run_main(["jobs", "list", "--tag", "outpass:4711", "--json"])
    assert code == 0
    assert [job["id"] for job in json.loads(out)] == [by_cli, by_sql[0], by_python]
    code, out, _ = run_main(["jobs", "list", "--tag", "hostel:ganga"])
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[1:]] == [str(by_python)]
    code, out, _ = run_main(["jobs", "list", "--tag", "hostel:nowhere"])
    assert (code, out.strip()) == (0, "no jobs match")

    code, out, _ = run_main(["jobs", "show", str(by_python)])
    assert code == 0
    # The column is as wide as the longest field name `jobs show` prints (it grows with the schema).
    assert re.search(r"^tags +outpass:4711, hostel:ganga$", out, re.M)
    assert re.search(r'^metadata +\{"requested_by": "warden"\}$', out, re.M)


def test_dispatch_many_copies_tags_and_metadata(conn: Conn) -> None:
    ids = dispatch_many(
        [
            JobRequest("Noop", tags=("batch:1",)),
            {"type": "Noop", "metadata": {"n": 2}},
            JobRequest("Noop"),
            JobRequest("Noop", tags=("batch:1",), unique_key="k"),  # through the SQL function
        ],
        conn=conn,
    )
    assert [stored(conn, i) for i in ids] == [
        (["batch:1"], None),
        (None, {"n": 2}),
        (None, None),
        (["batch:1"], None),
    ]
    # A batch without tags or metadata takes the plain COPY.
    plain = dispatch_many([JobRequest("Noop"), JobRequest("Noop")], conn=conn)
    assert [stored(conn, i) for i in plain] == [(None, None), (None, None)]
    assert [job.id for job in Store(conn).list_jobs(tag="batch:1")] == [ids[3], ids[0]]


def deep(levels: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(levels - 1):
        value = [value]
    return {"a": value}


# Each rule, and the message both Python and SQL give for it.
RULES: dict[str, tuple[dict[str, Any], str]] = {
    "too many tags": ({"tags": [f"t{i}" for i in range(21)]}, "tags must be at most 20, got 21"),
    "a long tag": ({"tags": ["ok", "t" * 101]}, "tags[1] must be at most 100 characters, got 101"),
    "a blank tag": ({"tags": [" \t"]}, "tags[0] must be a non-empty string"),
    "an empty tag": ({"tags": ["a", ""]}, "tags[1] must be a non-empty string"),
    "a tag with a newline": ({"tags": ["a\nb"]}, "tags[0] must not contain control characters"),
    "metadata not an object": ({"metadata": [1]}, "metadata must be a JSON object, got array"),
    "metadata too large": (
        {"metadata": {"x": "y" * 16_400}},
        "metadata must be at most 16384 bytes of JSON text, got 16409",
    ),
    "metadata nested too deeply": (
        {"metadata": deep(101)},
        "metadata must not be nested more than 100 levels deep",
    ),
    "a bad traceparent": (
        {"metadata": {"traceparent": "00-xyz"}},
        "metadata traceparent must be a W3C traceparent (00-<32 hex digits>-<16 hex digits>-<2 hex digits>)",
    ),
    "a traceparent not text": (
        {"metadata": {"traceparent": 7}},
        "metadata traceparent must be a W3C traceparent (00-<32 hex digits>-<16 hex digits>-<2 hex digits>)",
    ),
    "a long tracestate": (
        {"metadata": {"traceparent": TRACEPARENT, "tracestate": "k=" + "v" * 600}},
        "metadata tracestate must be a string of at most 512 characters",
    ),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_python_and_sql_refuse_with_the_same_message(conn: Conn, rule: str) -> None:
    job, message = RULES[rule]
    with pytest.raises(InvalidJobError) as caught:
        dispatch("Noop", conn=conn, **job)
    assert str(caught.value) == message
    with pytest.raises(InvalidJobError) as caught_many:
        dispatch_many([{"type": "Noop", **job}], conn=conn)
    assert str(caught_many.value) == f"job 0: {message}"
    metadata = job.get("metadata")
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        conn.execute(
            SQL_DISPATCH, {"tags": job.get("tags"), "metadata": None if metadata is None else Jsonb(metadata)}
        )
    assert refused.value.diag.message_primary == message
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM passito_jobs.jobs").fetchone() == (0,)


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"tags": "outpass:4711"}, "tags must be a list of strings, got string"),
        ({"tags": {"a": 1}}, "tags must be a list of strings, got object"),
        ({"tags": 7}, "tags must be a list of strings, got number"),
        ({"tags": (f"t{i}" for i in range(10**12))}, "tags must be at most 20, got 21"),
        ({"tags": [7]}, "tags[0] must be a non-empty string"),
        ({"tags": ["a\x00b"]}, "tags[0] must not contain control characters"),
        ({"tags": ["\ud800"]}, "tags[0] must be valid Unicode text (it holds an unpaired surrogate)"),
        ({"metadata": {"n": float("nan")}}, "metadata must not hold NaN or Infinity"),
        ({"metadata": {"s": "a\x00"}}, "metadata must not hold the NUL character"),
        ({"metadata": {"\udc80": 1}}, "metadata must be valid Unicode text"),
        ({"metadata": {"when": object()}}, "metadata must hold only JSON values"),
        ({"metadata": "x"}, "metadata must be a JSON object, got string"),
    ],
)
def test_python_refuses_what_sql_cannot_even_receive(conn: Conn, job: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidJobError, match=None) as caught:
        dispatch("Noop", conn=conn, **job)
    assert str(caught.value).startswith(message)
    assert conn.execute("SELECT count(*) FROM passito_jobs.jobs").fetchone() == (0,)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([f"--tag=t{i}" for i in range(21)], "argument --tag: tags must be at most 20, got 21"),
        (["--tag", "x" * 101], "argument --tag: tags[0] must be at most 100 characters, got 101"),
        (["--tag", ""], "argument --tag: tags[0] must be a non-empty string"),
        (["--metadata", "[1]"], "argument --metadata: must be a JSON object"),
        (["--metadata", '{"n": NaN}'], "argument --metadata: metadata must not hold NaN or Infinity"),
        (["--metadata", '{"s": "\\u0000"}'], "argument --metadata: metadata must not hold the NUL character"),
        (["--metadata", '{"s": "\\ud800"}'], "argument --metadata: metadata must be valid Unicode text"),
        (
            ["--metadata", "[" * 5000 + "]" * 5000],
            "argument --metadata: metadata must not be nested more than 100",
        ),
        (
            ["--metadata", '{"a":' * 2000 + "1" + "}" * 2000],
            "argument --metadata: metadata must not be nested more than 100 levels deep",
        ),
        (
            ["--metadata", '{"x": "' + "y" * 17_000 + '"}'],
            "argument --metadata: metadata must be at most 16384",
        ),
    ],
)
def test_cli_refuses_bad_tags_and_metadata_in_one_line(
    conn: Conn, cli_in_process: dict[str, str], args: list[str], message: str
) -> None:
    code, _out, err = run_main(["dispatch", "Noop", *args])
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) <= 3, err  # argparse's usage line(s), then the one error line
    assert message in lines[-1], err
    assert "Traceback" not in err
    assert conn.execute("SELECT count(*) FROM passito_jobs.jobs").fetchone() == (0,)


def test_the_tag_search_reads_its_index(conn: Conn) -> None:
    """On a table of many untagged jobs and a few tagged ones, `jobs list --tag` for a rare tag
    reads the GIN index (the planner alone would walk the whole primary key for it), and a
    common tag is listed along the newest jobs."""
    conn.execute(
        "INSERT INTO passito_jobs.jobs (type, state, finished_at, tags) "
        "SELECT 'Noop', 'completed', now(), ARRAY['hostel:' || mod(g, 2)] FROM generate_series(1, 30000) g"
    )
    dispatch_many([JobRequest("Noop", tags=(f"outpass:{i}", "hostel:ganga")) for i in range(200)], conn=conn)
    conn.execute("ANALYZE passito_jobs.jobs")
    from passito_jobs.queue.sqlfiles import query

    params = {"state": None, "type": None, "queue": None, "tag": "outpass:42", "limit": 50}
    plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + query("list_tagged_jobs"), params))
    assert "jobs_tags_idx" in plan, plan
    store = Store(conn)
    assert [job.tags for job in store.list_jobs(tag="outpass:42")] == [["outpass:42", "hostel:ganga"]]
    assert [job.tags for job in store.list_jobs(tag="outpass:42", state="completed")] == []
    common = store.list_jobs(tag="hostel:1", limit=3)
    assert [job.id for job in common] == [29999, 29997, 29995]
    assert len(store.list_jobs(tag="hostel:ganga", limit=500)) == 200


def test_one_dispatch_and_one_claim_function_and_old_callers_keep_working(conn: Conn) -> None:
    """The new arguments came at the end with defaults, the old signatures were dropped: a PHP
    caller that passes the first arguments by position still dispatches."""
    signatures = conn.execute(
        "SELECT proname, pg_get_function_identity_arguments(oid) FROM pg_proc "
        "WHERE pronamespace = 'passito_jobs'::regnamespace AND proname IN ('dispatch', 'claim') ORDER BY 1"
    ).fetchall()
    assert [name for name, _ in signatures] == ["claim", "dispatch"]
    assert signatures[1][1].endswith(
        "unique_key text, concurrency_key text, tags text[], metadata jsonb, "
        "unique_for interval, unique_mode text, depends_on_mode text"  # 0010's, after them
    )
    row = conn.execute(
        "SELECT passito_jobs.dispatch('Noop', '{}'::jsonb, 'default', 0, NULL, '{}'::bigint[], 3, NULL)"
    ).fetchone()
    assert row is not None
    assert stored(conn, row[0]) == (None, None)
