"""What every request goes through before its page or API call: the URL and a form must be
UTF-8 (never silently read with U+FFFD in place of the bytes sent), the Host must be this machine
when there is no authentication, and the query of a form's POST is checked like any other."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from tests.web.conftest import insert_job, make_client
from tests.web.test_api_queues import audit, flows
from tests.web.test_auth import ADMIN_TOKEN, SAME_SITE, bearer, csrf_of, sha

JSON = {"Content-Type": "application/json"}
FORM = {**SAME_SITE, "Content-Type": "application/x-www-form-urlencoded"}
NOT_UTF8 = ("%ff", "%C0%AF", "%ed%a0%80")  # a stray byte, an overlong "/", a lone surrogate


@pytest.mark.parametrize("name", NOT_UTF8)
def test_a_queue_name_that_is_not_utf8_is_refused_and_creates_nothing(
    client: TestClient, conn: psycopg.Connection[Any], name: str
) -> None:
    token = csrf_of(client.get("/jobs").text)
    for method, path, headers, body in [
        ("POST", f"/api/v1/queues/{name}/pause", JSON, b""),
        ("POST", f"/api/v1/queues/{name}/resume", JSON, b""),
        ("PATCH", f"/api/v1/queues/{name}/limits", JSON, b'{"concurrency": 1}'),
        ("POST", f"/queues/{name}/pause", FORM, f"csrf={token}".encode()),
        ("POST", f"/schedules/{name}/pause", FORM, f"csrf={token}".encode()),
    ]:
        response = client.request(method, path, content=body, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert "the path is not valid UTF-8" in response.text, path
        if path.startswith("/api/"):
            assert response.json()["error"]["message"] == "the path is not valid UTF-8"
        else:
            assert '<p class="notice error">' in response.text
    assert (flows(conn), audit(conn)) == ({}, [])


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("queue=%ff", "query parameter 'queue' is not valid UTF-8"),
        ("tag=%C0%AF", "query parameter 'tag' is not valid UTF-8"),
        ("type=%ED%A0%80", "query parameter 'type' is not valid UTF-8"),
        ("state=failed&queue=a%ffb", "query parameter 'queue' is not valid UTF-8"),
        ("%ff=1", "a query parameter name is not valid UTF-8"),
    ],
)
def test_a_query_that_is_not_utf8_is_refused(client: TestClient, query: str, message: str) -> None:
    api = client.get(f"/api/v1/jobs?{query}")
    assert api.status_code == 400, api.text
    assert api.json()["error"]["message"] == message
    page = client.get(f"/jobs?{query}")
    assert page.status_code == 400
    assert message.replace("'", "&#39;") in page.text


def test_valid_utf8_is_read_as_sent(client: TestClient, conn: psycopg.Connection[Any]) -> None:
    job = insert_job(conn, state="failed", queue="é-queue")
    listed = client.get("/api/v1/jobs?queue=%C3%A9-queue").json()["jobs"]
    assert [j["id"] for j in listed] == [job]
    assert client.post("/api/v1/queues/%C3%A9-queue/pause", headers=JSON).json()["queue"] == "é-queue"


def test_a_form_field_that_is_not_utf8_is_refused(client: TestClient, conn: psycopg.Connection[Any]) -> None:
    job = insert_job(conn, state="failed")
    token = csrf_of(client.get("/jobs").text)
    for body, message in [
        (f"csrf={token}&action=%ff", "form field &#39;action&#39; is not valid UTF-8"),
        (f"csrf={token}&action=retry&queue=%C0%AF", "form field &#39;queue&#39; is not valid UTF-8"),
        (f"csrf={token}&action=retry&%ed%a0%80=x", "a form field name is not valid UTF-8"),
    ]:
        response = client.post("/jobs/bulk", content=body.encode(), headers=FORM)
        assert response.status_code == 400, body
        assert message in response.text, response.text
    assert conn.execute("SELECT state::text FROM passito_jobs.jobs WHERE id = %s", (job,)).fetchone() == (
        "failed",
    )


def test_a_form_with_too_many_fields_says_so(client: TestClient) -> None:
    token = csrf_of(client.get("/jobs").text)
    body = f"csrf={token}&action=retry&" + "&".join(f"f{i}=x" for i in range(60))
    response = client.post("/jobs/bulk", content=body.encode(), headers=FORM)
    assert response.status_code == 400
    assert "too many form fields (at most 50)" in response.text


def test_without_authentication_only_requests_for_this_machine_are_answered(
    make_app: Callable[..., TestClient], conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """DNS rebinding: attacker.example first resolves to the attacker, then to 127.0.0.1; its
    page's requests are then same-origin to the browser, but keep their Host."""
    client = make_app()
    rebound = {
        "Host": "attacker.example:18081",
        "Origin": "http://attacker.example:18081",
        "Sec-Fetch-Site": "same-origin",
    }
    refused = client.post("/api/v1/queues/slow/pause", headers={**rebound, **JSON})
    assert refused.status_code == 421, refused.text
    message = refused.json()["error"]["message"]
    assert "answers only requests for localhost, 127.0.0.1 or [::1]" in message
    assert "'attacker.example:18081'" in message
    page = client.get("/", headers={"Host": "attacker.example:18081"})
    assert page.status_code == 421
    assert '<p class="notice error">' in page.text
    assert client.get("/api/v1/jobs", headers={"Host": "127.0.0.1.nip.io"}).status_code == 421
    assert (flows(conn), audit(conn)) == ({}, [])
    for host in ("localhost:8080", "LOCALHOST", "127.0.0.1", "127.1.2.3:9", "[::1]:8080"):
        assert client.get("/api/v1/jobs", headers={"Host": host}).status_code == 200, host
    tokens = tmp_path / "tokens"
    tokens.write_text(f"ci:admin:{sha(ADMIN_TOKEN)}\n")
    authenticated = make_app(auth=("token",), tokens_files=(tokens,))
    named = authenticated.get("/api/v1/jobs", headers={"Host": "jobs.example.org", **bearer(ADMIN_TOKEN)})
    assert named.status_code == 200, named.text


