"""An independent scanner, checkov (its Kubernetes checks), on every rendered ci/ scenario: no
failed check. Two checks are the user's choice and skipped here for every resource: image
digests and the Always pull policy (the chart pins tags and lets `image.pullPolicy` decide).
Every other exception is an annotation on the one resource it concerns, with its reason
(test_secrets_as_files.py checks that docs/kubernetes.md lists each).

checkov's dependency pins clash with ours, so it lives in its own virtualenv, .venv-checkov
(`make checkov`; .ci/run creates it). One checkov run scans a folder of every scenario: a few
seconds, where one run per scenario would start checkov ten times.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import ROOT, SCENARIOS, render

USERS_CHOICE = {
    "CKV_K8S_43": "Image should use digest",
    "CKV_K8S_15": "Image Pull Policy should be Always",
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "CronJob", "Pod"}


def _checkov() -> str:
    found = os.environ.get("CHECKOV") or shutil.which("checkov", path=str(ROOT / ".venv-checkov" / "bin"))
    if not found:
        if os.environ.get("CI") == "true":
            pytest.fail("checkov is missing: `make checkov` installs it into .venv-checkov")
        pytest.skip("checkov is not installed (`make checkov` installs it into .venv-checkov)")
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    checkov = _checkov()
    folder = tmp_path_factory.mktemp("rendered")
    for scenario, values in SCENARIOS.items():
        (folder / scenario).mkdir()
        (folder / scenario / "objects.yaml").write_text(yaml.safe_dump_all(render(values), sort_keys=False))
    result = subprocess.run(
        [
            checkov,
            "--directory",
            str(folder),
            "--framework",
            "kubernetes",
            "--skip-check",
            ",".join(USERS_CHOICE),
            "--skip-download",  # offline: no Prisma Cloud guidelines, nothing leaves the machine
            "--output",
            "json",
            "--compact",  # no code blocks in the report: half the time
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]  # 1: some check failed
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def _scenario(check: dict[str, Any]) -> str:
    return Path(check["file_path"]).parts[1]


def test_checkov_finds_no_failed_check_in_any_scenario(report: dict[str, Any]) -> None:
    failed = [
        f"{_scenario(c)}: {c['check_id']} {c['check_name']} ({c['resource']})"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == []


def test_checkov_scanned_every_workload_of_every_scenario(report: dict[str, Any]) -> None:
    """A scenario checkov could not read would pass silently: each one's workloads were checked."""
    assert report["summary"]["parsing_errors"] == 0
    checked = {(_scenario(c), c["resource"]) for c in report["results"]["passed_checks"]}
    for scenario, values in SCENARIOS.items():
        for obj in render(values):
            if obj["kind"] in WORKLOAD_KINDS:
                resource = f"{obj['kind']}.{obj['metadata']['namespace']}.{obj['metadata']['name']}"
                assert (scenario, resource) in checked, f"{scenario}: {resource} was not scanned"


def test_checkov_skips_only_annotated_resources(report: dict[str, Any]) -> None:
    """The skips checkov honoured are the chart's annotations, each with its reason, and the
    user's-choice checks never appear (they are skipped for the whole run)."""
    skipped = report["results"]["skipped_checks"]
    assert skipped, "the chart's skip annotations were not seen"
    for check in skipped:
        assert check["check_id"] not in USERS_CHOICE
        assert len(check["check_result"].get("suppress_comment", "").split()) >= 8, check["resource"]
    per_check = Counter(check["check_id"] for check in skipped)
    assert set(per_check) <= {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_38", "CKV_K8S_40"}, per_check
