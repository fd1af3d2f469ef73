"""`passito-jobs web` as a process: where it may listen without authentication, what it says at
start-up, and `web hash-password`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from tests.helpers import http_get, run_cli
from tests.web.conftest import Server


def test_a_public_address_without_authentication_is_refused(cli_env: dict[str, str]) -> None:
    result = run_cli(["web", "--host", "0.0.0.0", "--port", "0"], cli_env)
    assert result.returncode == 2
    assert "would listen on 0.0.0.0 without authentication: set PASSITO_WEB_AUTH" in result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr


def test_loopback_without_authentication_says_so(web_server: Callable[..., Server]) -> None:
    server = web_server()
    assert "no authentication: listening on loopback only" in server.log()
    status, body = http_get(server.url + "/api/v1/jobs")
    assert status == 200
    assert json.loads(body)["jobs"] == []


def test_unauthenticated_requests_to_a_public_server_are_refused(
    web_server: Callable[..., Server], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("ci:viewer:sha256:" + "0" * 64 + "\n")
    server = web_server(
        "--host", "0.0.0.0", env={"PASSITO_WEB_AUTH": "token", "PASSITO_WEB_TOKENS_FILE": str(tokens)}
    )
    assert "authentication: token" in server.log()
    url = server.url.replace("0.0.0.0", "127.0.0.1")
    for path in ("/", "/api/v1/jobs", "/api/v1/health", "/jobs/1"):
        status, body = http_get(url + path)
        assert status == 401, (path, body)
    assert http_get(url + "/healthz")[0] == 200  # the probes stay open
    assert http_get(url + "/readyz")[0] == 200


def test_bad_settings_stop_it_with_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    for env, message in [
        ({"PASSITO_WEB_AUTH": "magic"}, "PASSITO_WEB_AUTH: 'magic' is not an authentication mode"),
        ({"PASSITO_WEB_AUTH": "basic"}, "PASSITO_WEB_USERS_FILE is required by `basic`"),
        ({"PASSITO_WEB_AUTH": "header"}, "PASSITO_WEB_TRUSTED_PROXIES is required by `header`"),
        ({"PASSITO_WEB_TRUSTED_PROXIES": "10.0.0.300"}, "'10.0.0.300' is not an IP address or network"),
        (
            {"PASSITO_WEB_AUTH": "basic", "PASSITO_WEB_USERS_FILE": str(tmp_path / "none")},
            "cannot read the users file",
        ),
        ({"PASSITO_WEB_PORT": "70000"}, "PASSITO_WEB_PORT must be a port number"),
    ]:
        result = run_cli(["web"], {**cli_env, **env})
        assert result.returncode == 2, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_hash_password_reads_stdin(cli_env: dict[str, str]) -> None:
    result = run_cli(["web", "hash-password"], cli_env, input="correct horse\n")
    assert result.returncode == 0, result.stderr
    hashed = result.stdout.strip()
    assert hashed.startswith("$argon2id$")
    assert PasswordHasher().verify(hashed, "correct horse")
    token = run_cli(["web", "hash-password", "--token"], cli_env, input="abc")
    assert token.stdout.strip() == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    empty = run_cli(["web", "hash-password"], cli_env, input="\n")
    assert empty.returncode == 2
    assert "no password on standard input" in empty.stderr


@pytest.mark.slow
def test_a_users_file_made_with_hash_password_logs_in(
    web_server: Callable[..., Server], cli_env: dict[str, str], tmp_path: Path
) -> None:
    hashed = run_cli(["web", "hash-password"], cli_env, input="s3cret pass\n").stdout.strip()
    users = tmp_path / "users"
    users.write_text(f"asha:admin:{hashed}\n")
    server = web_server(env={"PASSITO_WEB_AUTH": "basic", "PASSITO_WEB_USERS_FILE": str(users)})
    request = urllib.request.Request(server.url + "/api/v1/jobs")
    manager = urllib.request.HTTPPasswordMgrWithDefaultRealm()
    manager.add_password(None, server.url, "asha", "s3cret pass")
    opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(manager))
    with opener.open(request, timeout=10) as response:
        assert response.status == 200
    assert http_get(server.url + "/api/v1/jobs")[0] == 401
    assert "s3cret" not in server.log()


def test_sigterm_stops_it(web_server: Callable[..., Server]) -> None:
    server = web_server()
    server.proc.terminate()
    assert server.proc.wait(20) == 0


def test_it_runs_without_the_package_installed_as_a_script() -> None:
    """`python -m passito_jobs web --help` lists the command (the CLI's parser block)."""
    out = subprocess.run(
        [sys.executable, "-m", "passito_jobs", "web", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--host" in out
    assert "hash-password" in out


def test_a_bad_csrf_key_file_stops_it_with_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    secret = "kept-out-of-every-message"  # too short: 25 characters
    cases: dict[str, tuple[str, str]] = {}
    for name, content, message in [
        ("empty", b"", "is empty"),
        ("blank", b"  \n\t\n", "is empty"),
        ("short", f"  {secret}\n".encode(), "holds fewer than 32 characters"),
        ("binary", b"\xff\xfe" + b"x" * 40, "is not UTF-8 text"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        cases[name] = (str(path), message)
    cases["missing"] = (str(tmp_path / "missing"), "cannot read")
    cases["directory"] = (str(tmp_path), "cannot read")
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked"
        locked.write_text("x" * 40)
        locked.chmod(0)
        cases["unreadable"] = (str(locked), "cannot read")
    for name, (path, message) in cases.items():
        result = run_cli(["web", "--port", "0"], {**cli_env, "PASSITO_WEB_CSRF_KEY_FILE": path})
        assert result.returncode == 2, (name, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, (name, result.stderr)
        assert "PASSITO_WEB_CSRF_KEY_FILE" in lines[0], name
        assert message in lines[0], (name, lines[0])
        assert secret not in result.stderr + result.stdout
        assert "kept-out" not in result.stderr + result.stdout
