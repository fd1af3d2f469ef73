"""The Alertmanager configuration and the HTML email template, checked by the real amtool."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.monitoring.tools import (
    ALERTMANAGER_CONFIG,
    ALERTMANAGER_TEMPLATE,
    ALERTS,
    binary,
    render_config,
    run,
)

ENV = {
    "ALERTMANAGER_SMTP_HOST": "smtp.example.org",
    "ALERTMANAGER_SMTP_PORT": "587",
    "ALERTMANAGER_SMTP_FROM": "alerts@passito.example.org",
    "ALERTMANAGER_SMTP_USERNAME": "alerts",
    "ALERTMANAGER_EMAIL_TO": "admin@passito.example.org",
}


def test_amtool_accepts_the_configuration_as_shipped_and_as_installed(tmp_path: Path) -> None:
    amtool = binary("amtool")
    for path in (ALERTMANAGER_CONFIG, render_config(tmp_path, ENV)):
        result = run(amtool, "check-config", str(path))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "1 templates\n  SUCCESS" in result.stdout, result.stdout


def test_routes_by_severity_and_keeps_secrets_out() -> None:
    text = ALERTMANAGER_CONFIG.read_text()
    config = yaml.safe_load(text)
    assert "smtp_auth_password:" not in text
    assert config["global"]["smtp_auth_password_file"].startswith("/etc/alertmanager/secrets/")
    assert config["global"]["smtp_smarthost"] == "${ALERTMANAGER_SMTP_HOST}:${ALERTMANAGER_SMTP_PORT}"
    route = config["route"]
    assert route["group_by"] == ["alertname"]
    severities = [r["matchers"] for r in route["routes"]]
    assert severities == [['severity="critical"'], ['severity="warning"']]
    critical, warning = route["routes"]
    assert critical["repeat_interval"] == "1h"
    assert warning["repeat_interval"] == "4h"
    (email,) = config["receivers"][0]["email_configs"]
    assert email["send_resolved"] is True
    # Every severity the rules use has a route.
    used = {
        rule["labels"]["severity"]
        for g in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in g["rules"]
    }
    assert used <= {"critical", "warning"}


def stuck_alert(queue: str, status: str = "firing", severity: str = "critical") -> dict[str, Any]:
    """A PassitoJobsStuck alert as Prometheus sends it: the rule's annotations, rendered."""
    rule = next(
        r
        for g in yaml.safe_load(ALERTS.read_text())["groups"]
        for r in g["rules"]
        if r["alert"] == "PassitoJobsStuck"
    )
    annotations = {k: v for k, v in rule["annotations"].items() if "{{" not in v}
    annotations.update(
        summary=f"Jobs in queue {queue} are stuck in processing",
        description=f"2 jobs in queue {queue} have been processing without a heartbeat for longer than "
        "PASSITO_STUCK_AFTER, and no worker has rescued them for 5 minutes.",
        value="2 stuck jobs",
    )
    return {
        "status": status,
        "labels": {"alertname": "PassitoJobsStuck", "severity": severity, "queue": queue},
        "annotations": annotations,
        "startsAt": "2025-03-01T10:00:00Z",
        "endsAt": "2025-03-01T10:20:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
        "fingerprint": queue,
    }


def render(tmp_path: Path, alerts: list[dict[str, Any]], name: str) -> str:
    amtool = binary("amtool")
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    common = {"alertname": alerts[0]["labels"]["alertname"], "severity": alerts[0]["labels"]["severity"]}
    data = {
        "receiver": "admin-email",
        "status": status,
        "alerts": alerts,
        "groupLabels": {"alertname": common["alertname"]},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    out = {}
    for kind, template in (("html", "passito.email.html"), ("text", "passito.email.subject")):
        result = run(
            amtool,
            "template",
            "render",
            f"--template.glob={ALERTMANAGER_TEMPLATE}",
            f"--template.type={kind}",
            f"--template.data={path}",
            f'--template.text={{{{ template "{template}" . }}}}',
        )
        assert result.returncode == 0, result.stderr
        out[kind] = result.stdout
    return out["text"].strip() + "\n" + out["html"]


def banner_color(html: str) -> str:
    match = re.search(r'class="status-banner" style="background:(#[0-9a-f]{6})', html)
    assert match, html
    return match.group(1)


def test_a_firing_email_has_the_metrics_table_causes_actions_and_runbook(tmp_path: Path) -> None:
    email = render(tmp_path, [stuck_alert("emails"), stuck_alert("pdfs")], "firing")
    subject, html = email.split("\n", 1)
    assert (
        subject
        == "[passito-jobs] FIRING:2 PassitoJobsStuck (critical): Jobs in queue emails are stuck in processing"
    )
    assert banner_color(html) == "#c62828"  # critical: red
    table = html[html.index('class="metrics"') : html.index("</table>")]
    assert table.count("FIRING</td>") == 2
    assert "queue=<b>emails</b>" in table
    assert "queue=<b>pdfs</b>" in table
    assert (
        table.count('<td class="value" style="border:1px solid #dfe1e6;font-weight:bold;">2 stuck jobs</td>')
        == 2
    )
    assert "passito_jobs_queue_stuck_jobs" in table
    assert "2025-03-01 10:00 UTC" in table
    assert "Possible causes" in html
    assert "Workers crashed or were killed mid-job" in html
    assert "Recommended actions" in html
    assert "passito-jobs health --rescue" in html
    assert (
        '<a class="runbook" href="https://github.com/passito/passito-jobs/blob/main/docs/runbooks/PassitoJobsStuck.md"'
        in html
    )


def test_colours_follow_severity_and_status(tmp_path: Path) -> None:
    warning = render(tmp_path, [stuck_alert("emails", severity="warning")], "warning")
    assert banner_color(warning) == "#ef6c00"
    resolved = render(tmp_path, [stuck_alert("emails", status="resolved")], "resolved")
    subject, html = resolved.split("\n", 1)
    assert (
        subject
        == "[passito-jobs] RESOLVED PassitoJobsStuck (critical): Jobs in queue emails are stuck in processing"
    )
    assert banner_color(html) == "#2e7d32"  # resolved: green
    assert "RESOLVED</td>" in html
    assert "resolved 10:20 UTC" in html
    assert "The condition has cleared" in html
    assert "Possible causes" not in html
    assert "PassitoJobsStuck.md" in html


def test_label_values_are_escaped(tmp_path: Path) -> None:
    subject, html = render(tmp_path, [stuck_alert("<script>alert(1)</script>")], "escaped").split("\n", 1)
    assert "<script>" in subject  # a mail header is plain text
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
