"""Paths of the monitoring stack's files, and its binaries (Debian's prometheus and
prometheus-alertmanager packages): a missing binary skips the test, or fails it under CI=true."""

from __future__ import annotations

import os
import shutil
import string
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
FILES = ROOT / "charts" / "passito-jobs" / "files"
ALERTS = FILES / "alerts.yaml"
ALERTMANAGER_CONFIG = FILES / "alertmanager" / "alertmanager.yml"
ALERTMANAGER_TEMPLATE = FILES / "alertmanager" / "passito-jobs.tmpl"
DASHBOARD = FILES / "dashboards" / "passito-jobs.json"
RUNBOOKS = ROOT / "docs" / "runbooks"


def binary(*names: str) -> str:
    """The first of `names` on PATH (Debian calls Alertmanager `prometheus-alertmanager`)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{' / '.join(names)} not installed (apt-get install prometheus prometheus-alertmanager)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must have it")
    pytest.skip(message)


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a tool; callers assert on the exit code and print its output when it fails."""
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def render_config(folder: Path, env: dict[str, str]) -> Path:
    """The Alertmanager configuration as installed: placeholders filled in from `env` (what
    `envsubst` does), the email template beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "alertmanager.yml"
    path.write_text(string.Template(ALERTMANAGER_CONFIG.read_text()).substitute(env))
    shutil.copy(ALERTMANAGER_TEMPLATE, folder / ALERTMANAGER_TEMPLATE.name)
    return path