def test_a_form_post_refuses_an_unknown_query_parameter(
    client: TestClient, conn: psycopg.Connection[Any]
) -> None:
    """A filter in the query of a bulk action is not the form's filter: refused, not dropped
    (the bulk action would otherwise apply to every job)."""
    failed = insert_job(conn, state="failed", queue="emails")
    other = insert_job(conn, state="failed", queue="reports")
    token = csrf_of(client.get("/jobs").text)
    for path, body in [
        ("/jobs/bulk?queue=emails", f"csrf={token}&action=retry&confirm=yes"),
        ("/jobs/bulk?state=failed", f"csrf={token}&action=retry"),
        (f"/jobs/{failed}/retry?x=%00", f"csrf={token}"),
        (f"/jobs/{failed}/cancel?notice=retried", f"csrf={token}"),
    ]:
        response = client.post(path, content=body.encode(), headers=FORM, follow_redirects=False)
        assert response.status_code == 400, (path, response.text)
        assert "unknown parameter" in response.text, path
        assert '<p class="notice error">' in response.text
    states = conn.execute("SELECT state::text FROM passito_jobs.jobs WHERE id IN (%s, %s)", (failed, other))
    assert [row[0] for row in states] == ["failed", "failed"]
    assert audit(conn) == []


def test_the_bulk_action_is_post_only(client: TestClient) -> None:
    for method in ("GET", "HEAD"):
        response = client.request(method, "/jobs/bulk")
        assert response.status_code == 405, method
        assert response.headers["allow"] == "POST"
    assert "method not allowed" in client.get("/jobs/bulk").text
    assert client.get("/jobs/bulks").status_code == 400  # any other word is a bad job id


def test_a_schedule_name_with_a_line_break_is_a_400_with_the_reason(client: TestClient) -> None:
    token = csrf_of(client.get("/jobs").text)
    page = client.post("/schedules/a%0Ab/pause", content=f"csrf={token}".encode(), headers=FORM)
    assert page.status_code == 400
    assert "schedule name must not contain control characters" in page.text


def test_a_trailing_slash_is_not_redirected_to_the_clients_host(client: TestClient) -> None:
    for path in ("/jobs/", "/api/v1/jobs/", "/workers/", "/queues/emails/pause/"):
        response = client.get(path, headers={"Host": "localhost:8080"}, follow_redirects=False)
        assert response.status_code == 404, path
        assert "location" not in response.headers
    assert client.get("/api/v1/jobs/").json()["error"]["message"] == "no such page"
    assert client.get("/").status_code == 200


def test_readyz_does_not_tell_where_the_database_is(caplog: pytest.LogCaptureFixture) -> None:
    """The probe needs no credentials: the address and the error are for the server's log."""
    url = "postgresql://passito:s3cret-pass@127.0.0.1:1/nosuchdb"
    with make_client(url) as client, caplog.at_level("WARNING"):
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.text == "database unavailable\n"
    logged = [r.getMessage() for r in caplog.records if r.name == "passito_jobs.web"]
    assert any("127.0.0.1:1/nosuchdb" in line for line in logged), logged
    assert not any("s3cret-pass" in line for line in logged)


def test_a_csrf_token_the_server_did_not_issue_is_refused(
    make_app: Callable[..., TestClient], conn: psycopg.Connection[Any]
) -> None:
    """Double submit alone trusts any cookie: one planted by someone else (a sibling site over
    plain HTTP) with the same value in the form would pass. The token must be signed here."""
    job = insert_job(conn, state="failed")
    client = make_app()
    forged = "A" * 43
    for token in ("x", forged, f"{forged}.{'B' * 43}"):
        client.cookies.set("passito_csrf", token)
        response = client.post(f"/jobs/{job}/retry", data={"csrf": token}, headers=FORM)
        assert response.status_code == 403, (token, response.text)
        assert "reload the page" in response.text
    other = make_app()  # another process (or the same after a restart): another key
    issued_there = csrf_of(other.get("/jobs").text)
    client.cookies.set("passito_csrf", issued_there)
    refused = client.post(f"/jobs/{job}/retry", data={"csrf": issued_there}, headers=FORM)
    assert refused.status_code == 403
    assert conn.execute("SELECT state::text FROM passito_jobs.jobs").fetchone() == ("failed",)
    page = client.get(f"/jobs/{job}")  # reloading the page renews the cookie
    token = csrf_of(page.text)
    assert token != issued_there
    assert page.headers["set-cookie"].startswith(f"passito_csrf={token};")
    done = client.post(f"/jobs/{job}/retry", data={"csrf": token}, headers=FORM, follow_redirects=False)
    assert done.status_code == 303, done.text
    again = client.get(f"/jobs/{job}")  # a cookie this process issued is kept
    assert csrf_of(again.text) == token
    assert "set-cookie" not in again.headers
