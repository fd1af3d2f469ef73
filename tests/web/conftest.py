"""Fixtures of the dashboard tests: the app on this test's database, in process or as a server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from passito_jobs.health.checks import Thresholds
from passito_jobs.web.app import create_app
from passito_jobs.web.settings import WebSettings
from tests.helpers import TESTS

BROWSER = "/usr/bin/chromium"
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def make_client(
    database_url: str, *, client: tuple[str, int] = ("127.0.0.1", 50000), **web: Any
) -> TestClient:
    """A client of the app with these WebSettings, its requests coming from `client`."""
    app = create_app(WebSettings(**web), database_url, thresholds=Thresholds())
    return TestClient(app, base_url="http://127.0.0.1:8080", raise_server_exceptions=True, client=client)


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., TestClient]]:
    """Builds a client of the app with these WebSettings; closed after the test."""
    clients: list[TestClient] = []

    def build(**web: Any) -> TestClient:
        client = make_client(database_url, **web)
        client.__enter__()
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_app: Callable[..., TestClient]) -> TestClient:
    """The app without authentication (loopback): everyone is an admin."""
    return make_app()


@dataclass
class Server:
    """A `passito-jobs web` subprocess."""

    proc: subprocess.Popen[str]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


def start_server(env: dict[str, str], log_path: Path, *args: str, timeout: float = 60) -> Server:
    """Start `passito-jobs web --port 0 ARGS` and wait for its "dashboard on http://..." line."""
    log = open(log_path, "w")  # noqa: SIM115 - the child writes it; closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "passito_jobs", "web", "--port", "0", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=TESTS.parent,
    )
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"dashboard on (http://\S+?)/ ", log_path.read_text())
        if found:
            return Server(proc, found.group(1), log_path)
        if proc.poll() is not None:
            raise AssertionError(f"the dashboard exited {proc.returncode}: {log_path.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"the dashboard did not start: {log_path.read_text()}")


def stop_server(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(20)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(10)


@pytest.fixture
def web_server(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Starts `passito-jobs web` subprocesses (stopped after the test)."""
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Server:
        server = start_server({**cli_env, **(env or {})}, tmp_path / f"web-{len(servers)}.log", *args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        stop_server(server)


def insert_job(conn: psycopg.Connection[Any], **columns: Any) -> int:
    """A job row as a test needs it (states and times a real run would take long to reach)."""
    columns.setdefault("type", "Noop")
    names = ", ".join(columns)
    marks = ", ".join(f"%({name})s" for name in columns)
    row = conn.execute(
        f"INSERT INTO passito_jobs.jobs ({names}) VALUES ({marks}) RETURNING id", columns
    ).fetchone()
    assert row is not None
    return int(row[0])


def have_browser() -> bool:
    return os.access(BROWSER, os.X_OK)
