"""Queue flow control in the admin API and on the overview: each queue's pause and limits, and
pausing and resuming one (admins only, not read-only, CSRF-checked from the pages, through
pause_queue / resume_queue, written to the audit log)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from passito_jobs.queue.flow import parse_rate
from passito_jobs.queue.models import QueueFlow
from passito_jobs.queue.store import Store
from tests.web.conftest import insert_job
from tests.web.test_auth import (
    ADMIN_TOKEN,
    SAME_SITE,
    VIEWER_TOKEN,
    basic,
    bearer,
    csrf_of,
    forged,
    tokens_file,
    users_file,
)

__all__ = ["tokens_file", "users_file"]  # fixtures, used by name
JSON = {"Content-Type": "application/json"}
FORM = {**SAME_SITE, "Content-Type": "application/x-www-form-urlencoded"}


def flows(conn: psycopg.Connection[Any]) -> dict[str, QueueFlow]:
    """The queues with a flow-control row (paused, resumed or limited once)."""
    named = {row[0] for row in conn.execute("SELECT name FROM passito_jobs.queues")}
    return {f.queue: f for f in Store(conn).flow.queues() if f.queue in named}


def audit(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT actor, action, source, job_ids, changed_ids, filter FROM passito_jobs.audit_log ORDER BY id"
    ).fetchall()


@pytest.fixture
def queued(conn: psycopg.Connection[Any]) -> None:
    for queue in ("emails", "emails", "outpasses", "outpasses", "outpasses", "default"):
        insert_job(conn, state="pending", queue=queue)


def test_queues_show_their_flow_control(
    client: TestClient, conn: psycopg.Connection[Any], queued: None
) -> None:
    flow = Store(conn).flow
    flow.pause("emails")
    flow.set_limits("outpasses", concurrency=2, rate=parse_rate("50/1s"), key_concurrency=1)
    rows = {q["queue"]: q for q in client.get("/api/v1/queues").json()["queues"]}
    assert {k: rows["emails"][k] for k in ("paused", "concurrency", "rate", "held_back", "ready")} == {
        "paused": True,
        "concurrency": None,
        "rate": None,
        "held_back": 2,
        "ready": 2,
    }
    outpasses = rows["outpasses"]
    assert (outpasses["paused"], outpasses["concurrency"], outpasses["key_concurrency"]) == (False, 2, 1)
    assert outpasses["rate"] == {"limit": 50, "period_seconds": 1.0}
    assert outpasses["held_back"] == 1  # ready 3, concurrency 2
    plain = rows["default"]
    assert (plain["paused"], plain["concurrency"], plain["rate"], plain["held_back"]) == (
        False,
        None,
        None,
        0,
    )


def test_pause_and_resume_through_the_api_are_audited(
    client: TestClient, conn: psycopg.Connection[Any], queued: None
) -> None:
    paused = client.post("/api/v1/queues/emails/pause", headers=JSON)
    assert paused.status_code == 200, paused.text
    assert paused.json() | {"audit_id": 0} == {
        "queue": "emails",
        "action": "pause",
        "paused": True,
        "created": True,
        "audit_id": 0,
    }
    assert flows(conn)["emails"].paused
    listed = {q["queue"]: q["paused"] for q in client.get("/api/v1/queues").json()["queues"]}
    assert listed == {"default": False, "emails": True, "outpasses": False}
    resumed = client.post("/api/v1/queues/emails/resume", json={})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["created"] is False
    assert not flows(conn)["emails"].paused
    assert audit(conn) == [
        ("anonymous", "pause", "api", [], [], {"queue": "emails"}),
        ("anonymous", "resume", "api", [], [], {"queue": "emails"}),
    ]
    entries = client.get("/api/v1/audit").json()["entries"]
    assert [e["action"] for e in entries] == ["resume", "pause"]
    assert "pause" in client.get("/audit").text


def test_viewers_and_a_read_only_dashboard_cannot_pause(
    make_app: Callable[..., TestClient], tokens_file: Path, conn: psycopg.Connection[Any], queued: None
) -> None:
    tokens = make_app(auth=("token",), tokens_files=(tokens_file,))
    refused = tokens.post("/api/v1/queues/emails/pause", headers=bearer(VIEWER_TOKEN))
    assert refused.status_code == 403
    assert "viewer" in refused.json()["error"]["message"]
    assert tokens.post("/api/v1/queues/emails/pause").status_code == 401
    read_only = make_app(read_only=True)
    refused = read_only.post("/api/v1/queues/emails/pause", json={})
    assert refused.status_code == 403
    assert "read-only" in refused.json()["error"]["message"]
    assert "Pause</button>" not in read_only.get("/").text
    assert (flows(conn), audit(conn)) == ({}, [])
    done = tokens.post("/api/v1/queues/emails/pause", headers=bearer(ADMIN_TOKEN))  # a token needs no body
    assert done.status_code == 200, done.text
    assert audit(conn)[0][:3] == ("ci", "pause", "api")


HOSTILE = [
    ("/api/v1/queues/%20%20/pause", b"", 400, "queue must be a non-empty string"),
    ("/api/v1/queues/a%00b/pause", b"", 400, "queue must not contain NUL"),
    ("/api/v1/queues/a%01b/resume", b"", 400, "queue must not contain control characters"),
    ("/api/v1/queues/a%0Ab/pause", b"", 400, "queue must not contain control characters"),
    ("/api/v1/queues/" + "q" * 129 + "/pause", b"", 400, "queue must be at most 128 characters"),
    ("/api/v1/queues/emails/pause", b'{"all": true}', 400, "takes an empty object"),
    ("/api/v1/queues/emails/pause", b"[", 400, "not valid JSON"),
    ("/api/v1/queues/emails/pause?x=1", b"", 400, "unknown parameter"),
    ("/api/v1/queues/emails/freeze", b"", 404, "no such page"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0][15:45] + repr(c[1]) for c in HOSTILE])
def test_a_bad_pause_is_a_4xx_and_changes_nothing(
    client: TestClient, conn: psycopg.Connection[Any], queued: None, case: tuple[str, bytes, int, str]
) -> None:
    path, body, status, message = case
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    assert (flows(conn), audit(conn)) == ({}, [])


def test_an_api_pause_from_a_browser_must_be_json(client: TestClient, conn: psycopg.Connection[Any]) -> None:
    response = client.post("/api/v1/queues/emails/pause", data={"a": "b"}, headers=FORM)
    assert response.status_code == 415
    assert (flows(conn), audit(conn)) == ({}, [])


def test_the_overview_pauses_and_resumes_with_a_csrf_checked_form(
    client: TestClient, conn: psycopg.Connection[Any], queued: None
) -> None:
    page = client.get("/")
    assert 'action="/queues/emails/pause"' in page.text
    token = csrf_of(page.text)
    refused = client.post("/queues/emails/pause", data={"csrf": forged(token)}, headers=FORM)
    assert refused.status_code == 403
    cross = client.post(
        "/queues/emails/pause", data={"csrf": token}, headers={**FORM, "Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403
    assert (flows(conn), audit(conn)) == ({}, [])
    done = client.post("/queues/emails/pause", data={"csrf": token}, headers=FORM, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == "/?notice=paused"
    assert flows(conn)["emails"].paused
    after = client.get("/?notice=paused").text
    assert "Queue paused" in after
    assert 'action="/queues/emails/resume"' in after
    assert "2 held back" in after
    client.post("/queues/emails/resume", data={"csrf": token}, headers=FORM)
    assert not flows(conn)["emails"].paused
    assert [row[1:3] for row in audit(conn)] == [("pause", "dashboard"), ("resume", "dashboard")]


def test_the_overview_shows_limits_and_viewers_see_no_buttons(
    make_app: Callable[..., TestClient], users_file: Path, conn: psycopg.Connection[Any], queued: None
) -> None:
    Store(conn).flow.set_limits("outpasses", concurrency=2, rate=parse_rate("600/1m"), key_concurrency=1)
    client = make_app(auth=("basic",), users_file=users_file)
    viewer = client.get("/", headers=basic("ravi", "battery")).text
    assert "concurrency 2" in viewer
    assert "rate 600/1m" in viewer
    assert "per key 1" in viewer
    assert "Pause</button>" not in viewer
    assert "/queues/" not in viewer
    admin = client.get("/", headers=basic("asha", "correct horse")).text
    assert 'action="/queues/outpasses/pause"' in admin


def test_a_paused_queue_without_jobs_is_listed_and_can_be_resumed(
    client: TestClient, conn: psycopg.Connection[Any], queued: None
) -> None:
    Store(conn).flow.pause("nightly")
    rows = {q["queue"]: q for q in client.get("/api/v1/queues").json()["queues"]}
    assert rows["nightly"]["paused"] is True
    assert (rows["nightly"]["ready"], rows["nightly"]["held_back"]) == (0, 0)
    assert 'action="/queues/nightly/resume"' in client.get("/").text
    assert client.post("/api/v1/queues/nightly/resume", json={}).json()["created"] is False
    assert not flows(conn)["nightly"].paused


def test_an_admin_sets_and_clears_limits_through_the_api_and_each_change_is_audited(
    client: TestClient, conn: psycopg.Connection[Any], queued: None
) -> None:
    done = client.put(
        "/api/v1/queues/outpasses/limits",
        json={"concurrency": 2, "rate": "600/1m", "key_concurrency": 1},
        headers=JSON,
    )
    assert done.status_code == 200, done.text
    assert done.json() | {"audit_id": 0} == {
        "queue": "outpasses",
        "action": "limit",
        "created": True,
        "audit_id": 0,
        "paused": False,
        "concurrency": 2,
        "rate": {"limit": 600, "period_seconds": 60.0},
        "key_concurrency": 1,
        "held_back": 1,  # 3 ready, at most 2 at once
    }
    # PATCH changes only what it names; null and "none" remove a limit.
    patched = client.patch("/api/v1/queues/outpasses/limits", json={"rate": None, "concurrency": "none"})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["concurrency"], patched.json()["rate"], patched.json()["key_concurrency"]) == (
        None,
        None,
        1,
    )
    # PUT sets all three: one not given is removed.
    put = client.put("/api/v1/queues/outpasses/limits", json={"concurrency": 5})
    assert (put.json()["concurrency"], put.json()["key_concurrency"], put.json()["created"]) == (
        5,
        None,
        False,
    )
    flow = flows(conn)["outpasses"]
    assert (flow.concurrency, flow.rate_limit, flow.key_concurrency) == (5, None, None)
    assert audit(conn) == [
        (
            "anonymous",
            "limit",
            "api",
            [],
            [],
            {"queue": "outpasses", "concurrency": 2, "rate": "600/1m", "key_concurrency": 1},
        ),
        ("anonymous", "limit", "api", [], [], {"queue": "outpasses", "rate": None, "concurrency": None}),
        (
            "anonymous",
            "limit",
            "api",
            [],
            [],
            {"queue": "outpasses", "concurrency": 5, "rate": None, "key_concurrency": None},
        ),
    ]
    assert "limit" in client.get("/audit").text


BAD_LIMITS = [
    ("put", {"concurrency": 0}, "concurrency must be at least 1, got 0"),
    ("put", {"concurrency": 1_000_001}, "concurrency must be at most 1000000"),
    ("put", {"concurrency": 2.5}, "concurrency must be a whole number, got float"),
    ("put", {"concurrency": True}, "concurrency must be a whole number, got bool"),
    ("put", {"concurrency": "4"}, "concurrency must be a whole number, got '4'"),
    ("put", {"concurrency": int("9" * 4300)}, "must be at most 1000000, got a number of about 4300 digits"),
    ("put", {"concurrency": -(2**200)}, "must be at least 1, got minus a number of about 61 digits"),
    ("put", {"key_concurrency": -1}, "key concurrency must be at least 1, got -1"),
    ("put", {"rate": "10/0s"}, "rate period must be from 1ms to 7d"),
    ("put", {"rate": "x/1m"}, "rate must look like 50/1s or 600/1m"),
    ("put", {"rate": 50}, 'rate must be a string like "50/1s"'),
    ("put", {"rate": "5\x00/1s"}, "rate must look like"),
    ("put", {"concurency": 2}, "unknown field 'concurency'"),
    ("patch", {}, "give at least one of concurrency, rate, key_concurrency"),
]


@pytest.mark.parametrize("case", BAD_LIMITS, ids=[repr(c[1])[:60] for c in BAD_LIMITS])
def test_bad_limits_are_a_400_with_the_reason_and_change_nothing(
    client: TestClient, conn: psycopg.Connection[Any], queued: None, case: tuple[str, Any, str]
) -> None:
    method, body, message = case
    response = client.request(method.upper(), "/api/v1/queues/emails/limits", json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]
    assert (flows(conn), audit(conn)) == ({}, [])


def test_a_bad_limits_request_is_a_4xx_and_changes_nothing(
    make_app: Callable[..., TestClient], tokens_file: Path, client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    for body, status, message in [
        (b"", 400, "needs a JSON object"),
        (b"[1]", 400, "must be a JSON object"),
        (b"[" * 20_000, 400, "nested too deeply"),
        (b"{" * 100_000, 413, "larger than"),
        (b'{"concurrency": 1e999}', 400, "whole number"),
        (b'{"concurrency": NaN}', 400, "whole number"),
    ]:
        response = client.put("/api/v1/queues/emails/limits", content=body, headers=JSON)
        assert response.status_code == status, (body[:20], response.text)
        assert message in response.json()["error"]["message"], body[:20]
    assert client.put("/api/v1/queues/a%01b/limits", json={"concurrency": 1}).status_code == 400
    assert client.post("/api/v1/queues/emails/limits", json={"concurrency": 1}).status_code == 405
    tokens = make_app(auth=("token",), tokens_files=(tokens_file,))
    refused = tokens.put(
        "/api/v1/queues/emails/limits", json={"concurrency": 1}, headers=bearer(VIEWER_TOKEN)
    )
    assert refused.status_code == 403
    assert (
        make_app(read_only=True).put("/api/v1/queues/emails/limits", json={"concurrency": 1}).status_code
        == 403
    )
    assert (flows(conn), audit(conn)) == ({}, [])


def test_the_overview_sets_limits_with_a_csrf_checked_form(
    client: TestClient, conn: psycopg.Connection[Any], queued: None
) -> None:
    page = client.get("/")
    assert 'action="/queues/emails/limits"' in page.text
    token = csrf_of(page.text)
    fields = {"concurrency": "3", "rate": "50/1s", "key_concurrency": ""}
    refused = client.post("/queues/emails/limits", data={**fields, "csrf": forged(token)}, headers=FORM)
    assert refused.status_code == 403
    bad = client.post(
        "/queues/emails/limits", data={**fields, "concurrency": "0", "csrf": token}, headers=FORM
    )
    assert bad.status_code == 400
    assert "concurrency must be at least 1, got 0" in bad.text
    assert (flows(conn), audit(conn)) == ({}, [])
    done = client.post(
        "/queues/emails/limits", data={**fields, "csrf": token}, headers=FORM, follow_redirects=False
    )
    assert (done.status_code, done.headers["location"]) == (303, "/?notice=limits")
    flow = flows(conn)["emails"]
    assert (flow.concurrency, flow.rate_limit, flow.rate_period, flow.key_concurrency) == (3, 50, 1.0, None)
    after = client.get("/?notice=limits").text
    assert "Queue limits saved" in after
    assert 'name="concurrency" size="7" inputmode="numeric" placeholder="none" value="3"' in after
    assert 'value="50/1s"' in after
    client.post(
        "/queues/emails/limits", data={"concurrency": "none", "rate": "", "csrf": token}, headers=FORM
    )
    flow = flows(conn)["emails"]
    assert (flow.concurrency, flow.rate_limit, flow.key_concurrency) == (None, None, None)
    assert [row[1:3] for row in audit(conn)] == [("limit", "dashboard"), ("limit", "dashboard")]
