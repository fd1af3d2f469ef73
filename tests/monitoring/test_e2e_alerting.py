"""End to end with real servers: worker and queue exporter on PostgreSQL, Prometheus with the
chart's alert rules, Alertmanager with the chart's configuration and email template, and an SMTP
server (aiosmtpd) as the admin's mailbox.

Test-only changes, everything else as shipped: scrape and evaluation every second, every rule's
`for` cut to 3 seconds (15 for the scrape-health alerts), Alertmanager's group waits cut to 1
second, and SMTP without STARTTLS (the loopback mailbox has no certificate). The SMTP password
reaches Alertmanager through `smtp_auth_password_file`, as from a Kubernetes Secret. The
operator's metrics come from `stack.AutoscalerSource` (see there why).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import yaml

from passito_jobs import JobRequest, dispatch, dispatch_many
from passito_jobs.queue.flow import Rate
from passito_jobs.queue.store import Store
from passito_jobs.supervisor.policy import ScalingPolicy
from tests.conftest import TEST_SECRET_KEY, drop_database, fresh_database
from tests.helpers import WorkerProcess, count_states, job_state, run_cli, wait_for
from tests.monitoring.stack import (
    Alertmanager,
    AutoscalerSource,
    Mail,
    Mailbox,
    Prometheus,
    Server,
    free_port,
    http_get,
)
from tests.monitoring.test_dashboard import queries
from tests.monitoring.tools import ALERTS, ROOT, binary, render_config

pytestmark = pytest.mark.slow

SMTP_USER = "alerts"
SMTP_PASSWORD = "from-a-kubernetes-secret"
ADMIN = "admin@passito.example.org"
RUNBOOKS = "https://github.com/passito/passito-jobs/blob/main/docs/runbooks/"
FAST = {
    "PASSITO_HEARTBEAT_INTERVAL": "0.3",
    "PASSITO_STUCK_AFTER": "2",
    "PASSITO_MAINTENANCE_INTERVAL": "0.5",
    "PASSITO_POLL_INTERVAL": "0.5",
}


def fast_rules(folder: Path) -> Path:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            # Prometheus discovers its scrape targets up to 5s after it starts: until then the
            # targets' `up` is absent, which the exporter and operator alerts must ride out.
            rule["for"] = "15s" if "absent(up" in rule["expr"] else "3s"
    path = folder / "alerts.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


def alertmanager_config(folder: Path, mailbox: Mailbox) -> Path:
    path = render_config(
        folder,
        {
            "ALERTMANAGER_SMTP_HOST": "127.0.0.1",
            "ALERTMANAGER_SMTP_PORT": str(mailbox.port),
            "ALERTMANAGER_SMTP_FROM": "passito-jobs@passito.example.org",
            "ALERTMANAGER_SMTP_USERNAME": SMTP_USER,
            "ALERTMANAGER_EMAIL_TO": ADMIN,
        },
    )
    config = yaml.safe_load(path.read_text())
    secret = folder / "smtp-password"
    secret.write_text(SMTP_PASSWORD)
    config["global"]["smtp_auth_password_file"] = str(secret)
    config["global"]["smtp_require_tls"] = False
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Stack:
    database_url: str
    env: dict[str, str]
    folder: Path
    worker_port: int
    prometheus: Prometheus
    mailbox: Mailbox
    workers: list[WorkerProcess]

    @property
    def worker(self) -> WorkerProcess:
        return self.workers[-1]

    def workers_alive(self) -> int:
        return sum(w.proc.poll() is None for w in self.workers)

    def start_worker(self) -> WorkerProcess:
        """A worker on the port Prometheus scrapes, ready to take jobs."""
        assert not self.workers_alive(), "one worker at a time: they share the scraped port"
        worker = WorkerProcess(
            self.env,
            self.folder / f"worker-{len(self.workers) + 1}.log",
            "--metrics-port",
            str(self.worker_port),
            "--concurrency",
            "10",
        )
        self.workers.append(worker)
        wait_for(
            lambda: (
                worker.proc.poll() is not None
                or http_get(f"http://127.0.0.1:{self.worker_port}/readyz")[0] == 200
            ),
            timeout=20,
            message="the worker to be ready",
        )
        assert worker.proc.poll() is None, f"the worker exited:\n{worker.log()}"
        return worker

    def mails(self, status: str, alert: str) -> list[Mail]:
        prefix = "[passito-jobs] FIRING" if status == "firing" else "[passito-jobs] RESOLVED"
        return self.mailbox.find(lambda m: m.subject.startswith(prefix) and f" {alert} (" in m.subject)


@pytest.fixture(scope="module")
def stack(pg_admin_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    prometheus_bin = binary("prometheus")
    alertmanager_bin = binary("alertmanager", "prometheus-alertmanager")
    folder = tmp_path_factory.mktemp("monitoring")
    url = fresh_database(pg_admin_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PASSITO_")}
    env.update(
        FAST,
        PASSITO_DATABASE_URL=url,
        PASSITO_DATA_DIR=str(folder / "passito"),
        PASSITO_SECRET_KEY=TEST_SECRET_KEY,  # workers refuse to start without a signing key
        PASSITO_STORAGE_DIR=str(folder / "storage"),
        PYTHONPATH=str(ROOT),
    )
    workers: list[WorkerProcess] = []
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(drop_database, pg_admin_url, url)
        mailbox = cleanup.enter_context(Mailbox(SMTP_USER, SMTP_PASSWORD))
        exporter_port, worker_port = free_port(), free_port()
        exporter = Server(
            [sys.executable, "-m", "passito_jobs", "health", "serve", "--port", str(exporter_port)],
            folder / "exporter.log",
            f"http://127.0.0.1:{exporter_port}",
            ready_path="/readyz",
            env=env,
        )
        cleanup.callback(exporter.stop)
        cleanup.callback(lambda: [w.kill() for w in workers])
        operator = AutoscalerSource(
            url,
            lambda: sum(w.proc.poll() is None for w in workers),
            ScalingPolicy(min_replicas=1, max_replicas=4),
        )
        cleanup.callback(operator.close)
        alertmanager = Alertmanager(
            alertmanager_bin, alertmanager_config(folder / "alertmanager", mailbox), folder
        )
        cleanup.callback(alertmanager.stop)
        prometheus = Prometheus(
            prometheus_bin,
            folder,
            rules=fast_rules(folder),
            targets={
                "passito-jobs-worker": [f"127.0.0.1:{worker_port}"],
                "passito-jobs-health": [f"127.0.0.1:{exporter_port}"],
                "passito-jobs-operator": [operator.address],
            },
            alertmanager=alertmanager.address,
        )
        cleanup.callback(prometheus.stop)
        the_stack = Stack(url, env, folder, worker_port, prometheus, mailbox, workers)
        the_stack.start_worker()
        wait_for(
            lambda: len(prometheus.query("up == 1")) == 3,
            timeout=20,
            message="Prometheus to scrape the worker, the exporter and the operator",
        )
        yield the_stack


def test_alerts_reach_the_admins_mailbox_and_resolve(stack: Stack) -> None:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        # The failure rate climbs: 6 of 8 jobs fail for good.
        dispatch_many(
            [JobRequest("AlwaysPermanent", queue="emails") for _ in range(6)]
            + [JobRequest("SyncSleep", {"seconds": 0}, queue="emails") for _ in range(2)],
            conn=conn,
        )
        wait_for(
            lambda: count_states(conn) == {"failed": 6, "completed": 2}, timeout=20, message="8 finished jobs"
        )
        # A worker killed mid-job leaves its job stuck in processing.
        stuck = dispatch("SlowFirstAttempt", queue="pdfs", conn=conn)
        wait_for(lambda: job_state(conn, stuck) == "processing", timeout=10, message="the long job to start")
        stack.worker.kill()

        firing = wait_for(
            lambda: stack.mails("firing", "PassitoJobsStuck"), timeout=40, message="the stuck email"
        )
        mail = firing[0]
        assert mail.subject == (
            "[passito-jobs] FIRING:1 PassitoJobsStuck (critical): Jobs in queue pdfs are stuck in processing"
        )
        assert mail.recipients == [ADMIN]
        assert mail.authenticated_as == SMTP_USER  # the password came from the secret file
        html = mail.body("html")
        assert 'class="status-banner" style="background:#c62828' in html  # critical: red
        assert "queue=<b>pdfs</b>" in html
        assert ">1 stuck jobs</td>" in html
        assert "passito_jobs_queue_stuck_jobs" in html
        assert "1 jobs in queue pdfs have been processing without a heartbeat" in html
        assert "passito-jobs health --rescue" in html  # recommended actions
        assert f'href="{RUNBOOKS}PassitoJobsStuck.md"' in html
        assert "Runbook: " + RUNBOOKS + "PassitoJobsStuck.md" in mail.body("plain")

        rate = wait_for(
            lambda: stack.mails("firing", "PassitoJobsHighFailureRate"),
            timeout=30,
            message="the failure-rate email",
        )[0]
        assert (
            rate.subject
            == "[passito-jobs] FIRING:1 PassitoJobsHighFailureRate (critical): Many jobs in queue emails fail"
        )
        html = rate.body("html")
        assert ">75% failed</td>" in html
        assert (
            "75% of the jobs that finished in queue emails within PASSITO_HEALTH_WINDOW failed (6 jobs)"
            in html
        )
        assert f'href="{RUNBOOKS}PassitoJobsHighFailureRate.md"' in html
        dead = wait_for(
            lambda: stack.mails("firing", "PassitoJobsFailedJobs"),
            timeout=30,
            message="the dead-letter email",
        )
        assert 'style="background:#ef6c00' in dead[0].body("html")  # warning: orange
        assert ">6 failed jobs</td>" in dead[0].body("html")

        # Recovery: a new worker, the health check's --rescue (the dead worker's maintenance lease
        # would hold the workers' own rescue off for 30s more), and successes that bring the
        # failure rate down.
        stack.start_worker()
        rescued = run_cli(["health", "--rescue"], stack.env)
        assert f"returned 1 stuck job(s) to pending (#{stuck})" in rescued.stdout, rescued
        wait_for(
            lambda: stack.prometheus.query('up{job="passito-jobs-worker"} == 1'),
            timeout=20,
            message="Prometheus to see the new worker",
        )
        wait_for(
            lambda: job_state(conn, stuck) == "completed", timeout=20, message="the rescued job to complete"
        )
        dispatch_many([JobRequest("SyncSleep", {"seconds": 0}, queue="emails") for _ in range(60)], conn=conn)

        resolved = wait_for(
            lambda: stack.mails("resolved", "PassitoJobsStuck"),
            timeout=40,
            message="the stuck alert's resolved email",
        )[0]
        assert resolved.subject == (
            "[passito-jobs] RESOLVED PassitoJobsStuck (critical): Jobs in queue pdfs are stuck in processing"
        )
        assert 'class="status-banner" style="background:#2e7d32' in resolved.body("html")  # resolved: green
        assert "The condition has cleared" in resolved.body("html")
        wait_for(
            lambda: stack.mails("resolved", "PassitoJobsHighFailureRate"),
            timeout=40,
            message="the failure rate's resolved email",
        )

    emailed = {
        mail.subject.split()[2]
        for mail in stack.mailbox.find(lambda m: m.subject.startswith("[passito-jobs] FIRING"))
    }
    assert emailed == {"PassitoJobsStuck", "PassitoJobsHighFailureRate", "PassitoJobsFailedJobs"}, [
        m.subject for m in stack.mailbox.mails
    ]


def test_every_dashboard_query_returns_series(stack: Stack) -> None:
    """Each panel's PromQL parses on the real Prometheus and returns series (with the worker,
    exporter and operator metrics of this stack)."""
    if not stack.workers_alive():
        stack.start_worker()
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        # Limits high enough not to slow the jobs down: the flow control panels have series.
        Store(conn).flow.set_limits("dashboard", concurrency=1000, rate=Rate(1000, 1.0), key_concurrency=100)
        dispatch_many(
            [JobRequest("SyncSleep", {"seconds": 0.01}, queue="dashboard") for _ in range(20)]
            + [JobRequest("AlwaysPermanent", queue="dashboard")],
            conn=conn,
        )
    missing = queries()

    def all_return_series() -> bool:
        for item in list(missing):
            if stack.prometheus.query(item[1]):
                missing.remove(item)
        return not missing

    with contextlib.suppress(AssertionError):
        wait_for(all_return_series, timeout=30, interval=1, message="every dashboard query to return series")
    assert not missing, f"queries without series: {missing}"
