"""The command blocks of README.md and docs/ marked runnable (a fence opened with ```sh runnable)
run as written: each block in bash against a fresh database, then a worker with Passito's job
types runs what the block dispatched, and every job must complete."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers import TESTS, WorkerProcess, count_states, wait_for

ROOT = TESTS.parent
FENCE = re.compile(r"^```sh runnable\n(.*?)^```$", re.MULTILINE | re.DOTALL)
OUTPASS_WORKER = ("--import", "passito_jobs.outpass")


def runnable_blocks() -> Iterator[tuple[str, str]]:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = page.read_text()
        for number, match in enumerate(FENCE.finditer(text), start=1):
            line = text.count("\n", 0, match.start()) + 1
            yield f"{page.relative_to(ROOT)}:{line}#{number}", match.group(1)


BLOCKS = dict(runnable_blocks())


def test_the_readme_and_the_dispatching_page_have_runnable_blocks() -> None:
    pages = {name.split(":")[0] for name in BLOCKS}
    assert {"README.md", "docs/dispatching.md"} <= pages


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_a_runnable_block_runs_and_its_jobs_complete(
    name: str, empty_database_url: str, cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **cli_env,
        "PASSITO_DATABASE_URL": empty_database_url,
        # `passito-jobs` on PATH, as `. .venv/bin/activate` puts it there.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("PASSITO_SECRET_KEY")  # a block that needs a key sets one, as a reader would
    subprocess.run(["passito-jobs", "migrate"], env=env, check=True, capture_output=True, timeout=120)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", BLOCKS[name]],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr

    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        dispatched = sum(count_states(conn).values())
        if not dispatched:
            return
        worker = WorkerProcess({**cli_env, **env, "PASSITO_INSECURE_DEV_SECRET": "true"}, tmp_path / "w.log",
                               *OUTPASS_WORKER)  # fmt: skip
        try:
            wait_for(
                lambda: count_states(conn).get("completed") == dispatched,
                timeout=180,
                message=f"the {dispatched} jobs of {name} to complete (states: {count_states(conn)})",
            )
        finally:
            assert worker.stop() == 0
