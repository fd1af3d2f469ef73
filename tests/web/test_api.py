"""The admin API on a real PostgreSQL: every endpoint and filter, actions with their audit rows,
and hostile input that gets a 4xx with a message and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from starlette.testclient import TestClient

from passito_jobs.queue import admin as admin_module
from passito_jobs.queue.connection import connect
from passito_jobs.queue.limits import MAX_JOB_ID
from passito_jobs.web import params
from tests.web.conftest import insert_job

JSON = {"Content-Type": "application/json"}
NOW = datetime.now(UTC)


def table(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Everything an action could change: the jobs and the audit log."""
    jobs = conn.execute("SELECT * FROM passito_jobs.jobs ORDER BY id").fetchall()
    audit = conn.execute("SELECT count(*) FROM passito_jobs.audit_log").fetchall()
    return [*jobs, *audit]


def every_page(client: TestClient, query: str, limit: int = 2) -> list[int]:
    """The ids of every page of /api/v1/jobs?QUERY, following `next`."""
    ids: list[int] = []
    cursor = ""
    for _ in range(200):
        response = client.get(f"/api/v1/jobs?{query}&limit={limit}{cursor}")
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [job["id"] for job in body["jobs"]]
        if body["next"] is None:
            return ids
        cursor = f"&cursor={body['next']}"
    raise AssertionError("more than 200 pages")


