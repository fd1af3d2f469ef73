"""`passito-jobs queues list | pause | resume | set` and `dispatch --concurrency-key`, against a
real database: what an operator sees, and one line with exit code 2 for every bad value."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from passito_jobs import JobRequest, dispatch_many
from tests.helpers import run_main

Conn = psycopg.Connection[Any]


def one_line_exit_2(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("passito-jobs"), err
    return lines[0]


def test_an_operator_pauses_limits_lists_and_resumes_a_queue(
    conn: Conn, cli_in_process: dict[str, str]
) -> None:
    dispatch_many([JobRequest("Noop", queue="emails") for _ in range(4)], conn=conn)
    conn.commit()
    code, out, err = run_main(["queues", "pause", "emails"])
    assert (code, out) == (0, "paused queue emails: no job of it is claimed until `queues resume`\n")
    assert "had no settings yet; it was created" in err
    code, out, _ = run_main(
        ["queues", "set", "emails", "--concurrency", "3", "--rate", "600/1m", "--key-concurrency", "2"]
    )
    assert (code, out) == (0, "queue emails: paused, concurrency 3, rate 600/1m, key concurrency 2\n")
    code, out, _ = run_main(["queues", "list"])
    assert code == 0
    header, row = out.splitlines()
    assert header.split() == [
        "QUEUE", "STATE", "CONCURRENCY", "RATE", "KEY", "CONCURRENCY", "PROCESSING", "READY", "HELD", "BACK"
    ]  # fmt: skip
    assert row.split() == ["emails", "paused", "3", "600/1m", "2", "0", "4", "4"]
    code, out, err = run_main(["queues", "resume", "emails"])
    assert (code, out, err) == (0, "resumed queue emails\n", "")
    code, out, _ = run_main(["queues", "set", "emails", "--rate", "none", "--concurrency", "none"])
    assert out == "queue emails: active, concurrency -, rate none, key concurrency 2\n"
    code, out, _ = run_main(["queues", "list", "--json"])
    assert json.loads(out) == [
        {
            "queue": "emails",
            "paused": False,
            "concurrency": None,
            "rate": None,
            "key_concurrency": 2,
            "processing": 0,
            "ready": 4,
            "held_back": 0,
        }
    ]


def test_dispatch_takes_a_concurrency_key(conn: Conn, cli_in_process: dict[str, str]) -> None:
    code, out, _ = run_main(["dispatch", "Noop", "--concurrency-key", "hostel:ganga"])
    assert code == 0
    row = conn.execute("SELECT concurrency_key FROM passito_jobs.jobs WHERE id = %s", (int(out),)).fetchone()
    assert row == ("hostel:ganga",)
    code, _, err = run_main(["dispatch", "Noop", "--concurrency-key", "k" * 129])
    assert one_line_exit_2(code, err).endswith(
        "argument --concurrency-key: concurrency_key must be at most 128 characters, got 129"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "0/1s"], "argument --rate: rate must allow at least 1 job per period, got 0"),
        (["--rate", "10/0s"], "argument --rate: rate period must be from 1ms to 7d"),
        (["--rate", "x/1m"], "argument --rate: rate must look like 50/1s or 600/1m (N/PERIOD), got 'x/1m'"),
        (["--rate", "-1"], "argument --rate: rate must look like 50/1s or 600/1m (N/PERIOD), got '-1'"),
        (["--rate", "NaN"], "argument --rate: rate must look like 50/1s or 600/1m (N/PERIOD), got 'NaN'"),
        (["--rate", "10/1fortnight"], "argument --rate: rate must look like 50/1s or 600/1m"),
        (["--rate", "1/8d"], "argument --rate: rate period must be from 1ms to 7d"),
        (["--rate", "9" * 400 + "/1s"], "argument --rate: rate must look like 50/1s or 600/1m"),
        (
            ["--rate", "a\x00b"],
            "argument --rate: rate must look like 50/1s or 600/1m (N/PERIOD), got 'a\\x00b'",
        ),
        (["--concurrency", "0"], "argument --concurrency: concurrency must be at least 1, got 0"),
        (["--concurrency", "-1"], "argument --concurrency: concurrency must be at least 1, got -1"),
        (["--concurrency", "NaN"], "argument --concurrency: 'NaN' is not a whole number or `none`"),
        (["--concurrency", "1.5"], "argument --concurrency: '1.5' is not a whole number or `none`"),
        (["--concurrency", "9" * 5000], "is not a whole number or `none`"),
        (
            ["--concurrency", "1000001"],
            "argument --concurrency: concurrency must be at most 1000000, got 1000001",
        ),
        (["--key-concurrency", "0"], "argument --key-concurrency: key concurrency must be at least 1, got 0"),
        ([], "give at least one of --concurrency, --rate, --key-concurrency"),
    ],
)
def test_bad_limits_are_one_line_and_exit_2(
    conn: Conn, cli_in_process: dict[str, str], args: list[str], message: str
) -> None:
    code, out, err = run_main(["queues", "set", "emails", *args])
    assert message in one_line_exit_2(code, err)
    assert out == ""
    assert conn.execute("SELECT count(*) FROM passito_jobs.queues").fetchone() == (0,)


@pytest.mark.parametrize(
    ("queue", "message"),
    [
        ("q" * 100_000, "argument QUEUE: queue must be at most 128 characters, got 100000"),
        ("", "argument QUEUE: queue must be a non-empty string"),
        ("a\x07b", "argument QUEUE: queue must not contain control characters"),
        ("\udcff", "argument QUEUE: '\\udcff' is not valid UTF-8 text"),  # the argument's bytes
    ],
)
@pytest.mark.parametrize("action", ["pause", "resume", "set"])
def test_bad_queue_names_are_one_line_and_exit_2(
    conn: Conn, cli_in_process: dict[str, str], action: str, queue: str, message: str
) -> None:
    extra = ["--concurrency", "2"] if action == "set" else []
    code, _, err = run_main(["queues", action, queue, *extra])
    assert message in one_line_exit_2(code, err)
    assert conn.execute("SELECT count(*) FROM passito_jobs.queues").fetchone() == (0,)


def test_listing_no_queues_says_so(cli_in_process: dict[str, str]) -> None:
    assert run_main(["queues", "list"]) == (
        0,
        "no queues yet (a queue appears with its first job or setting)\n",
        "",
    )


def test_migrate_applies_queue_settings_and_leaves_the_rest_as_it_is(
    conn: Conn, cli_in_process: dict[str, str]
) -> None:
    """What the chart's migration Job runs with the `queues:` values (docs/kubernetes.md)."""
    assert run_main(["queues", "set", "reports", "--concurrency", "7"])[0] == 0
    assert run_main(["queues", "set", "emails", "--key-concurrency", "3"])[0] == 0
    settings = {
        "emails": {"paused": True, "concurrency": 4, "rate": "50/1s"},
        "pdfs": {"paused": False, "concurrency": None, "rate": "none", "key_concurrency": 2},
    }
    code, out, err = run_main(["migrate", "--queue-settings", json.dumps(settings)])
    assert (code, err) == (0, ""), err
    assert out.splitlines()[-2:] == [
        "queue emails: paused, concurrency 4, rate 50/1s, key concurrency 3",
        "queue pdfs: active, concurrency -, rate none, key concurrency 2",
    ]
    code, out, _ = run_main(["queues", "list", "--json"])
    shown = {
        q["queue"]: (q["paused"], q["concurrency"], q["rate"], q["key_concurrency"]) for q in json.loads(out)
    }
    # reports is not in the settings, and emails' key concurrency was not given: both left as they were.
    assert shown == {
        "emails": (True, 4, "50/1s", 3),
        "pdfs": (False, None, None, 2),
        "reports": (False, 7, None, None),
    }
    # Applying the same settings again (every upgrade does) changes nothing.
    assert run_main(["migrate", "--queue-settings", json.dumps(settings)])[0] == 0
    assert json.loads(run_main(["queues", "list", "--json"])[1]) == json.loads(out)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ("[1]", "must be a JSON object of queue names to settings"),
        ("{", "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
        ('{"emails": 4}', "queue emails: settings must be a JSON object"),
        ('{"emails": {"concurency": 4}}', "queue emails: unknown setting 'concurency'"),
        ('{"emails": {"concurrency": 0}}', "queue emails: concurrency must be at least 1, got 0"),
        ('{"emails": {"concurrency": 2.5}}', "queue emails: concurrency must be a whole number, got float"),
        ('{"emails": {"concurrency": NaN}}', "queue emails: concurrency must be a whole number, got float"),
        ('{"emails": {"key_concurrency": true}}', "queue emails: key concurrency must be a whole number"),
        ('{"emails": {"rate": "10/0s"}}', "queue emails: rate period must be from 1ms to 7d"),
        ('{"emails": {"rate": 50}}', 'queue emails: rate must be a string like "50/1s", or null'),
        ('{"emails": {"paused": "yes"}}', "queue emails: paused must be true or false"),
        ('{"a\\u0007b": {"paused": true}}', "queue must not contain control characters"),
        ('{"\\ud800": {"paused": true}}', "queue must be valid Unicode text"),
    ],
)
def test_bad_queue_settings_are_one_line_and_exit_2(
    conn: Conn, cli_in_process: dict[str, str], settings: str, message: str
) -> None:
    code, out, err = run_main(["migrate", "--queue-settings", settings])
    assert message in one_line_exit_2(code, err)
    assert out == ""
    assert conn.execute("SELECT count(*) FROM passito_jobs.queues").fetchone() == (0,)
