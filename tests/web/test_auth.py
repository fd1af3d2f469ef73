"""Authentication, roles, masking, read-only mode, CSRF and the security headers."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from starlette.testclient import TestClient

from passito_jobs.config import ConfigError
from passito_jobs.web.auth import hash_password
from passito_jobs.web.settings import WebSettings, parse_networks
from tests.web.conftest import insert_job, make_client

ADMIN_TOKEN = "admin-token-0123456789abcdef"
VIEWER_TOKEN = "viewer-token-0123456789abcdef"
SAME_SITE = {"Sec-Fetch-Site": "same-origin"}


def sha(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# API clients\nci:admin:{sha(ADMIN_TOKEN)}\ngrafana:viewer:{sha(VIEWER_TOKEN)}\n")
    return path


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    path.write_text(f"asha:admin:{hash_password('correct horse')}\nravi:viewer:{hash_password('battery')}\n")
    return path


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def student_job(conn: psycopg.Connection[Any]) -> int:
    return insert_job(
        conn,
        state="failed",
        type="SendOutpassEmail",
        payload=Jsonb(
            {
                "outpass_id": "OP-7",
                "student_name": "Asha Rao",
                "student_email": "asha.rao@example.org",
                "roll_number": "CS21B042",
                "room": "214",
                "hostel": "Kaveri",
                "nested": [{"parent_email": "parent.rao@example.org"}],
            }
        ),
        result=Jsonb({"to": "asha.rao@example.org", "kind": "student"}),
        last_error="SMTPRecipientsRefused: asha.rao@example.org was refused",
    )


def test_tokens_give_their_role(
    make_app: Callable[..., TestClient], tokens_file: Path, student_job: int, conn: psycopg.Connection[Any]
) -> None:
    client = make_app(auth=("token",), tokens_files=(tokens_file,))
    assert client.get("/api/v1/jobs").status_code == 401
    assert client.get("/api/v1/jobs", headers=bearer("wrong")).status_code == 401
    assert client.get("/api/v1/jobs", headers=bearer(VIEWER_TOKEN)).status_code == 200
    refused = client.post(f"/api/v1/jobs/{student_job}/retry", json={}, headers=bearer(VIEWER_TOKEN))
    assert refused.status_code == 403
    assert "viewer" in refused.json()["error"]["message"]
    assert conn.execute("SELECT state::text FROM passito_jobs.jobs").fetchone() == ("failed",)
    done = client.post(f"/api/v1/jobs/{student_job}/retry", headers=bearer(ADMIN_TOKEN))  # no body needed
    assert done.status_code == 200, done.text
    assert client.get("/api/v1/audit", headers=bearer(ADMIN_TOKEN)).json()["entries"][0]["actor"] == "ci"


def test_viewers_see_personal_fields_masked(
    make_app: Callable[..., TestClient], tokens_file: Path, student_job: int
) -> None:
    client = make_app(auth=("token",), tokens_files=(tokens_file,))
    body = client.get(f"/api/v1/jobs/{student_job}", headers=bearer(VIEWER_TOKEN)).json()
    assert body["payload"]["student_name"] == "•••"
    assert body["payload"]["room"] == "•••"
    assert body["payload"]["nested"] == [{"parent_email": "•••"}]
    assert body["payload"]["hostel"] == "Kaveri"  # not a personal field
    assert body["result"] == {"to": "•••", "kind": "student"}
    assert body["last_error"] == "SMTPRecipientsRefused: ••• was refused"
    page = client.get(f"/jobs/{student_job}", headers=bearer(VIEWER_TOKEN)).text
    assert "asha.rao@example.org" not in page
    assert "Asha Rao" not in page
    assert "CS21B042" not in page
    assert "Retry</button>" not in page
    admin = client.get(f"/api/v1/jobs/{student_job}", headers=bearer(ADMIN_TOKEN)).json()
    assert admin["payload"]["student_name"] == "Asha Rao"
    assert admin["masked"] is False


def test_viewers_see_only_the_kind_of_error_in_the_jobs_list(
    make_app: Callable[..., TestClient], tokens_file: Path, student_job: int, conn: psycopg.Connection[Any]
) -> None:
    """A list row has no payload to find the masked values in: the error could quote any of them."""
    insert_job(conn, state="failed", last_error="could not send to asha.rao@example.org")
    client = make_app(auth=("token",), tokens_files=(tokens_file,))
    listed = client.get("/api/v1/jobs?state=failed", headers=bearer(VIEWER_TOKEN)).json()["jobs"]
    assert [job["error"] for job in listed] == ["•••", "SMTPRecipientsRefused: •••"]
    page = client.get("/jobs?state=failed", headers=bearer(VIEWER_TOKEN))
    assert page.status_code == 200
    assert "asha.rao@example.org" not in page.text
    assert "SMTPRecipientsRefused: •••" in page.text
    admin = client.get("/api/v1/jobs?state=failed", headers=bearer(ADMIN_TOKEN)).json()["jobs"]
    assert [job["error"] for job in admin] == [
        "could not send to asha.rao@example.org",
        "SMTPRecipientsRefused: asha.rao@example.org was refused",
    ]
    admin_page = client.get("/jobs?state=failed", headers=bearer(ADMIN_TOKEN)).text
    assert "asha.rao@example.org was refused" in admin_page


def test_basic_authentication(make_app: Callable[..., TestClient], users_file: Path) -> None:
    client = make_app(auth=("basic",), users_file=users_file)
    challenge = client.get("/")
    assert challenge.status_code == 401
    assert challenge.headers["www-authenticate"].startswith("Basic")
    assert client.get("/", headers=basic("asha", "wrong")).status_code == 401
    assert client.get("/", headers=basic("nobody", "correct horse")).status_code == 401
    assert client.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
    page = client.get("/", headers=basic("asha", "correct horse"))
    assert page.status_code == 200
    assert "asha · admin" in page.text
    assert "ravi · viewer" in client.get("/", headers=basic("ravi", "battery")).text
    assert client.get("/healthz").status_code == 200  # probes need no credentials


def test_header_authentication_only_from_trusted_proxies(database_url: str) -> None:
    web: dict[str, Any] = {
        "auth": ("header",),
        "trusted_proxies": parse_networks("10.0.0.0/8"),
        "role_header": "X-Forwarded-Role",
    }
    with make_client(database_url, client=("10.1.2.3", 5000), **web) as proxied:
        assert proxied.get("/api/v1/jobs").status_code == 401
        ok = proxied.get("/", headers={"X-Forwarded-User": "asha@example.org", "X-Forwarded-Role": "admin"})
        assert ok.status_code == 200
        assert "asha@example.org · admin" in ok.text
        viewer = proxied.get("/", headers={"X-Forwarded-User": "ravi"})
        assert "ravi · viewer" in viewer.text
        bad_role = proxied.get("/", headers={"X-Forwarded-User": "x", "X-Forwarded-Role": "root"})
        assert bad_role.status_code == 403
    with make_client(database_url, client=("192.168.5.5", 5000), **web) as direct:
        forged = direct.get(
            "/api/v1/jobs", headers={"X-Forwarded-User": "admin", "X-Forwarded-Role": "admin"}
        )
        assert forged.status_code == 403
        assert "PASSITO_WEB_TRUSTED_PROXIES" in forged.json()["error"]["message"]


def test_read_only_disables_every_action(
    make_app: Callable[..., TestClient], student_job: int, conn: psycopg.Connection[Any]
) -> None:
    client = make_app(read_only=True)
    response = client.post(f"/api/v1/jobs/{student_job}/retry", json={})
    assert response.status_code == 403
    assert "read-only" in response.json()["error"]["message"]
    page = client.get(f"/jobs/{student_job}").text
    assert "Retry</button>" not in page
    assert "read-only" in page
    assert "Retry all" not in client.get("/jobs?state=failed").text
    assert conn.execute("SELECT count(*) FROM passito_jobs.audit_log").fetchone() == (0,)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


def forged(token: str) -> str:
    """`token` with its first character changed (to one it surely is not)."""
    return ("y" if token[0] == "x" else "x") + token[1:]


def test_forms_need_the_csrf_token_and_the_same_site(
    client: TestClient, student_job: int, conn: psycopg.Connection[Any]
) -> None:
    page = client.get(f"/jobs/{student_job}")
    token = csrf_of(page.text)
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Secure" not in cookie  # plain HTTP on loopback
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for data, headers in [
        ({}, SAME_SITE),
        ({"csrf": "forged" + token[6:]}, SAME_SITE),
        ({"csrf": token}, {"Sec-Fetch-Site": "cross-site"}),
        ({"csrf": token}, {"Origin": "https://evil.example"}),
    ]:
        response = client.post(f"/jobs/{student_job}/retry", data=data, headers={**headers, **form})
        assert response.status_code == 403, response.text
    assert conn.execute("SELECT state::text FROM passito_jobs.jobs").fetchone() == ("failed",)
    done = client.post(
        f"/jobs/{student_job}/retry", data={"csrf": token}, headers=SAME_SITE, follow_redirects=False
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/jobs/{student_job}?notice=retried"
    assert conn.execute("SELECT state::text FROM passito_jobs.jobs").fetchone() == ("pending",)


def test_secure_cookies_behind_a_trusted_tls_proxy(database_url: str, student_job: int) -> None:
    web: dict[str, Any] = {"trusted_proxies": parse_networks("10.0.0.1")}
    with make_client(database_url, client=("10.0.0.1", 5000), **web) as client:
        page = client.get("/", headers={"X-Forwarded-Proto": "https"})
        cookie = page.headers["set-cookie"]
        assert cookie.startswith("__Host-passito_csrf=")
        assert "Secure" in cookie
        assert page.headers["strict-transport-security"].startswith("max-age=")
    with make_client(database_url, client=("10.9.9.9", 5000), **web) as untrusted:
        page = untrusted.get("/", headers={"X-Forwarded-Proto": "https"})
        assert "Secure" not in page.headers["set-cookie"]


def test_security_headers_on_every_response(client: TestClient) -> None:
    for path in ("/", "/api/v1/jobs", "/api/v1/nothing", "/static/app.css", "/healthz"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "unsafe-inline" not in csp
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"


def test_pages_hold_no_inline_script_or_style(client: TestClient, student_job: int) -> None:
    """The CSP forbids them, so the pages must not need them."""
    for path in ("/", "/jobs", f"/jobs/{student_job}", "/workers", "/audit"):
        html = client.get(path).text
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"<style| style=| on[a-z]+=", html), path


def test_bad_users_and_tokens_files_are_refused_with_the_line(tmp_path: Path) -> None:
    from passito_jobs.web.auth import Authenticator

    users = tmp_path / "users"
    cases = [
        ("asha:root:$argon2id$v=19$x", "the role must be viewer or admin"),
        ("asha:admin:plaintext", "must be an argon2 hash"),
        ("asha admin", "name:role:secret"),
    ]
    for line, message in cases:
        users.write_text(f"# comment\n{line}\n")
        with pytest.raises(ConfigError, match=f"{users}:2: .*{re.escape(message)}"):
            Authenticator(WebSettings(auth=("basic",), users_file=users))
    tokens = tmp_path / "tokens"
    tokens.write_text("ci:admin:my-plain-token-value\n")
    with pytest.raises(ConfigError, match="sha256:HEX") as caught:
        Authenticator(WebSettings(auth=("token",), tokens_files=(tokens,)))
    assert "my-plain-token-value" not in str(caught.value)
    with pytest.raises(ConfigError, match="cannot read the users file"):
        Authenticator(WebSettings(auth=("basic",), users_file=tmp_path / "missing"))


def key_file(path: Path, key: str) -> Path:
    path.write_text(key + "\n")
    return path


def test_replicas_with_the_same_csrf_key_file_accept_each_others_forms(
    database_url: str, tmp_path: Path, student_job: int, conn: psycopg.Connection[Any]
) -> None:
    shared = key_file(tmp_path / "shared", "0123456789abcdefghijklmnopqrstuvwxyzABCD")
    copy = key_file(tmp_path / "copy", "  0123456789abcdefghijklmnopqrstuvwxyzABCD  ")  # same key
    other = key_file(tmp_path / "other", "ZYXWVUTSRQPONMLKJIHGFEDCBA9876543210zyxwvu")
    form = {**SAME_SITE, "Content-Type": "application/x-www-form-urlencoded"}
    with make_client(database_url, csrf_key_file=shared) as first:
        page = first.get(f"/jobs/{student_job}")
        token = csrf_of(page.text)
        assert page.cookies["passito_csrf"] == token
    for others in ({"csrf_key_file": other}, {}):
        with make_client(database_url, **others) as stranger:
            stranger.cookies.set("passito_csrf", token)
            refused = stranger.post(f"/jobs/{student_job}/retry", data={"csrf": token}, headers=form)
            assert refused.status_code == 403, (others, refused.text)
    assert conn.execute("SELECT state::text FROM passito_jobs.jobs").fetchone() == ("failed",)
    with make_client(database_url, csrf_key_file=copy) as second:
        second.cookies.set("passito_csrf", token)
        assert second.get("/").headers.get("set-cookie") is None  # its token is kept, not renewed
        done = second.post(
            f"/jobs/{student_job}/retry", data={"csrf": token}, headers=form, follow_redirects=False
        )
        assert done.status_code == 303, done.text
    assert conn.execute("SELECT state::text FROM passito_jobs.jobs").fetchone() == ("pending",)