@pytest.fixture
def jobs(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """A dozen jobs of every state, two queues, three types, created over three days."""
    made = {}
    now = datetime.now(UTC)  # NOW is the module's import time; a heartbeat must be recent
    specs = [
        ("old_done", "completed", "emails", "SendOutpassEmail", 72),
        ("done", "completed", "outpasses", "GenerateQrCode", 30),
        ("failed_email", "failed", "emails", "SendOutpassEmail", 20),
        ("failed_pdf", "failed", "outpasses", "GenerateOutpassPdf", 10),
        ("cancelled", "cancelled", "emails", "SendOutpassEmail", 5),
        ("pending", "pending", "outpasses", "GenerateQrCode", 3),
        ("pending2", "pending", "emails", "SendOutpassEmail", 2),
        ("processing", "processing", "outpasses", "GenerateOutpassPdf", 1),
        ("blocked", "blocked", "emails", "SendOutpassEmail", 0.5),
    ]
    for name, state, queue, job_type, hours_ago in specs:
        made[name] = insert_job(
            conn,
            state=state,
            queue=queue,
            type=job_type,
            created_at=NOW - timedelta(hours=hours_ago),
            attempts=3 if state == "failed" else 0,
            last_error="RuntimeError: boom\nTraceback (most recent call last):\n  ..."
            if state == "failed"
            else None,
            worker_id="host-a:12" if state == "processing" else None,
            heartbeat_at=now if state == "processing" else None,
            finished_at=NOW if state in ("completed", "failed", "cancelled") else None,
        )
    conn.execute("ANALYZE passito_jobs.jobs")
    return made


def ids_where(conn: psycopg.Connection[Any], where: str, *args: Any) -> list[int]:
    rows = conn.execute(f"SELECT id FROM passito_jobs.jobs WHERE {where} ORDER BY id DESC", args).fetchall()
    return [int(r[0]) for r in rows]


FILTERS = [
    ("", "true", ()),
    ("state=failed", "state = 'failed'", ()),
    ("state=completed", "state = 'completed'", ()),
    ("state=pending", "state = 'pending'", ()),
    ("queue=emails", "queue = %s", ("emails",)),
    ("type=GenerateQrCode", "type = %s", ("GenerateQrCode",)),
    ("state=failed&queue=emails", "state = 'failed' AND queue = %s", ("emails",)),
    ("state=completed&type=SendOutpassEmail", "state = 'completed' AND type = %s", ("SendOutpassEmail",)),
    (
        f"created_after={(NOW - timedelta(hours=25)).isoformat().replace('+', '%2B')}",
        "created_at >= %s",
        (NOW - timedelta(hours=25),),
    ),
    (
        f"created_after={(NOW - timedelta(hours=25)).isoformat().replace('+', '%2B')}"
        f"&created_before={(NOW - timedelta(hours=2)).isoformat().replace('+', '%2B')}",
        "created_at >= %s AND created_at < %s",
        (NOW - timedelta(hours=25), NOW - timedelta(hours=2)),
    ),
    (
        f"state=failed&created_before={(NOW - timedelta(hours=15)).isoformat().replace('+', '%2B')}",
        "state = 'failed' AND created_at < %s",
        (NOW - timedelta(hours=15),),
    ),
]


@pytest.mark.parametrize("case", FILTERS, ids=[f[0] or "all" for f in FILTERS])
def test_every_filter_pages_through_exactly_the_matching_jobs(
    client: TestClient, conn: psycopg.Connection[Any], jobs: dict[str, int], case: tuple[str, str, Any]
) -> None:
    query, where, args = case
    expected = ids_where(conn, where, *args)
    assert expected, "the fixture must give every filter something to find"
    assert every_page(client, query) == expected


def test_the_id_filter_finds_one_job(client: TestClient, jobs: dict[str, int]) -> None:
    found = client.get(f"/api/v1/jobs?id={jobs['failed_pdf']}").json()["jobs"]
    assert [j["id"] for j in found] == [jobs["failed_pdf"]]
    assert found[0]["state"] == "failed"
    assert found[0]["error"] == "RuntimeError: boom"
    assert client.get(f"/api/v1/jobs?id={jobs['failed_pdf']}&state=pending").json()["jobs"] == []


def test_a_sparse_filter_is_searched_in_bounded_windows(
    client: TestClient, conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter without an index of its own reads at most SCAN_BUDGET ids per request; the
    answer says how far it searched, and following `next` still finds every match."""
    conn.execute(
        "INSERT INTO passito_jobs.jobs (type, state, queue) "
        "SELECT 'Noop', 'completed', CASE WHEN g % 40 = 0 THEN 'rare' ELSE 'busy' END "
        "FROM generate_series(1, 400) g"
    )
    monkeypatch.setattr(admin_module, "ID_WINDOW", 20)
    monkeypatch.setattr(admin_module, "SCAN_BUDGET", 60)
    first = client.get("/api/v1/jobs?queue=rare&limit=50").json()
    assert len(first["jobs"]) < 50
    assert first["next"] is not None
    assert first["searched_to"] is not None
    assert every_page(client, "queue=rare", limit=50) == ids_where(conn, "queue = 'rare'")


def test_job_detail_has_every_field_and_the_relatives(
    client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    parent = insert_job(
        conn, state="completed", payload=Jsonb({"outpass_id": "A1"}), result=Jsonb({"file": "x"})
    )
    child = insert_job(
        conn,
        state="failed",
        depends_on=[parent],
        payload=Jsonb({"outpass_id": "A1", "student_name": "Asha Rao"}),
        last_error="SMTPRecipientsRefused: asha@example.org\nTraceback (most recent call last):\n  line 1",
        progress=Jsonb({"step": 2}),
        attempts=3,
    )
    grandchild = insert_job(conn, state="blocked", depends_on=[child], waiting_on=1)
    conn.execute(
        "INSERT INTO passito_jobs.job_dependencies VALUES (%s, %s), (%s, %s)",
        (child, parent, grandchild, child),
    )
    body = client.get(f"/api/v1/jobs/{child}").json()
    assert body["payload"] == {"outpass_id": "A1", "student_name": "Asha Rao"}
    assert body["last_error"].startswith("SMTPRecipientsRefused: asha@example.org\nTraceback")
    assert (body["attempts"], body["progress"], body["depends_on"]) == (3, {"step": 2}, [parent])
    assert body["parents"] == [{"id": parent, "type": "Noop", "queue": "default", "state": "completed"}]
    assert body["children"] == [{"id": grandchild, "type": "Noop", "queue": "default", "state": "blocked"}]
    assert body["masked"] is False
    assert set(body) >= {"created_at", "started_at", "finished_at", "heartbeat_at", "claimed_at", "worker_id"}


def test_queues_count_by_state(client: TestClient, jobs: dict[str, int]) -> None:
    body = client.get("/api/v1/queues").json()
    queues = {q["queue"]: q for q in body["queues"]}
    assert queues["emails"]["failed"] == 1
    assert queues["emails"]["pending"] == 1
    assert queues["emails"]["blocked"] == 1
    assert queues["outpasses"]["processing"] == 1
    assert queues["outpasses"]["completed_last_hour"] == 1
    assert queues["emails"]["failed_last_hour"] == 1
    assert body["window_seconds"] == 3600


def test_workers_are_seen_by_their_heartbeats(client: TestClient, jobs: dict[str, int]) -> None:
    workers = client.get("/api/v1/workers").json()["workers"]
    assert [(w["worker_id"], w["jobs"], w["job_ids"]) for w in workers] == [
        ("host-a:12", 1, [jobs["processing"]])
    ]
    assert workers[0]["heartbeat_age_seconds"] < 60
    assert workers[0]["free_slots"] is None


def test_workers_waiting_for_jobs_are_seen_with_their_free_slots(
    client: TestClient, conn: psycopg.Connection[Any], database_url: str
) -> None:
    """An idle worker holds no job, so no heartbeat shows it: its row in waiting_workers does,
    while its listener holds the lock (a row whose lock is gone is a dead worker's, not shown)."""
    with connect(database_url, autocommit=True) as listener:
        listener.execute("SELECT pg_advisory_lock(1885434740, 77)")
        conn.execute(
            "INSERT INTO passito_jobs.waiting_workers (worker_id, channel, lock_key, queues, slots) "
            "VALUES ('idle-b:7', 'passito_jobs_handoff_x', 77, NULL, 4), "
            "       ('dead-c:9', 'passito_jobs_handoff_y', 78, '{emails}', 2)"
        )
        workers = client.get("/api/v1/workers").json()["workers"]
        assert [(w["worker_id"], w["jobs"], w["queues"], w["free_slots"]) for w in workers] == [
            ("idle-b:7", 0, [], 4)
        ]
        page = client.get("/workers").text
        assert "idle-b:7" in page
        assert "4 free slots" in page
        assert "every queue" in page
        assert "dead-c:9" not in page


def test_health_is_the_health_report(client: TestClient, jobs: dict[str, int]) -> None:
    body = client.get("/api/v1/health").json()
    assert body["totals"]["failed"] == 2
    assert isinstance(body["healthy"], bool)


def test_retry_and_cancel_one_job_write_the_audit_log(
    client: TestClient, conn: psycopg.Connection[Any], jobs: dict[str, int]
) -> None:
    response = client.post(f"/api/v1/jobs/{jobs['failed_email']}/retry", json={})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "pending"
    response = client.post(f"/api/v1/jobs/{jobs['pending']}/cancel", headers=JSON, content=b"")
    assert response.json()["state"] == "cancelled"
    entries = client.get("/api/v1/audit").json()["entries"]
    assert [(e["action"], e["job_ids"], e["changed_ids"], e["actor"], e["source"]) for e in entries] == [
        ("cancel", [jobs["pending"]], [jobs["pending"]], "anonymous", "api"),
        ("retry", [jobs["failed_email"]], [jobs["failed_email"]], "anonymous", "api"),
    ]


def test_an_action_that_does_not_apply_changes_nothing(
    client: TestClient, conn: psycopg.Connection[Any], jobs: dict[str, int]
) -> None:
    before = table(conn)
    for path, status, message in [
        (
            f"/api/v1/jobs/{jobs['done']}/retry",
            409,
            "is completed: only failed or cancelled jobs can be retried",
        ),
        (f"/api/v1/jobs/{jobs['failed_pdf']}/cancel", 409, "only blocked, pending or processing"),
        ("/api/v1/jobs/99999999/retry", 404, "no job #99999999"),
    ]:
        response = client.post(path, json={})
        assert response.status_code == status, response.text
        assert message in response.json()["error"]["message"]
    assert table(conn) == before


def test_retry_of_a_child_whose_parent_failed_is_refused(
    client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    parent = insert_job(conn, state="failed")
    child = insert_job(conn, state="failed", depends_on=[parent])
    before = table(conn)
    response = client.post(f"/api/v1/jobs/{child}/retry", json={})
    assert response.status_code == 409
    assert f"its parent job #{parent} is failed" in response.json()["error"]["message"]
    assert table(conn) == before


def test_bulk_retry_over_a_filter(
    client: TestClient, conn: psycopg.Connection[Any], jobs: dict[str, int]
) -> None:
    dry = client.post("/api/v1/jobs/retry", json={"filter": {"queue": "emails"}, "dry_run": True}).json()
    assert (dry["matched"], dry["changed"], dry["more"]) == (2, 0, False)  # failed + cancelled in emails
    limited = client.post("/api/v1/jobs/retry", json={"filter": {"queue": "emails"}, "max": 1}).json()
    assert (limited["matched"], limited["changed"], limited["more"]) == (1, 1, True)
    assert limited["changed_ids"] == [jobs["failed_email"]]  # the oldest first
    rest = client.post("/api/v1/jobs/retry", json={"filter": {"queue": "emails"}}).json()
    assert rest["changed_ids"] == [jobs["cancelled"]]
    audit = client.get("/api/v1/audit").json()["entries"][0]
    assert audit["filter"] == {"queue": "emails"}
    assert audit["changed"] == 1


def test_bulk_cancel_over_a_filter(
    client: TestClient, conn: psycopg.Connection[Any], jobs: dict[str, int]
) -> None:
    body = client.post("/api/v1/jobs/cancel", json={"filter": {"state": "pending"}}).json()
    assert sorted(body["changed_ids"]) == sorted([jobs["pending"], jobs["pending2"]])
    assert ids_where(conn, "state = 'pending'") == []
    nothing = client.post("/api/v1/jobs/cancel", json={"filter": {"state": "failed"}}).json()
    assert (nothing["matched"], nothing["changed"], nothing["audit_id"]) == (0, 0, None)


BIG = "9" * 1000
HOSTILE_GETS = [
    ("/api/v1/jobs?state=exploded", 400, "state must be one of"),
    ("/api/v1/jobs?state=failed&state=pending", 400, "more than once"),
    ("/api/v1/jobs?stat=failed", 400, "unknown parameter"),
    ("/api/v1/jobs?created_before=", 400, "created_before must not be empty"),
    ("/api/v1/jobs?limit=", 400, "limit must be"),
    ("/api/v1/jobs?limit=501", 400, "limit must be a whole number from 1 to 500"),
    (f"/api/v1/jobs?limit={BIG}", 400, "limit must be"),
    ("/api/v1/jobs?limit=-1", 400, "limit must be"),
    ("/api/v1/jobs?cursor=not-a-cursor", 400, "malformed cursor"),
    (f"/api/v1/jobs?cursor={params.encode_cursor(1)[:-2]}%00", 400, "malformed cursor"),
    (f"/api/v1/jobs?id={MAX_JOB_ID + 1}", 400, "id must be a whole number"),
    ("/api/v1/jobs?id=0", 400, "id must be"),
    ("/api/v1/jobs?queue=a%00b", 400, "must not contain NUL"),
    ("/api/v1/jobs?type=%ED%A0%80", 400, "query parameter 'type' is not valid UTF-8"),  # a lone surrogate
    (f"/api/v1/jobs?queue={'q' * 129}", 400, "at most 128 characters"),
    (f"/api/v1/jobs?queue={'q' * 5000}", 400, "longer than 4096"),
    ("/api/v1/jobs?created_after=yesterday", 400, "ISO 8601"),
    ("/api/v1/jobs?created_after=1969-12-31", 400, "between 1970 and 9999"),
    ("/api/v1/jobs?created_after=9999-12-31T23:00:00-05:00", 400, "between 1970 and 9999"),
    ("/api/v1/jobs?created_after=2026-01-02&created_before=2026-01-01", 400, "earlier than"),
    ("/api/v1/jobs/abc", 400, "job id must be"),
    (f"/api/v1/jobs/{MAX_JOB_ID + 1}", 400, "job id must be"),
    (f"/api/v1/jobs/{BIG}", 400, "job id must be"),
    ("/api/v1/jobs/123456789", 404, "no job #123456789"),
    ("/api/v1/audit?cursor=%FF%FE", 400, "query parameter 'cursor' is not valid UTF-8"),
    ("/api/v1/queues?x=1", 400, "unknown parameter"),
    ("/api/v1/nothing", 404, "no such page"),
    ("/api/v1/jobs/retry", 405, "method not allowed"),
]


@pytest.mark.parametrize("case", HOSTILE_GETS, ids=[c[0][:60] for c in HOSTILE_GETS])
def test_hostile_queries_get_a_4xx_with_a_message(
    client: TestClient, conn: psycopg.Connection[Any], jobs: dict[str, int], case: tuple[str, int, str]
) -> None:
    path, status, message = case
    before = table(conn)
    response = client.get(path)
    assert response.status_code == status, response.text
    if status != 200:
        assert message in response.json()["error"]["message"]
        assert response.json()["error"]["status"] == status
    assert table(conn) == before


HOSTILE_POSTS: list[tuple[str, Any, int, str]] = [
    ("/api/v1/jobs/retry", b"", 400, "needs a JSON object"),
    ("/api/v1/jobs/retry", b"[1, 2]", 400, "must be a JSON object"),
    ("/api/v1/jobs/retry", b"{", 400, "not valid JSON"),
    ("/api/v1/jobs/retry", b"[" * 100_000, 413, "larger than"),
    ("/api/v1/jobs/retry", b'{"filter": {"state": "nope"}}', 400, "state must be one of"),
    ("/api/v1/jobs/retry", b'{"filter": {"queue": "\\u0000"}}', 400, "NUL"),
    ("/api/v1/jobs/retry", b'{"filter": {"queue": "\\ud800"}}', 400, "not valid UTF-8"),
    ("/api/v1/jobs/retry", b'{"filter": {"id": 5}}', 400, "id must be a string"),
    ("/api/v1/jobs/retry", b'{"filter": {"stat": "failed"}}', 400, "unknown filter"),
    ("/api/v1/jobs/retry", b'{"filter": []}', 400, "filter must be a JSON object"),
    ("/api/v1/jobs/retry", b'{"everything": true}', 400, "unknown field"),
    ("/api/v1/jobs/retry", b'{"max": 10001}', 400, "max must be"),
    ("/api/v1/jobs/retry", b'{"max": true}', 400, "max must be"),
    ("/api/v1/jobs/retry", b'{"dry_run": "yes"}', 400, "dry_run must be"),
    ("/api/v1/jobs/cancel", b'{"max": 1e400}', 400, "max must be"),
    ("/api/v1/jobs/1/retry", b'{"force": true}', 400, "unknown field"),
    (f"/api/v1/jobs/{MAX_JOB_ID + 1}/cancel", b"{}", 400, "job id must be"),
    # the last of two would win silently, and run what was meant as a dry run
    ("/api/v1/jobs/retry", b'{"dry_run": true, "dry_run": false}', 400, "'dry_run' is given more than once"),
    ("/api/v1/jobs/retry", b'{"filter": {"state": "failed", "state": "cancelled"}}', 400, "more than once"),
    ("/api/v1/jobs/cancel", b'{"filter": {"state": null}}', 400, "state must be a string, got null"),
    ("/api/v1/jobs/retry", b"[" * 30_000 + b"]" * 30_000, 400, "nested too deeply"),
    ("/api/v1/jobs/retry", b'{"max": ' + b"9" * 5000 + b"}", 400, "a number of more than 4300 digits"),
]


@pytest.mark.parametrize("case", HOSTILE_POSTS, ids=[f"{c[0]} {c[1][:40]!r}" for c in HOSTILE_POSTS])
def test_hostile_actions_get_a_4xx_and_change_nothing(
    client: TestClient, conn: psycopg.Connection[Any], jobs: dict[str, int], case: tuple[str, bytes, int, str]
) -> None:
    path, body, status, message = case
    before = table(conn)
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    assert table(conn) == before


def test_an_api_action_without_json_is_refused(
    client: TestClient, conn: psycopg.Connection[Any], jobs: dict[str, int]
) -> None:
    """A cross-site form can post `text/plain` or a form without a preflight; the API takes JSON only."""
    before = table(conn)
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        response = client.post(
            f"/api/v1/jobs/{jobs['failed_email']}/retry",
            content=b"{}",
            headers={"Content-Type": content_type},
        )
        assert response.status_code == 415, response.text
    assert table(conn) == before


def test_no_database_is_a_503_with_the_password_masked(make_app: Callable[..., TestClient]) -> None:
    from tests.web.conftest import make_client

    url = "postgresql://passito:s3cret-pass@127.0.0.1:1/passito"
    with make_client(url) as client:
        response = client.get("/api/v1/jobs")
    assert response.status_code == 503
    assert "cannot connect" in response.json()["error"]["message"]
    assert "s3cret-pass" not in response.text


def test_schedules_are_listed_with_their_state(client: TestClient, conn: psycopg.Connection[Any]) -> None:
    from passito_jobs.queue.schedules import Schedule
    from passito_jobs.queue.store import Store

    assert client.get("/api/v1/schedules").json() == {"schedules": []}
    store = Store(conn)
    store.sync_schedules([Schedule("nightly", "Noop", cron="0 6 * * *", timezone="Europe/Berlin")])
    store.pause_schedule("nightly")
    (listed,) = client.get("/api/v1/schedules").json()["schedules"]
    assert (listed["name"], listed["state"], listed["cron"], listed["timezone"]) == (
        "nightly",
        "paused",
        "0 6 * * *",
        "Europe/Berlin",
    )
    assert client.get("/api/v1/schedules?x=1").status_code == 400
    conn.execute("UPDATE passito_jobs.schedules SET cron = NULL, every = 'NaN' WHERE name = 'nightly'")
    response = client.get("/api/v1/schedules")  # edited by hand: `every > 0` lets NaN through
    assert response.status_code == 200, response.text
    assert response.json()["schedules"][0]["every"] is None


def test_a_payload_with_a_number_python_cannot_read_is_shown_and_the_job_cancelled(
    client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    """The dispatch function takes any number jsonb holds; jsonb writes 1e5000 out as 5,001 digits,
    past the 4,300 Python converts. The job must still show, and be cancelled."""
    row = conn.execute("SELECT passito_jobs.dispatch('Noop', '{\"x\": 1e5000, \"y\": 1}')").fetchone()
    assert row is not None
    job_id = int(row[0])
    response = client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    assert "integer string conversion" in response.json()["payload"]["unreadable"]
    listed = client.get("/api/v1/jobs?state=pending")
    assert listed.status_code == 200, listed.text
    page = client.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert "integer string conversion" in page.text
    response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=JSON, content=b"")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    stored = conn.execute(
        "SELECT length(payload->>'x') FROM passito_jobs.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert stored == (5001,)  # the stored payload is unchanged


def test_a_control_character_in_a_message_is_escaped_once(client: TestClient) -> None:
    response = client.get("/api/v1/jobs?state=a%00b")
    assert response.status_code == 400
    assert "got 'a\\x00b'" in response.json()["error"]["message"]  # a backslash, x, 0, 0
