"""`make run`'s program, end to end: embedded PostgreSQL, supervisor, workers, demo workload."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import processes, wait_for


def demo_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env["PASSITO_DATA_DIR"] = str(data_dir)
    env["PASSITO_STORAGE_DIR"] = str(data_dir / "storage")  # not the checkout's .passito/
    return env


def no_process_uses(data_dir: Path) -> bool:
    """True when neither the embedded server of `data_dir` nor a worker connected to it runs."""
    port = (data_dir / "pgdata.port").read_text().strip()

    def uses(proc: Path) -> bool:
        cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        if str(data_dir) in cmdline:
            return True  # the PostgreSQL server of this data directory
        environ = (proc / "environ").read_bytes().decode(errors="replace")
        return "passito_jobs worker" in cmdline and f"127.0.0.1:{port}/" in environ  # a worker of this demo

    return not processes(uses)


@pytest.mark.slow
def test_demo_until_drained_exits_0_and_cleans_up(local_data_dir: Path) -> None:
    done = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [sys.executable, "-m", "passito_jobs", "demo", "--jobs", "60", "--until-drained"],
        env=demo_env(local_data_dir),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Job Supervisor started" in done.stdout
    assert "Spawned worker with PID: " in done.stdout
    dispatched = re.search(r"Dispatched 60 sample outpasses: (\d+) jobs", done.stdout)
    assert dispatched, done.stdout
    assert f"Demo: {dispatched.group(1)}/{dispatched.group(1)} jobs done (0 failed)" in done.stdout
    assert "All demo jobs are done." in done.stdout
    assert "Embedded PostgreSQL stopped" in done.stdout
    assert "[DONE] Completed Job #" in done.stderr
    assert "fontTools" not in done.stderr  # third-party INFO logs are off
    assert no_process_uses(local_data_dir)


@pytest.mark.slow
def test_ctrl_c_stops_everything_gracefully(tmp_path: Path, local_data_dir: Path) -> None:
    log = tmp_path / "demo.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "passito_jobs", "demo", "--jobs", "400"],
            env=demo_env(local_data_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # its own process group, like a terminal's foreground job
        try:
            wait_for(
                lambda: "[DONE] Completed Job #" in log.read_text(), timeout=120, message="jobs to be running"
            )
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
            assert proc.wait(120) == 0
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert (
        "Stopping: the workers finish the jobs they run (at most 30s), then the embedded PostgreSQL stops."
        in text
    )
    assert "Job Supervisor stopped" in text
    assert "Embedded PostgreSQL stopped" in text
    assert "Second signal" not in text  # workers were stopped once, gracefully
    deadline = time.monotonic() + 60
    while not no_process_uses(local_data_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert no_process_uses(local_data_dir)


def start_demo(data_dir: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "passito_jobs", "demo", *args],
            env=demo_env(data_dir),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group, like a terminal's foreground job
        )


def worker_pids(text: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"^Spawned worker with PID: (\d+)$", text, re.MULTILINE)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_leaves_no_process(tmp_path: Path, local_data_dir: Path) -> None:
    log = tmp_path / "demo.log"
    proc = start_demo(local_data_dir, log, "--jobs", "400")
    try:
        wait_for(lambda: "[DONE] Completed Job #" in log.read_text(), timeout=180, message="jobs running")
        os.killpg(proc.pid, signal.SIGINT)
        wait_for(lambda: "Stopping: the workers finish" in log.read_text(), message="the first stop")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "Stopping at once: killing the workers (their jobs run again later)" in text
    assert "Embedded PostgreSQL stopped" in text
    assert "Traceback" not in text
    assert worker_pids(text)
    wait_for(lambda: not any(alive(pid) for pid in worker_pids(text)), message="every worker gone")
    wait_for(lambda: no_process_uses(local_data_dir), timeout=60, message="no process of the run left")


@pytest.mark.slow
def test_two_runs_at_once_share_the_database_and_count_their_own_jobs(
    tmp_path: Path, local_data_dir: Path
) -> None:
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_demo(local_data_dir, first_log, "--jobs", "300")  # runs until Ctrl-C
    second = None
    try:
        wait_for(lambda: "Dispatched 300" in first_log.read_text(), timeout=180, message="run 1")
        second = start_demo(local_data_dir, second_log, "--jobs", "5", "--until-drained")
        assert second.wait(300) == 0, second_log.read_text()[-3000:]
        os.killpg(first.pid, signal.SIGINT)
        assert first.wait(120) == 0, first_log.read_text()[-3000:]
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    text = second_log.read_text()
    dispatched = re.search(r"Dispatched 5 sample outpasses: (\d+) jobs", text)
    assert dispatched, text[-3000:]
    assert f"Demo: {dispatched.group(1)}/{dispatched.group(1)} jobs done (0 failed)" in text
    assert "Embedded PostgreSQL left running: 1 other demo run(s) use it" in text  # not stopped under run 1
    assert re.search(r"^\d+ unfinished jobs are already in the queue", text, re.MULTILINE)
    first_text = first_log.read_text()
    assert "Embedded PostgreSQL stopped" in first_text
    assert "Traceback" not in first_text + text
    wait_for(lambda: no_process_uses(local_data_dir), timeout=60, message="no process of either run left")


@pytest.mark.slow
def test_the_next_run_clears_an_interrupted_runs_leftovers_when_asked(
    tmp_path: Path, local_data_dir: Path
) -> None:
    """`make run CLEAR=1` after a run stopped at once: the leftovers are cancelled (the line says
    how many), not drained first, and the new run's own jobs complete."""
    log = tmp_path / "interrupted.log"
    proc = start_demo(local_data_dir, log, "--jobs", "400")
    try:
        wait_for(lambda: "[DONE] Completed Job #" in log.read_text(), timeout=180, message="jobs running")
        os.killpg(proc.pid, signal.SIGINT)
        wait_for(lambda: "Stopping: the workers finish" in log.read_text(), message="the first stop")
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.run(  # noqa: PLW1510 - the return code is asserted
        [sys.executable, "-m", "passito_jobs", "demo", "--jobs", "5", "--until-drained", "--clear-leftovers"],
        env=demo_env(local_data_dir),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cleared = re.search(
        r"^Cleared leftovers: cancelled (\d+) unfinished demo job\(s\) of an earlier run$",
        done.stdout,
        re.MULTILINE,
    )
    assert cleared, done.stdout[-3000:]
    assert int(cleared.group(1)) > 0
    assert "unfinished jobs are already in the queue" not in done.stdout  # nothing left to drain
    dispatched = re.search(r"Dispatched 5 sample outpasses: (\d+) jobs", done.stdout)
    assert dispatched, done.stdout
    assert f"Demo: {dispatched.group(1)}/{dispatched.group(1)} jobs done (0 failed)" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    wait_for(lambda: no_process_uses(local_data_dir), timeout=60, message="no process of the run left")
