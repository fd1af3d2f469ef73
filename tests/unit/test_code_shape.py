"""The shape the code keeps (docs/architecture.md): small modules and functions, each with one job.

No module under src/ is longer than 400 lines unless it says why on its first line
(`# Longer than 400 lines: <reason>`), and no function or method is longer than 80 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).parents[2] / "src" / "passito_jobs"
MODULES = sorted(SRC.rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
REASON = "# Longer than 400 lines: "


def test_there_is_code_to_check() -> None:
    assert len(MODULES) > 50


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_a_module_is_at_most_400_lines_or_says_why(module: Path) -> None:
    lines = module.read_text().splitlines()
    if len(lines) > MAX_MODULE_LINES:
        assert lines[0].startswith(REASON), f"{len(lines)} lines, and no `{REASON}...` first line"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_function_is_longer_than_80_lines(module: Path) -> None:
    tree = ast.parse(module.read_text())
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []
