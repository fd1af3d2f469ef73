"""The alert rules: valid for promtool, complete, and each alert firing exactly when it should."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.monitoring.tools import ALERTS, RUNBOOKS, binary, run

TESTS = Path(__file__).parent / "alerts_test.yaml"
REQUIRED = {
    "PassitoJobsBacklogGrowing",
    "PassitoJobsStale",
    "PassitoJobsStuck",
    "PassitoJobsHighFailureRate",
    "PassitoJobsNoWorkers",
    "PassitoJobsFailedJobs",
    "PassitoJobsExporterDown",
    "PassitoJobsOperatorDown",
    "PassitoJobsDatabaseDown",
}
ANNOTATIONS = {
    "summary",
    "description",
    "metric",
    "value",
    "possible_causes",
    "recommended_actions",
    "runbook_url",
}
RUNBOOK_URL = "https://github.com/passito/passito-jobs/blob/main/docs/runbooks/{}.md"


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    promtool = binary("promtool")
    result = run(promtool, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_every_alert_is_there_once_with_severity_annotations_and_a_runbook() -> None:
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED
    for rule in rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert set(rule["annotations"]) == ANNOTATIONS, name
        assert rule["annotations"]["runbook_url"] == RUNBOOK_URL.format(name)
        runbook = RUNBOOKS / f"{name}.md"
        assert runbook.is_file(), f"{runbook} is missing"
        assert runbook.read_text().startswith(f"# {name}\n"), runbook
        for key in ("possible_causes", "recommended_actions"):
            lines = rule["annotations"][key].splitlines()
            assert lines, (name, key)
            assert all(line.startswith("- ") for line in lines), (name, key)


def with_fixed_annotations(tests: dict[str, Any]) -> dict[str, Any]:
    """Add each rule's untemplated annotations to the expected alerts of `tests`."""
    fixed = {
        rule["alert"]: {k: v for k, v in rule["annotations"].items() if "{{" not in v} for rule in rules()
    }
    for group in tests["tests"]:
        for case in group.get("alert_rule_test", []):
            for alert in case.get("exp_alerts", []):
                alert["exp_annotations"] = {**fixed[case["alertname"]], **alert["exp_annotations"]}
    return tests


def test_each_alert_fires_when_it_should_and_not_otherwise(tmp_path: Path) -> None:
    promtool = binary("promtool")
    tests = with_fixed_annotations(yaml.safe_load(TESTS.read_text()))
    tests["rule_files"] = [str(ALERTS)]
    tested = {case["alertname"] for group in tests["tests"] for case in group.get("alert_rule_test", [])}
    fired = {
        case["alertname"]
        for group in tests["tests"]
        for case in group.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == fired == {rule["alert"] for rule in rules()}, "every alert is tested firing and quiet"
    path = tmp_path / "alerts_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run(promtool, "test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
