"""hack/kind-e2e.sh cannot run here (no kind node image is reachable); what can be checked is:
its syntax, shellcheck's verdict, and that a missing prerequisite stops it with a clear message
before it creates anything."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "kind-e2e.sh"


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_shellcheck_is_clean() -> None:
    if not shutil.which("shellcheck"):
        if os.environ.get("CI") == "true":
            pytest.fail("shellcheck is missing (apt-get install shellcheck)")
        pytest.skip("shellcheck is not installed")
    result = subprocess.run(["shellcheck", "-x", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_a_missing_tool_is_named_with_where_to_get_it(tmp_path: Path) -> None:
    """With only docker on PATH (a stub), the script names kind and stops."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "dirname"):
        target = shutil.which(tool) or "/bin/true"
        (bin_dir / tool).symlink_to(target)
    result = subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "kind is not installed: https://kind.sigs.k8s.io" in result.stderr
