"""The operator in the real kopf runtime, against the Kubernetes API emulator and a real PostgreSQL.

Each test drives the system as a user would (jobs in the queue, `kubectl scale`, annotations on
the WorkerAutoscaler, a database that stops answering) and asserts on what a user sees: the
Deployment's replicas, the WorkerAutoscaler's status, the Events and the Prometheus metrics.
Short intervals (pollingInterval 1s, cooldownPeriod 2s) keep each test to a few seconds.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg.conninfo import conninfo_to_dict

from passito_jobs import JobRequest, dispatch_many
from passito_jobs.queue.store import Store
from tests.helpers import wait_for
from tests.operator.cluster import Cluster

Conn = psycopg.Connection[Any]

OLD_POLICY = {
    "scaleTargetRef": {"name": "worker"},
    "minReplicas": 1,
    "maxReplicas": 10,
    "scaleUpThreshold": 5,
    "scaleDownThreshold": 2,
    "pollingInterval": 1,
    "cooldownPeriod": 2,
}

pytestmark = pytest.mark.usefixtures("operator")


def backlog(conn: Conn, count: int) -> list[int]:
    """Jobs that stay pending: no worker runs in these tests."""
    return dispatch_many([JobRequest("Sleep", {"seconds": 0}) for _ in range(count)], conn=conn)


def event_time(cluster: Cluster, reason: str) -> datetime:
    """When the last `reason` Event was posted (kopf posts Events in the background)."""
    found = wait_for(
        lambda: [e for e in cluster.events() if e["reason"] == reason], message=f"a {reason} event"
    )
    return datetime.fromisoformat(found[-1]["firstTimestamp"])


def assert_event(cluster: Cluster, line: str) -> None:
    """Wait for an Event `Type Reason: message` (kopf posts Events in the background)."""
    wait_for(lambda: line in cluster.event_lines(), timeout=60, message=f"the event {line!r}")


def assert_event_starting(cluster: Cluster, start: str) -> None:
    wait_for(
        lambda: any(line.startswith(start) for line in cluster.event_lines()),
        timeout=60,
        message=f"an event starting {start!r}",
    )


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("passito_jobs_autoscaler_")
    }


def metric(port: int, name: str, **labels: str) -> float | None:
    key = (name, tuple(sorted({"namespace": "default", "autoscaler": "worker", **labels}.items())))
    return metrics(port).get(key)


def test_backlog_scales_out_then_in_after_the_cooldown(
    cluster: Cluster, conn: Conn, ports: dict[str, int]
) -> None:
    cluster.create_deployment("worker", replicas=1)
    cluster.create_autoscaler("worker", OLD_POLICY)
    wait_for(lambda: cluster.condition("worker", "Ready").get("status") == "True", message="first poll")

    ids = backlog(conn, 39)
    wait_for(lambda: cluster.replicas("worker") == 8, message="scale out to 8")
    assert_event(cluster, "Normal ScaledUp: 1 -> 8 (load 39, 5 per worker)")
    status = cluster.status("worker")
    assert (status["load"], status["desiredReplicas"], status["currentReplicas"]) == (39, 8, 8)
    assert status["lastScaleReason"] == "1 -> 8 (load 39, 5 per worker)"
    assert status["observedGeneration"] == 1
    assert cluster.condition("worker", "Active")["status"] == "True"
    assert metric(ports["metrics"], "passito_jobs_autoscaler_desired_replicas") == 8
    assert metric(ports["metrics"], "passito_jobs_autoscaler_load") == 39

    Store(conn).cancel(ids)  # the queue drains
    wait_for(lambda: cluster.replicas("worker") == 1, message="scale in to 1")
    assert_event(cluster, "Normal ScaledDown: 8 -> 1 (load 0, below 2 per worker)")
    held = (event_time(cluster, "ScaledDown") - event_time(cluster, "ScaledUp")).total_seconds()
    assert held >= OLD_POLICY["cooldownPeriod"], "scaled in before the cooldown"
    assert cluster.condition("worker", "Active")["status"] == "False"
    wait_for(lambda: metric(ports["metrics"], "passito_jobs_autoscaler_current_replicas") == 1)
    assert metric(ports["metrics"], "passito_jobs_autoscaler_scale_events_total", direction="up") == 1
    assert metric(ports["metrics"], "passito_jobs_autoscaler_scale_events_total", direction="down") == 1
    assert metric(ports["metrics"], "passito_jobs_autoscaler_paused") == 0

    with urllib.request.urlopen(f"http://127.0.0.1:{ports['liveness']}/healthz", timeout=5) as response:
        assert response.status == 200
        assert json.loads(response.read())["autoscalers"] == 1


def test_paused_annotation_freezes_scaling(cluster: Cluster, conn: Conn, ports: dict[str, int]) -> None:
    cluster.create_deployment("worker", replicas=1)
    cluster.create_autoscaler("worker", OLD_POLICY, annotations={"jobs.passito.io/paused": "true"})
    backlog(conn, 39)
    wait_for(
        lambda: (
            cluster.status("worker").get("load") == 39
            and cluster.condition("worker", "Paused").get("status") == "True"
        ),
        message="a paused poll that saw the backlog",
    )
    assert cluster.replicas("worker") == 1
    assert cluster.status("worker")["desiredReplicas"] == 1
    assert metric(ports["metrics"], "passito_jobs_autoscaler_paused") == 1
    assert_event_starting(cluster, "Normal Paused: paused by annotation")

    cluster.annotate_autoscaler("worker", {"jobs.passito.io/paused": None})
    wait_for(lambda: cluster.replicas("worker") == 8, message="scaling resumed")
    assert cluster.condition("worker", "Paused")["status"] == "False"
    assert_event(cluster, "Normal Resumed: pause annotations removed: autoscaling resumed")


def test_paused_replicas_annotation_sets_replicas_and_freezes(cluster: Cluster, conn: Conn) -> None:
    cluster.create_deployment("worker", replicas=1)
    cluster.create_autoscaler("worker", OLD_POLICY, annotations={"jobs.passito.io/paused-replicas": "3"})
    wait_for(lambda: cluster.replicas("worker") == 3, message="paused-replicas applied")
    backlog(conn, 39)
    wait_for(lambda: cluster.status("worker").get("load") == 39, message="a poll that saw the backlog")
    assert cluster.replicas("worker") == 3
    assert cluster.condition("worker", "Paused")["status"] == "True"
    assert_event(
        cluster,
        "Normal ScaledUp: 1 -> 3 (paused at 3 replicas by annotation jobs.passito.io/paused-replicas)",
    )

    cluster.annotate_autoscaler("worker", {"jobs.passito.io/paused-replicas": None})
    wait_for(lambda: cluster.replicas("worker") == 8, message="scaling resumed")
    # No manual-override hold: the autoscaler itself set the 3 replicas.
    assert not any("ManualOverride:" in line for line in cluster.event_lines())


def test_manual_scale_is_held_for_the_override_period_then_autoscaling_resumes(cluster: Cluster) -> None:
    cluster.create_deployment("worker", replicas=1)
    cluster.create_autoscaler("worker", {**OLD_POLICY, "manualOverrideSeconds": 10})
    wait_for(
        lambda: (
            (cluster.deployment("worker") or {})["metadata"]
            .get("annotations", {})
            .get("jobs.passito.io/scaled-replicas")
            == "1"
        ),
        message="the autoscaler claims the Deployment",
    )

    cluster.kubectl_scale("worker", 4)
    wait_for(lambda: cluster.condition("worker", "ManualOverride").get("status") == "True", message="hold")
    assert cluster.replicas("worker") == 4
    assert cluster.status("worker")["manualOverrideReplicas"] == 4
    assert_event(
        cluster, "Normal ManualOverride: replicas changed from 1 to 4 by someone else: leaving them for 10s"
    )

    wait_for(lambda: cluster.replicas("worker") == 1, message="autoscaling resumed")
    held = (event_time(cluster, "ScaledDown") - event_time(cluster, "ManualOverride")).total_seconds()
    assert held >= 10, f"the manual change was overridden after {held:.1f}s"
    assert_event(
        cluster, "Normal ManualOverrideEnded: manual override of 4 replicas expired: autoscaling resumed"
    )
    assert cluster.condition("worker", "ManualOverride")["status"] == "False"
    assert "manualOverrideUntil" not in cluster.status("worker")


@pytest.fixture
def database_outage(pg_admin_url: str, database_url: str) -> Iterator[tuple[Any, Any]]:
    """Callables that make the test's database refuse connections, and accept them again."""
    name = conninfo_to_dict(database_url)["dbname"]

    def admin(sql: str) -> None:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(sql)

    def start() -> None:
        admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")

    def end() -> None:
        admin(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")

    yield start, end
    end()


def test_database_outage_sets_fallback_replicas_and_warns(
    cluster: Cluster, database_outage: tuple[Any, Any], ports: dict[str, int]
) -> None:
    start_outage, end_outage = database_outage
    cluster.create_deployment("worker", replicas=1)
    cluster.create_autoscaler("worker", {**OLD_POLICY, "fallback": {"replicas": 2, "failureThreshold": 2}})
    wait_for(lambda: cluster.condition("worker", "Ready").get("status") == "True", message="first poll")

    start_outage()
    wait_for(lambda: cluster.replicas("worker") == 2, message="fallback replicas")
    assert_event_starting(cluster, "Warning DatabaseUnavailable: cannot read the queue (")
    assert_event(cluster, "Warning Fallback: database unreachable 2 times in a row: fallback to 2 replicas")
    assert cluster.condition("worker", "Fallback")["status"] == "True"
    assert cluster.condition("worker", "Ready")["reason"] == "DatabaseUnavailable"
    errors = metric(ports["metrics"], "passito_jobs_autoscaler_database_errors_total")
    assert errors is not None
    assert errors >= 2

    end_outage()
    wait_for(lambda: cluster.condition("worker", "Fallback").get("status") == "False", message="recovery")
    assert_event(cluster, "Normal FallbackEnded: database reachable again: autoscaling resumed")
    wait_for(lambda: cluster.replicas("worker") == 1, message="back to the policy after the cooldown")
    assert cluster.condition("worker", "Ready")["status"] == "True"


def test_missing_deployment_is_a_warning_not_a_crash(cluster: Cluster, conn: Conn) -> None:
    cluster.create_autoscaler("worker", OLD_POLICY)
    wait_for(lambda: cluster.condition("worker", "Ready").get("reason") == "TargetNotFound", message="warn")
    assert_event(cluster, "Warning TargetNotFound: Deployment worker not found")
    backlog(conn, 12)
    cluster.create_deployment("worker", replicas=1)
    wait_for(lambda: cluster.replicas("worker") == 3, message="the Deployment is scaled once it exists")
    assert cluster.condition("worker", "Ready")["status"] == "True"


def test_invalid_pause_annotation_is_a_warning(cluster: Cluster) -> None:
    cluster.create_deployment("worker", replicas=1)
    cluster.create_autoscaler("worker", OLD_POLICY, annotations={"jobs.passito.io/paused-replicas": "many"})
    wait_for(lambda: cluster.condition("worker", "Ready").get("reason") == "InvalidSpec", message="warning")
    assert_event(
        cluster,
        "Warning InvalidSpec: annotation jobs.passito.io/paused-replicas must be a whole number >= 0, "
        'got "many"',
    )
    assert cluster.replicas("worker") == 1


def test_a_refused_api_request_is_a_warning_once_and_retried(cluster: Cluster, conn: Conn) -> None:
    deployment = "/apis/apps/v1/namespaces/default/deployments/worker"
    cluster.create_deployment("worker", replicas=1)
    cluster.forbid("PATCH", deployment)
    cluster.create_autoscaler("worker", OLD_POLICY)
    backlog(conn, 39)
    assert_event_starting(
        cluster, f"Warning KubernetesApiError: PATCH {deployment}: HTTP 403 forbidden by the test"
    )
    assert cluster.replicas("worker") == 1

    cluster.forbid("PATCH", deployment, forbidden=False)
    wait_for(lambda: cluster.replicas("worker") == 8, message="scaled once allowed")
    warnings = [line for line in cluster.event_lines() if "KubernetesApiError" in line]
    assert len(warnings) == 1, warnings


def test_a_paused_queue_adds_no_workers_and_a_limited_one_at_most_its_capacity(
    cluster: Cluster, conn: Conn
) -> None:
    """Flow control (docs/flow-control.md): the operator scales on the work a claim could take."""
    flow = Store(conn).flow
    flow.pause("default")
    backlog(conn, 39)  # in the paused queue "default"
    dispatch_many([JobRequest("Sleep", {"seconds": 0}, queue="other")], conn=conn)
    cluster.create_deployment("worker", replicas=1)
    cluster.create_autoscaler("worker", OLD_POLICY)
    wait_for(lambda: cluster.status("worker").get("load") == 1, message="a poll that saw the other queue")
    assert cluster.replicas("worker") == 1  # the paused queue's 39 jobs add no worker

    flow.set_limits("default", concurrency=10)
    flow.resume("default")
    wait_for(lambda: cluster.status("worker").get("load") == 11, message="a poll after the resume")
    # At most its capacity: 10 of the 39 (plus the other queue's job), 5 per worker.
    wait_for(lambda: cluster.replicas("worker") == 3, message="scale out to 3, not 8")
    assert_event(cluster, "Normal ScaledUp: 1 -> 3 (load 11, 5 per worker)")

    flow.set_limits("default", concurrency=None)
    wait_for(lambda: cluster.replicas("worker") == 8, message="without the limit, scale out to 8")

    flow.pause("default")
    wait_for(lambda: cluster.replicas("worker") == 1, message="paused again, scale in after the cooldown")
    assert_event(cluster, "Normal ScaledDown: 8 -> 1 (load 1, below 2 per worker)")
