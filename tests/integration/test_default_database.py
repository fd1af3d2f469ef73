"""Without PASSITO_DATABASE_URL, Python's `dispatch` and the CLI use the same database: the
embedded PostgreSQL under PASSITO_DATA_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli


@pytest.mark.slow
def test_python_dispatch_finds_the_database_the_cli_uses(local_data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env.update({"PASSITO_DATA_DIR": str(local_data_dir), "PYTHONPATH": str(Path(__file__).parents[2])})
    try:
        migrated = run_cli(["migrate"], env, timeout=180)
        assert migrated.returncode == 0, migrated.stderr
        dispatched = subprocess.run(
            [
                sys.executable,
                "-c",
                "from passito_jobs import dispatch; print(dispatch('Noop', {'from': 'python'}))",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert dispatched.returncode == 0, dispatched.stderr
        shown = run_cli(["jobs", "show", dispatched.stdout.strip(), "--json"], env)
        assert shown.returncode == 0, shown.stderr
        assert '"from": "python"' in shown.stdout
    finally:
        run_cli(["db", "stop"], env, timeout=120)
