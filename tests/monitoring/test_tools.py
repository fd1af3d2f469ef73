"""The monitoring tests' policy for missing binaries: skip locally, fail under CI=true."""

from __future__ import annotations

import pytest

from tests.monitoring.tools import binary


def test_a_missing_tool_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="passito-no-such-tool not installed"):
        binary("passito-no-such-tool")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must have it"):
        binary("passito-no-such-tool")


def test_the_first_installed_name_wins() -> None:
    found = binary("passito-no-such-tool", "sh")
    assert found.endswith("/sh")
