"""The `tag` filter of the jobs list, the /jobs page and bulk actions: exact keyset pages for a
rare tag (its index) and a common one (windows of ids), and dispatch's rules for a tag."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from passito_jobs.queue import admin as admin_module
from tests.web.test_api import JSON, every_page, ids_where, jobs, table

__all__ = ["jobs"]  # the fixture, used by name

TAGGED = {
    "done": ["outpass:7", "hostel:ganga"],
    "failed_email": ["outpass:7"],
    "failed_pdf": ["outpass:8"],
    "pending2": ["outpass:7", "hostel:ganga"],
    "blocked": ["outpass:7"],
}


@pytest.fixture
def tagged(conn: psycopg.Connection[Any], jobs: dict[str, int]) -> dict[str, int]:
    for name, tags in TAGGED.items():
        conn.execute("UPDATE passito_jobs.jobs SET tags = %s WHERE id = %s", (tags, jobs[name]))
    conn.execute("ANALYZE passito_jobs.jobs")
    return jobs


CASES = [
    ("tag=outpass:7", "tags @> ARRAY['outpass:7']"),
    ("tag=hostel:ganga", "tags @> ARRAY['hostel:ganga']"),
    ("tag=outpass:7&state=failed", "tags @> ARRAY['outpass:7'] AND state = 'failed'"),
    ("tag=outpass:7&queue=emails", "tags @> ARRAY['outpass:7'] AND queue = 'emails'"),
    ("tag=outpass:8&state=failed", "tags @> ARRAY['outpass:8'] AND state = 'failed'"),
]


@pytest.mark.parametrize("common", [False, True], ids=["rare tag", "common tag"])
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_the_tag_filter_pages_through_exactly_the_tagged_jobs(
    client: TestClient,
    conn: psycopg.Connection[Any],
    tagged: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
    *,
    case: tuple[str, str],
    common: bool,
) -> None:
    if common:  # every tag counts as common: searched along windows of ids, not its index
        monkeypatch.setattr(admin_module, "RARE_TAG_JOBS", 1)
        monkeypatch.setattr(admin_module, "ID_WINDOW", 2)
    query, where = case
    expected = ids_where(conn, where)
    assert expected
    assert every_page(client, query, limit=1) == expected
    assert every_page(client, query, limit=50) == expected


def test_a_tag_no_job_carries_is_an_empty_page(client: TestClient, tagged: dict[str, int]) -> None:
    body = client.get("/api/v1/jobs?tag=outpass:404").json()
    assert (body["jobs"], body["next"]) == ([], None)


def test_the_jobs_page_filters_by_tag(client: TestClient, tagged: dict[str, int]) -> None:
    page = client.get("/jobs?tag=hostel:ganga")
    assert page.status_code == 200
    shown = {name for name, id in tagged.items() if f'href="/jobs/{id}"' in page.text}
    assert shown == {"done", "pending2"}
    assert 'name="tag" value="hostel:ganga"' in page.text


def test_a_bulk_action_over_a_tag_changes_only_its_jobs(
    client: TestClient, conn: psycopg.Connection[Any], tagged: dict[str, int]
) -> None:
    body = {"filter": {"tag": "outpass:7", "state": "failed"}, "dry_run": False}
    response = client.post("/api/v1/jobs/retry", json=body, headers=JSON)
    assert response.status_code == 200, response.text
    assert response.json()["changed"] == 1
    assert ids_where(conn, "state = 'failed'") == [tagged["failed_pdf"]]
    logged = conn.execute("SELECT filter FROM passito_jobs.audit_log ORDER BY id DESC LIMIT 1").fetchone()
    assert logged is not None
    assert logged[0] == {"tag": "outpass:7", "state": "failed"}


HOSTILE = [
    ("tag=" + "x" * 101, "tag must be at most 100 characters"),
    ("tag=a%01b", "tag must not contain control characters"),
    ("tag=a%00b", "tag must not contain NUL"),
    ("tag=%20%20", "tag must be a non-empty string"),
    ("tag=", "tag must not be empty"),
    ("tag=a&tag=b", "parameter tag is given more than once"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0][:30] for c in HOSTILE])
def test_a_bad_tag_is_a_400_with_a_message(
    client: TestClient, conn: psycopg.Connection[Any], tagged: dict[str, int], case: tuple[str, str]
) -> None:
    query, message = case
    before = table(conn)
    response = client.get(f"/api/v1/jobs?{query}")
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert table(conn) == before


BAD_BODIES = [
    (b'{"filter": {"tag": "a\\u0001b"}}', "tag must not contain control characters"),
    (b'{"filter": {"tag": "\\ud800"}}', "not valid UTF-8"),
    (b'{"filter": {"tag": ["a"]}}', "tag must be a string"),
    (b'{"filter": {"tag": "' + b"y" * 101 + b'"}}', "tag must be at most 100 characters"),
]


@pytest.mark.parametrize("case", BAD_BODIES, ids=[c[1] for c in BAD_BODIES])
def test_a_bulk_action_with_a_bad_tag_changes_nothing(
    client: TestClient, conn: psycopg.Connection[Any], tagged: dict[str, int], case: tuple[bytes, str]
) -> None:
    body, message = case
    before = table(conn)
    response = client.post("/api/v1/jobs/cancel", content=body, headers=JSON)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert table(conn) == before
