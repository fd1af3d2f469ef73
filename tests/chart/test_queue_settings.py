"""The chart's `queues:` values: validated by values.schema.json, carried by the migration Job's
arguments (`migrate --queue-settings`), and applied by that command to a real database."""

from __future__ import annotations

import json
from typing import Any

import helm_python
import psycopg
import pytest

from tests.chart.render import SCENARIOS, one, render
from tests.helpers import run_main

QUEUES = {
    "emails": {"rate": "50/1s", "paused": True},
    "outpasses": {"concurrency": 20, "keyConcurrency": 2},
    "reports": {"concurrency": None, "rate": "none", "paused": False},
    "big": {"concurrency": 1_000_000},
}


def migrate_args(values: dict[str, Any]) -> list[str]:
    job = one(render(values), "Job", "-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args: list[str] = container["args"]
    return args


def test_without_queues_the_job_only_migrates() -> None:
    assert migrate_args({}) == ["migrate"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_migrates(scenario: str) -> None:
    args = migrate_args(SCENARIOS[scenario])
    assert args[0] == "migrate"
    assert (len(args) > 1) == bool(SCENARIOS[scenario].get("queues")), args


def test_the_migration_job_carries_the_queue_settings() -> None:
    args = migrate_args({"queues": QUEUES})
    assert args[:2] == ["migrate", "--queue-settings"]
    assert json.loads(args[2]) == {
        "emails": {"rate": "50/1s", "paused": True},
        "outpasses": {"concurrency": 20, "key_concurrency": 2},
        "reports": {"concurrency": None, "rate": "none", "paused": False},
        "big": {"concurrency": 1_000_000},  # an integer, not 1e+06
    }


def test_the_rendered_job_sets_the_queues_and_leaves_the_others(
    conn: psycopg.Connection[Any], cli_in_process: dict[str, str]
) -> None:
    assert run_main(["queues", "set", "unlisted", "--concurrency", "3"])[0] == 0
    assert run_main(["queues", "set", "reports", "--concurrency", "5", "--key-concurrency", "4"])[0] == 0
    code, _, err = run_main(migrate_args({"queues": QUEUES}))
    assert (code, err) == (0, "")
    rows = conn.execute(
        "SELECT name, paused, concurrency, rate_limit, key_concurrency FROM passito_jobs.queues ORDER BY name"
    ).fetchall()
    assert rows == [
        ("big", False, 1_000_000, None, None),
        ("emails", True, None, 50, None),
        ("outpasses", False, 20, None, 2),
        ("reports", False, None, None, 4),  # key concurrency not in the values: left as it was
        ("unlisted", False, 3, None, None),  # not in the values: left as it was
    ]


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ({"emails": {"concurrency": 0}}, "at '/queues/emails/concurrency'"),
        ({"emails": {"concurrency": 2.5}}, "at '/queues/emails/concurrency'"),
        ({"emails": {"keyConcurrency": 1_000_001}}, "at '/queues/emails/keyConcurrency'"),
        ({"emails": {"rate": "x/1m"}}, "at '/queues/emails/rate'"),
        ({"emails": {"rate": 50}}, "at '/queues/emails/rate'"),
        ({"emails": {"paused": "yes"}}, "at '/queues/emails/paused'"),
        ({"emails": {"key_concurrency": 2}}, "additional properties 'key_concurrency' not allowed"),
        ({"emails": None}, "at '/queues/emails': got null, want object"),
        ({"a\x07b": {"paused": True}}, "invalid propertyName"),
        ({"q" * 129: {"paused": True}}, "invalid propertyName"),
    ],
)
def test_bad_queue_values_are_refused_at_install(queues: dict[str, Any], message: str) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render({"queues": queues})


def test_a_rate_the_schema_lets_through_is_refused_by_the_job_in_one_line(
    conn: psycopg.Connection[Any], cli_in_process: dict[str, str]
) -> None:
    """The schema checks the shape of a rate; its bounds are the command's (the same words as
    `queues set`), so the Job fails with one line in its log, and nothing is changed."""
    code, out, err = run_main(migrate_args({"queues": {"emails": {"rate": "10/0s"}}}))
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("passito-jobs migrate: error: argument --queue-settings: ")
    assert "queue emails: rate period must be from 1ms to 7d" in line
    assert out == ""
    assert conn.execute("SELECT count(*) FROM passito_jobs.queues").fetchone() == (0,)
