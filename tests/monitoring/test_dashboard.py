"""The Grafana dashboard: a valid dashboard whose every query parses (promtool), names only
documented metrics, and covers what operators asked for. test_e2e_alerting.py runs each query
against a real Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from passito_jobs.health.exporter import QueueCollector
from tests.monitoring.tools import ALERTS, DASHBOARD, ROOT, binary, run

METRICS_DOC = ROOT / "docs" / "metrics.md"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$queue": ".*"}


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels() -> list[dict[str, Any]]:
    found = []
    for panel in dashboard()["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables replaced) of every panel target."""
    found = []
    for panel in panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


def test_it_is_a_valid_dashboard_with_a_datasource_variable() -> None:
    data = dashboard()
    assert isinstance(data["schemaVersion"], int)
    assert data["schemaVersion"] >= 36
    assert data["uid"] == "passito-jobs"
    assert data["title"]
    ids = [panel["id"] for panel in panels()]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel.get("description"), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        # Remaining variables would break the query.
        for expr in [t["expr"] for t in panel["targets"]]:
            leftover = set(re.findall(r"\$\w+", expr)) - set(GRAFANA_VARIABLES)
            assert not leftover, (panel["title"], leftover)


def test_panels_sit_on_the_grid_without_overlapping() -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_the_panels_operators_asked_for_are_there() -> None:
    titles = {panel["title"] for panel in panels()}
    assert titles >= {
        "Queue depth by state and queue",
        "Throughput by job type and outcome",
        "Failure ratio by queue",
        "Job duration p50 / p95 / p99 by type",
        "Pickup latency p50 / p95 by queue",
        "Oldest ready job age",
        "Desired vs current workers",
        "Scale events",
        "Database",
        "Held-back jobs by queue",
        "Processing vs concurrency limit by queue",
        "Paused queues",
        "Rate and key concurrency limits by queue",
    }


def test_every_query_parses(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule: a syntax error fails here, offline."""
    promtool = binary("promtool")
    rules = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries())]
    path = tmp_path / "dashboard_queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def metric_names(text: str) -> set[str]:
    names = set(re.findall(r"\bpassito_jobs_[a-z_]+", text))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}


def test_dashboard_and_alerts_use_only_documented_metrics() -> None:
    documented = metric_names(METRICS_DOC.read_text())
    used = metric_names(DASHBOARD.read_text()) | metric_names(ALERTS.read_text())
    assert used, "no metric found"
    assert not used - documented, f"not in docs/metrics.md: {sorted(used - documented)}"


def exported_names() -> set[str]:
    """The metric names the exporter's collector declares (counters with their `_total`); no
    database is queried to describe them."""
    collector = QueueCollector(
        "postgresql://nobody@127.0.0.1:1/none",
        stale_after=300,
        stuck_after=60,
        window=3600,
        query_timeout=1,
        connect_timeout=1,
    )
    try:
        families = list(collector.describe())
    finally:
        collector.close()
    return {f.name + ("_total" if f.type == "counter" else "") for f in families}


def test_queue_panels_query_what_the_exporter_exports() -> None:
    """Every exporter metric (passito_jobs_queue_*, passito_jobs_exporter_*) a panel queries is
    one the exporter declares, and each flow control metric has a panel."""
    exported = exported_names()
    used = {
        name
        for name in metric_names(DASHBOARD.read_text())
        if name.startswith(("passito_jobs_queue_", "passito_jobs_exporter_"))
    }
    assert used, "no exporter metric found in the dashboard"
    assert not used - exported, f"not exported by the exporter: {sorted(used - exported)}"
    flow = {
        "passito_jobs_queue_paused",
        "passito_jobs_queue_held_back_jobs",
        "passito_jobs_queue_concurrency_limit",
        "passito_jobs_queue_rate_limit_per_second",
        "passito_jobs_queue_key_concurrency_limit",
    }
    assert flow <= exported
    assert not flow - used, f"no panel shows {sorted(flow - used)}"
