"""`passito-jobs operator` as a process: settings, probes, metrics, scaling and SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from passito_jobs import JobRequest, dispatch_many
from tests.helpers import http_get, run_cli, wait_for
from tests.operator.cluster import Cluster
from tests.operator.conftest import free_port
from tests.operator.test_operator import OLD_POLICY


def test_operator_refuses_to_start_without_a_database_url(cli_env: dict[str, str]) -> None:
    env = {k: v for k, v in cli_env.items() if k != "PASSITO_DATABASE_URL"}
    result = run_cli(["operator"], env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "passito-jobs: error: PASSITO_DATABASE_URL must be set: the operator reads the queue from it "
        "(it never starts an embedded PostgreSQL)"
    ]


def test_operator_without_a_cluster_is_one_line_and_exit_2(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env.items() if k not in {"KUBECONFIG", "PASSITO_KUBE_SERVER"}}
    result = run_cli(["operator"], {**env, "HOME": str(tmp_path)})  # no ~/.kube/config there
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "passito-jobs: error: no Kubernetes cluster to operate on: not in a pod (no service account), "
        "no kubeconfig (KUBECONFIG or ~/.kube/config), and PASSITO_KUBE_SERVER is not set"
    ]


def test_operator_with_an_unreachable_api_server_is_one_line_and_exit_2(cli_env: dict[str, str]) -> None:
    closed = free_port()  # nothing listens there
    env = {**cli_env, "PASSITO_KUBE_SERVER": f"https://127.0.0.1:{closed}", "PASSITO_CONNECT_TIMEOUT": "3"}
    result = run_cli(["operator"], env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"passito-jobs: error: cannot reach the Kubernetes API at https://127.0.0.1:{closed} within 3s "
        "(PASSITO_CONNECT_TIMEOUT): Connection refused"
    ]


@pytest.mark.parametrize(
    "namespaces",
    [None, "default"],
    ids=["cluster-wide", "one-namespace-as-the-chart-runs-it"],
)
def test_operator_process_scales_serves_probes_and_stops_on_sigterm(
    cluster: Cluster,
    cli_env: dict[str, str],
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    namespaces: str | None,
) -> None:
    metrics_port, liveness_port = free_port(), free_port()
    env = {**cli_env, "PASSITO_KUBE_SERVER": cluster.url}
    if namespaces:
        env["PASSITO_OPERATOR_NAMESPACES"] = namespaces
    log_path = tmp_path / "operator.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "passito_jobs",
                "operator",
                "--metrics-port",
                str(metrics_port),
                "--liveness-port",
                str(liveness_port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for(
            lambda: http_get(f"http://127.0.0.1:{liveness_port}/healthz")[0] == 200,
            message="the liveness probe",
        )
        cluster.create_deployment("worker", replicas=1)
        cluster.create_autoscaler("worker", OLD_POLICY)
        dispatch_many([JobRequest("Sleep") for _ in range(20)], conn=conn)
        wait_for(lambda: cluster.replicas("worker") == 4, message="scale out to 4")
        # The patch of the Deployment comes before the metrics of that poll are set: wait for both.
        desired = 'passito_jobs_autoscaler_desired_replicas{autoscaler="worker",namespace="default"} 4.0'
        wait_for(
            lambda: desired in http_get(f"http://127.0.0.1:{metrics_port}/metrics")[1].decode(),
            message="the desired replicas metric",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    output = log_path.read_text()
    assert code == 0, output
    assert "[Operator " in output
    assert "ScaledUp: 1 -> 4 (load 20, 5 per worker)" in output
    assert "Traceback" not in output
    assert "Not enough permissions" not in output


def test_operator_reports_an_unreachable_database_without_the_password(
    cluster: Cluster, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # libpq ends userinfo at the first @: the rest of the password becomes a host it cannot resolve,
    # and its error quotes that host.
    env = {
        **cli_env,
        "PASSITO_KUBE_SERVER": cluster.url,
        "PASSITO_DATABASE_URL": "postgresql://passito:p@ss-hunter2-Sekret@127.0.0.1:1/passito",
        "PASSITO_CONNECT_TIMEOUT": "1",
        "PASSITO_OPERATOR_METRICS_PORT": "0",
    }
    liveness_port = free_port()
    log_path = tmp_path / "operator.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "passito_jobs", "operator", "--liveness-port", str(liveness_port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{liveness_port}/healthz")[0] == 200, message="liveness")
        cluster.create_deployment("worker", replicas=1)
        cluster.create_autoscaler(
            "worker", {**OLD_POLICY, "fallback": {"replicas": 2, "failureThreshold": 1}}
        )
        wait_for(lambda: cluster.replicas("worker") == 2, message="fallback replicas")
        unavailable = wait_for(
            lambda: [line for line in cluster.event_lines() if "DatabaseUnavailable" in line],
            message="a DatabaseUnavailable event",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    shown = "\n".join([log_path.read_text(), *cluster.event_lines(), json.dumps(cluster.status("worker"))])
    for piece in ("hunter2", "Sekret"):
        assert piece not in shown
    assert "failed to resolve host '***@127.0.0.1'" in unavailable[0]
