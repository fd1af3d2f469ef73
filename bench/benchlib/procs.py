"""Processes the benchmark starts, and the CPU time they and the PostgreSQL server use.

CPU comes from /proc/<pid>/stat (user + system time, the process's threads included, plus the
children it has waited for), so it is counted in seconds of CPU, not wall time, and does not
drift with the machine's speed the way rates do. A process that has exited is read from the
resource usage its wait returned.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
STDERR = 2  # what the measured processes print goes to stderr: stdout carries the report


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after its last ')'.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, *, children: bool = True) -> float | None:
    """User + system CPU of `pid` (and of its waited-for children); None when it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # After the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def tree_cpu_seconds(root: int) -> float | None:
    """CPU of `root` and all its descendants alive now, plus the exited ones it has reaped.

    Summed over a PostgreSQL server's postmaster this is the whole server: backends, autovacuum,
    checkpointer, WAL writer. A backend that exits is reaped by the postmaster, so its time
    moves into the postmaster's children's time and stays counted.
    """
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    total = cpu_seconds(root)
    if total is None:
        return None
    pending = list(parents.get(root, []))
    while pending:
        pid = pending.pop()
        total += cpu_seconds(pid, children=False) or 0.0
        pending.extend(parents.get(pid, []))
    return total


class Proc:
    """A child process whose CPU time can be read while it runs and after it exited."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cwd: str | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = STDERR,
        name: str = "",
    ) -> None:
        self.name = name or Path(argv[0]).name
        self.popen = subprocess.Popen(
            list(argv), env=dict(env), cwd=cwd, stdin=stdin, stdout=stdout, text=True
        )
        self._final_cpu: float | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        if self.popen.returncode is None:
            self._reap(block=False)
        return self.popen.returncode

    def cpu(self) -> float:
        """CPU seconds used so far (all of it, once the process has exited)."""
        if self.returncode is not None:
            return self._final_cpu or 0.0
        now = cpu_seconds(self.pid)
        if now is None:  # exited between the two looks
            self.wait(10)
            return self._final_cpu or 0.0
        return now

    def _reap(self, *, block: bool) -> bool:
        try:
            pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            return False
        self._final_cpu = usage.ru_utime + usage.ru_stime
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        return True

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.popen.returncode is None:
            if self._reap(block=False):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} (pid {self.pid}) did not exit within {timeout:.0f}s")
            time.sleep(0.02)
        return int(self.popen.returncode or 0)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait; SIGKILL if it does not exit in time."""
        if self.returncode is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except TimeoutError:
                self.popen.kill()
                return self.wait(10)
        return int(self.popen.returncode or 0)


def stop_all(procs: Sequence[Proc], timeout: float = 60) -> None:
    """SIGTERM to all at once (a second one would tell a worker to give up its jobs), then wait."""
    for proc in procs:
        if proc.returncode is None:
            proc.popen.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except TimeoutError:
            proc.popen.kill()
            proc.wait(10)
