"""Test helpers: waiting on conditions with deadlines, running the CLI and workers."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")

TESTS = Path(__file__).parent


def wait_for(
    condition: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {message} (last: {last!r})")
        time.sleep(interval)
        last = condition()
    return last


def run_cli(
    args: Sequence[str], env: dict[str, str], *, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: PLW1510 - callers assert on returncode
        [sys.executable, "-m", "passito_jobs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=None if input else subprocess.DEVNULL,
    )


def run_main(args: Sequence[str], *, stdin: str = "") -> tuple[int, str, str]:
    """`passito-jobs ARGS` in this process (fast enough for hundreds of runs): the exit code,
    stdout and stderr. Settings come from os.environ. An exception the command lets escape
    is raised here, as it would have printed a traceback."""
    from passito_jobs.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            _replaced_stdin(io.StringIO(stdin)),
        ):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_passito", False)]:
            root.removeHandler(handler)  # it writes to the StringIO above
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def _replaced_stdin(stream: io.StringIO) -> Any:
    saved = sys.stdin
    sys.stdin = stream
    try:
        yield
    finally:
        sys.stdin = saved


class WorkerProcess:
    """A `passito-jobs worker` subprocess with its log captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "passito_jobs", "worker", "--import", "tests.jobtypes", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=TESTS.parent,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()


def job_state(conn: psycopg.Connection[Any], job_id: int) -> str:
    row = conn.execute("SELECT state::text FROM passito_jobs.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None, f"no job #{job_id}"
    return str(row[0])


async def wal_writes(
    conn: psycopg.AsyncConnection[Any], observer: psycopg.Connection[Any]
) -> tuple[int, int]:
    """The WAL writes of `conn`'s own backend so far, and how many times it wrote because the
    WAL buffers were full (PostgreSQL 18's per-backend statistics), read through `observer`. A
    commit that waits for the WAL flush writes at least once itself; one that does not, never,
    unless the buffers were full."""
    await conn.execute("SELECT pg_stat_force_next_flush()")  # flushed before it answers
    row = observer.execute(
        "SELECT (SELECT coalesce(sum(writes), 0)::int FROM pg_stat_get_backend_io(%(pid)s)"
        "        WHERE object = 'wal'),"
        "       (SELECT wal_buffers_full::int FROM pg_stat_get_backend_wal(%(pid)s))",
        {"pid": conn.info.backend_pid},
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1] or 0)


def count_states(conn: psycopg.Connection[Any]) -> dict[str, int]:
    return {
        row[0]: row[1]
        for row in conn.execute("SELECT state::text, count(*) FROM passito_jobs.jobs GROUP BY state")
    }


def processes(matching: Callable[[Path], bool]) -> list[int]:
    """The ids of the running processes whose /proc folder `matching` accepts; a process that
    ends meanwhile, or whose files are not ours to read (OSError), does not match."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if matching(proc):
                    found.append(int(proc.name))
    return found


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 5) -> tuple[int, bytes]:
    """(status, body) of a GET; (0, b"") when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""
