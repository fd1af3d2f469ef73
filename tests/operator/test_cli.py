"""`passito-jobs operator` as a process: settings, probes, metrics, scaling and SIGTERM."""

from __future__ import annotations

import contextlib
import http.server
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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


class _NotKubernetes(http.server.BaseHTTPRequestHandler):
    """A plain HTTP server: 404 for everything, or (`half`) an APIVersions at /api and 404 for
    the rest, so the operator starts and kopf's discovery of /apis then fails."""

    half = False

    def do_GET(self) -> None:
        if self.half and self.path.split("?")[0] == "/api":
            status, body = 200, json.dumps({"kind": "APIVersions", "versions": ["v1"]}).encode()
        else:
            status, body = 404, b"404 page not found\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

    def log_message(self, *args: Any) -> None:
        pass


class _HalfKubernetes(_NotKubernetes):
    half = True


@contextlib.contextmanager
def _loopback_server(kind: str) -> Iterator[str]:
    """The URL of a loopback server of `kind`: not-kubernetes, half-kubernetes, refusing (nothing
    listens) or silent (accepts the connection, never answers)."""
    if kind == "refusing":
        yield f"http://127.0.0.1:{free_port()}"
        return
    if kind == "silent":
        with socket.create_server(("127.0.0.1", 0)) as listener:
            yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        return
    handler = _HalfKubernetes if kind == "half-kubernetes" else _NotKubernetes
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
        "current-context": "c",
    }
    path.write_text(json.dumps(config))  # YAML is a superset of JSON
    return path


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        (
            "not-kubernetes",
            "the server at {url} is not a Kubernetes API: GET /api answered HTTP 404 (404 page not found)",
        ),
        (
            "refusing",
            "cannot reach the Kubernetes API at {url} within 2s (PASSITO_CONNECT_TIMEOUT): "
            "Connection refused",
        ),
        ("silent", "cannot reach the Kubernetes API at {url} within 2s (PASSITO_CONNECT_TIMEOUT): timed out"),
        ("half-kubernetes", "the operator stopped: a Kubernetes API request failed: 404 page not found"),
    ],
)
def test_operator_against_a_kubeconfig_server_that_is_not_kubernetes_exits_2_in_one_line(
    cli_env: dict[str, str], tmp_path: Path, kind: str, error: str
) -> None:
    """A real kubeconfig pointing at a real loopback server that is not a Kubernetes API: one
    line, exit 2, no traceback on either stream (kopf's own log lines included)."""
    env = {k: v for k, v in cli_env.items() if k != "PASSITO_KUBE_SERVER"}
    env.update({"PASSITO_CONNECT_TIMEOUT": "2", "PASSITO_OPERATOR_METRICS_PORT": "0", "HOME": str(tmp_path)})
    with _loopback_server(kind) as url:
        env["KUBECONFIG"] = str(_kubeconfig(tmp_path / "kubeconfig", url))
        started = time.monotonic()
        result = run_cli(["operator", "--liveness-port", "0"], env)
        elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert result.stderr.strip().splitlines()[-1] == f"passito-jobs: error: {error.format(url=url)}"
    if kind == "silent":
        assert elapsed >= 2  # it waited for the connect timeout
    else:
        assert result.stderr.count("\n") < 10, output  # kopf's one-line failure, no retry storm


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
