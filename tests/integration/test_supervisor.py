"""`passito-jobs supervise` with real worker processes on a real PostgreSQL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from passito_jobs import JobRequest, dispatch, dispatch_many
from passito_jobs.queue.store import Store
from tests.helpers import count_states, job_state, run_cli, wait_for

Conn = psycopg.Connection[Any]
STATUS_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] Queue: (\d+) jobs \| Workers: (\d+)$", re.MULTILINE)
SPAWNED = re.compile(r"^Spawned worker with PID: (\d+)$", re.MULTILINE)


class Supervisor:
    """A `passito-jobs supervise` process; its output (and its workers') goes to a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        with log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "passito_jobs", "supervise", *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def output(self) -> str:
        return self.log_path.read_text()

    def pids(self) -> list[int]:
        return [int(pid) for pid in SPAWNED.findall(self.output())]

    def last_status(self) -> tuple[int, int] | None:
        found = STATUS_LINE.findall(self.output())
        return (int(found[-1][0]), int(found[-1][1])) if found else None

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture
def supervisor(cli_env: dict[str, str], tmp_path: Path) -> Any:
    started: list[Supervisor] = []

    def start(*args: str) -> Supervisor:
        started.append(Supervisor(cli_env, tmp_path / f"supervisor{len(started)}.log", *args))
        return started[-1]

    yield start
    for proc in started:
        proc.stop()


FAST = [
    "--check-interval",
    "0.3",
    "--cooldown",
    "1",
    "--scale-up-threshold",
    "5",
    "--scale-down-threshold",
    "2",
]


def stopped(output: str) -> int:
    """Workers stopped by scaling down, over every "Scaling DOWN" line."""
    return sum(int(n) for n in re.findall(r"^Scaling DOWN: Stopping (\d+) worker\(s\)", output, re.M))


def spawned(output: str) -> int:
    """Workers started by scaling up, over every "Scaling UP" line."""
    return sum(int(n) for n in re.findall(r"^Scaling UP: Spawning (\d+) worker\(s\)", output, re.M))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_burst_scales_workers_up_completes_and_scales_back_to_the_minimum(
    supervisor: Any, conn: Conn
) -> None:
    sup = supervisor("--min-workers", "1", "--max-workers", "4", "--concurrency", "2", *FAST)
    # Deadlines for a loaded machine: starting a worker process can take many seconds there.
    wait_for(lambda: sup.last_status() == (0, 1), timeout=120, message="one idle worker")

    dispatch_many([JobRequest("Sleep", {"seconds": 0.2}) for _ in range(60)], conn=conn)
    # Up to the maximum: in one step when the supervisor sees the whole burst, in several when
    # the first worker has already run part of it (a slow supervisor), so count every step.
    wait_for(lambda: spawned(sup.output()) == 3, timeout=120, message="scale up by 3 workers")
    wait_for(lambda: count_states(conn) == {"completed": 60}, timeout=180, message="60 completed jobs")
    # Back to the minimum: in one step when the supervisor sees the queue empty, in several
    # when it checks while the last jobs still run (a slow machine), so count every step.
    wait_for(lambda: stopped(sup.output()) == 3, timeout=120, message="scale down by 3 workers")
    wait_for(lambda: sup.last_status() == (0, 1), timeout=60, message="back to one worker")

    assert sup.stop() == 0
    out = sup.output()
    assert out.startswith("Job Supervisor started\n"), out[:300]
    assert "Configuration: min workers 1, max workers 4, scale up above 5 jobs/worker" in out
    assert len(sup.pids()) == 4
    assert re.search(r"^Scaling UP: Spawning \d worker\(s\) \(load \d+, 5 per worker\)$", out, re.M)
    assert "[DONE]" in out  # the workers' own log lines pass through
    assert not any(alive(pid) for pid in sup.pids())


@pytest.mark.slow
@pytest.mark.slow
def test_a_paused_queue_adds_no_workers_and_a_limited_one_at_most_its_capacity(
    supervisor: Any, conn: Conn
) -> None:
    """Flow control (docs/flow-control.md): supervise scales on the work a claim could take."""
    flow = Store(conn).flow
    flow.pause("default")
    sup = supervisor("--min-workers", "1", "--max-workers", "4", "--concurrency", "2", *FAST)
    wait_for(lambda: sup.last_status() == (0, 1), timeout=120, message="one idle worker")
    dispatch_many([JobRequest("Sleep", {"seconds": 0.1}) for _ in range(60)], conn=conn)
    seen = len(STATUS_LINE.findall(sup.output()))
    wait_for(
        lambda: len(STATUS_LINE.findall(sup.output())) >= seen + 5,
        timeout=60,
        message="five checks after the backlog of the paused queue",
    )
    assert set(STATUS_LINE.findall(sup.output())[seen:]) == {("0", "1")}
    assert count_states(conn) == {"pending": 60}

    flow.set_limits("default", concurrency=2)  # 60 jobs, but at most 2 at once: 2 / 1 worker < 5
    flow.resume("default")
    seen = len(STATUS_LINE.findall(sup.output()))
    wait_for(lambda: count_states(conn) == {"completed": 60}, timeout=180, message="60 completed jobs")
    loads = [int(load) for load, _ in STATUS_LINE.findall(sup.output())[seen:]]
    assert loads, "no check while the queue drained"
    assert max(loads) <= 2, loads
    assert spawned(sup.output()) == 0
    assert sup.stop() == 0


def test_a_killed_worker_is_replaced(supervisor: Any) -> None:
    sup = supervisor("--min-workers", "2", "--max-workers", "2", *FAST)
    wait_for(lambda: len(sup.pids()) == 2 and sup.last_status() == (0, 2), timeout=120, message="two workers")
    victim = sup.pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(sup.pids()) == 3, timeout=60, message="a replacement worker")
    assert f"Worker {victim} exited unexpectedly (exit code -9); restarting it" in sup.output()
    wait_for(lambda: sup.last_status() == (0, 2), timeout=120, message="two workers again")
    assert sup.stop() == 0


@pytest.mark.slow
def test_sigterm_stops_every_worker_gracefully_and_exits_0(supervisor: Any, conn: Conn) -> None:
    sup = supervisor("--min-workers", "2", "--max-workers", "2", *FAST)
    wait_for(lambda: sup.last_status() == (0, 2), timeout=120, message="two workers")
    job = dispatch("Sleep", {"seconds": 1.5}, conn=conn)
    wait_for(lambda: job_state(conn, job) == "processing", message="a job in flight")

    assert sup.stop() == 0
    assert job_state(conn, job) == "completed"  # the worker finished it before exiting
    out = sup.output()
    assert "Stopping 2 worker(s)..." in out
    assert out.rstrip().endswith("Job Supervisor stopped")
    assert not any(alive(pid) for pid in sup.pids())


def test_bad_settings_are_one_line_and_exit_2(cli_env: dict[str, str]) -> None:
    result = run_cli(["supervise", "--min-workers", "5", "--max-workers", "2"], cli_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "passito-jobs: error: --min-workers (5) must not exceed --max-workers (2)"
    ]


def test_an_unreachable_database_is_one_line_and_exit_2_before_any_worker(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "PASSITO_DATABASE_URL": "postgresql://passito@127.0.0.1:1/passito"}
    result = run_cli(["supervise", "--min-workers", "2"], env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip().splitlines() == [
        "passito-jobs: error: cannot connect to the database at 127.0.0.1:1/passito: Connection refused"
    ]
