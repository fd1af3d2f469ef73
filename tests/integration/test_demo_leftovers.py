"""`passito-jobs demo --clear-leftovers` (`make run CLEAR=1`): the unfinished demo jobs an
interrupted run left are cancelled, and said so, unless another demo run shares the database."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from passito_jobs import dispatch
from passito_jobs.demo import DEMO_TAG, _leftovers, sample_outpasses
from passito_jobs.localdb import LocalDatabase
from passito_jobs.outpass.flow import dispatch_outpass_flows
from passito_jobs.queue.store import Store
from tests.helpers import count_states

Conn = psycopg.Connection[Any]


def _left_by_an_interrupted_run(conn: Conn) -> int:
    flows = dispatch_outpass_flows(sample_outpasses(5, random.Random(1)), conn=conn, tags=[DEMO_TAG])
    jobs = sum(len(flow.job_ids) for flow in flows)
    conn.execute("SELECT * FROM passito_jobs.claim('gone:1', NULL, 1)")  # running when it was killed
    assert count_states(conn)["processing"] == 1
    return jobs


def test_clear_leftovers_cancels_the_demo_jobs_and_says_how_many(
    conn: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    demo_jobs = _left_by_an_interrupted_run(conn)
    mine = dispatch("Noop", conn=conn)  # not the demo's: left alone
    _leftovers(Store(conn), None, clear=True)
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"Cleared leftovers: cancelled {demo_jobs} unfinished demo job(s) of an earlier run",
        "1 unfinished jobs are already in the queue (left by an earlier run, or another run's): "
        "the workers run them too; this run counts only its own",
    ]
    assert count_states(conn) == {"cancelled": demo_jobs, "pending": 1}
    assert conn.execute("SELECT state::text FROM passito_jobs.jobs WHERE id = %s", (mine,)).fetchone() == (
        "pending",
    )


def test_without_the_flag_leftovers_are_announced_with_the_flag_to_clear_them(
    conn: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    demo_jobs = _left_by_an_interrupted_run(conn)
    _leftovers(Store(conn), None, clear=False)
    assert capsys.readouterr().out.splitlines() == [
        f"{demo_jobs} unfinished jobs are already in the queue (left by an earlier run, or another run's): "
        "the workers run them too; this run counts only its own "
        "(--clear-leftovers, make run CLEAR=1: cancel the demo's first)"
    ]
    assert "cancelled" not in count_states(conn)


def test_clear_leftovers_leaves_the_jobs_of_another_live_run_alone(
    conn: Conn, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    demo_jobs = _left_by_an_interrupted_run(conn)
    local = LocalDatabase(tmp_path / "passito")
    (local.root / "runs").mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # another live run
    try:
        (local.root / "runs" / str(other.pid)).touch()
        (local.root / "runs" / str(os.getpid())).touch()  # this run
        _leftovers(Store(conn), local, clear=True)
    finally:
        other.kill()
        other.wait()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        "Not clearing leftovers: 1 other demo run(s) use this database and the unfinished demo jobs "
        "may be theirs"
    )
    assert out[1].startswith(f"{demo_jobs} unfinished jobs are already in the queue")
    assert "cancelled" not in count_states(conn)
    # Once the other run is gone (killed: its entry stays behind), clearing goes ahead.
    deadline = time.monotonic() + 10
    while local.other_runs(os.getpid()) and time.monotonic() < deadline:
        time.sleep(0.05)
    _leftovers(Store(conn), local, clear=True)
    assert capsys.readouterr().out.splitlines()[0].startswith(f"Cleared leftovers: cancelled {demo_jobs} ")
