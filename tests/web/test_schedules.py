"""The schedules in the admin API and on the Schedules page: the list (name, type, cron or every,
next and last run with its job, paused, stale) and pausing and resuming one (admins only, not
read-only, CSRF-checked from the page, written to the audit log)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from passito_jobs.queue.schedules import Schedule
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
Conn = psycopg.Connection[Any]


def paused(conn: Conn) -> dict[str, bool]:
    return dict(conn.execute("SELECT name, paused FROM passito_jobs.schedules ORDER BY name").fetchall())


def audit(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT actor, action, source, job_ids, changed_ids, filter FROM passito_jobs.audit_log ORDER BY id"
    ).fetchall()


@pytest.fixture
def schedules(conn: Conn) -> int:
    """Three schedules: `nightly` ran once (its job's id returned), `pulse` never, `gone` is stale."""
    store = Store(conn)
    store.sync_schedules([Schedule("gone", "Noop", every="1m")])
    store.sync_schedules(
        [
            Schedule("nightly", "SendReport", cron="0 6 * * *", timezone="Asia/Kolkata", queue="reports"),
            Schedule("pulse", "Noop", every="30s"),
        ]
    )
    job_id = insert_job(conn, type="SendReport", queue="reports", state="completed")
    last = datetime.now(UTC) - timedelta(hours=3)
    conn.execute(
        "UPDATE passito_jobs.schedules SET last_slot = %s, last_job_id = %s, next_slot = %s "
        "WHERE name = 'nightly'",
        (last, job_id, last + timedelta(days=1)),
    )
    return job_id


def test_the_page_lists_each_schedule_with_its_runs_and_state(
    client: TestClient, conn: Conn, schedules: int
) -> None:
    page = client.get("/schedules")
    assert page.status_code == 200
    html = page.text
    assert 'href="/schedules" aria-current="page"' in html
    assert "<code>0 6 * * *</code>" in html
    assert "Asia/Kolkata" in html
    assert "every 30s" in html
    assert f'<a href="/jobs/{schedules}">#{schedules}</a>' in html
    assert "3.0h ago" in html  # the last run
    assert "in 21.0h" in html  # the next
    assert "never" in html  # pulse has not run
    assert html.count('class="badge schedule-active"') == 2
    assert 'class="badge schedule-stale"' in html
    assert 'action="/schedules/nightly/pause"' in html
    assert 'action="/schedules/gone/' not in html  # a stale schedule has no button
    assert client.get("/schedules?x=1").status_code == 400


def test_the_page_pauses_and_resumes_with_a_csrf_checked_form(
    client: TestClient, conn: Conn, schedules: int
) -> None:
    token = csrf_of(client.get("/schedules").text)
    refused = client.post("/schedules/nightly/pause", data={"csrf": forged(token)}, headers=FORM)
    assert refused.status_code == 403
    cross = client.post(
        "/schedules/nightly/pause", data={"csrf": token}, headers={**FORM, "Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403
    assert (paused(conn)["nightly"], audit(conn)) == (False, [])
    done = client.post("/schedules/nightly/pause", data={"csrf": token}, headers=FORM, follow_redirects=False)
    assert done.status_code == 303
    assert done.headers["location"] == "/schedules?notice=schedule-paused"
    after = client.get(done.headers["location"]).text
    assert "Schedule paused" in after
    assert 'action="/schedules/nightly/resume"' in after
    assert 'class="badge schedule-paused"' in after
    client.post("/schedules/nightly/resume", data={"csrf": token}, headers=FORM)
    assert paused(conn) == {"gone": False, "nightly": False, "pulse": False}
    assert [row[1:] for row in audit(conn)] == [
        ("pause", "dashboard", [], [], {"schedule": "nightly"}),
        ("resume", "dashboard", [], [], {"schedule": "nightly"}),
    ]
    assert "schedule=nightly" in client.get("/audit").text


def test_pause_and_resume_through_the_api_are_audited(client: TestClient, conn: Conn, schedules: int) -> None:
    done = client.post("/api/v1/schedules/pulse/pause", headers=JSON)
    assert done.status_code == 200, done.text
    assert done.json() | {"audit_id": 0} == {
        "schedule": "pulse",
        "action": "pause",
        "paused": True,
        "audit_id": 0,
    }
    listed = {s["name"]: s["state"] for s in client.get("/api/v1/schedules").json()["schedules"]}
    assert listed == {"gone": "stale", "nightly": "active", "pulse": "paused"}
    assert client.post("/api/v1/schedules/pulse/resume", json={}).json()["paused"] is False
    assert paused(conn)["pulse"] is False
    assert [row[:3] for row in audit(conn)] == [("anonymous", "pause", "api"), ("anonymous", "resume", "api")]


def test_viewers_and_a_read_only_dashboard_cannot_pause_a_schedule(
    make_app: Callable[..., TestClient], tokens_file: Path, users_file: Path, conn: Conn, schedules: int
) -> None:
    tokens = make_app(auth=("token",), tokens_files=(tokens_file,))
    refused = tokens.post("/api/v1/schedules/nightly/pause", headers=bearer(VIEWER_TOKEN))
    assert refused.status_code == 403
    assert tokens.post("/api/v1/schedules/nightly/pause").status_code == 401
    read_only = make_app(read_only=True)
    refused = read_only.post("/api/v1/schedules/nightly/pause", json={})
    assert refused.status_code == 403
    assert "read-only" in refused.json()["error"]["message"]
    assert "Pause</button>" not in read_only.get("/schedules").text
    viewer = make_app(auth=("basic",), users_file=users_file).get(
        "/schedules", headers=basic("ravi", "battery")
    )
    assert "nightly" in viewer.text
    assert "Pause</button>" not in viewer.text
    assert (paused(conn)["nightly"], audit(conn)) == (False, [])
    done = tokens.post("/api/v1/schedules/nightly/pause", headers=bearer(ADMIN_TOKEN))
    assert done.status_code == 200, done.text
    assert audit(conn)[0][:3] == ("ci", "pause", "api")


HOSTILE = [
    ("/api/v1/schedules/nobody/pause", b"", 404, "no schedule is named 'nobody'"),
    ("/api/v1/schedules/%20%20/pause", b"", 400, "schedule name must be a non-empty string"),
    ("/api/v1/schedules/a%00b/pause", b"", 400, "must not contain NUL"),
    ("/api/v1/schedules/a%01b/resume", b"", 400, "must not contain control characters"),
    ("/api/v1/schedules/a%0Ab/pause", b"", 400, "must not contain control characters"),
    ("/api/v1/schedules/a%0Db/resume", b"", 400, "must not contain control characters"),
    ("/api/v1/schedules/" + "s" * 129 + "/pause", b"", 400, "at most 128 characters"),
    ("/api/v1/schedules/nightly/pause", b'{"all": true}', 400, "takes an empty object"),
    ("/api/v1/schedules/nightly/pause", b"[", 400, "not valid JSON"),
    ("/api/v1/schedules/nightly/pause?x=1", b"", 400, "unknown parameter"),
]


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0][18:48] + repr(c[1]) for c in HOSTILE])
def test_a_bad_schedule_pause_is_a_4xx_and_changes_nothing(
    client: TestClient, conn: Conn, schedules: int, case: tuple[str, bytes, int, str]
) -> None:
    path, body, status, message = case
    response = client.post(path, content=body, headers=JSON)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]["message"]
    assert (paused(conn), audit(conn)) == ({"gone": False, "nightly": False, "pulse": False}, [])
