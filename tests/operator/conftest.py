"""Fixtures for the operator tests: the API emulator, and the real kopf runtime against it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kopf.testing import KopfRunner

from tests.helpers import free_port
from tests.operator.cluster import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    emulator = Cluster().start()
    yield emulator
    emulator.stop()


@pytest.fixture
def ports() -> dict[str, int]:
    return {"metrics": free_port(), "liveness": free_port()}


@pytest.fixture
def operator_env(
    monkeypatch: pytest.MonkeyPatch, cluster: Cluster, database_url: str, ports: dict[str, int]
) -> dict[str, str]:
    """The operator's settings; KopfRunner runs it in this process, so they go to os.environ."""
    env = {
        "PASSITO_KUBE_SERVER": cluster.url,
        "PASSITO_DATABASE_URL": database_url,
        "PASSITO_OPERATOR_METRICS_PORT": str(ports["metrics"]),
        "PASSITO_CONNECT_TIMEOUT": "10",  # a loaded machine may take seconds to connect
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def operator(operator_env: dict[str, str], ports: dict[str, int]) -> Iterator[KopfRunner]:
    """`kopf run --standalone` of the operator module, for the length of the test."""
    args = [
        "run",
        "--standalone",
        "--all-namespaces",
        f"--liveness=http://127.0.0.1:{ports['liveness']}/healthz",
        "-m",
        "passito_jobs.supervisor.operator",
    ]
    with KopfRunner(args, timeout=60) as runner:
        yield runner
    assert runner.exception is None, runner.output
    assert runner.exit_code == 0, runner.output
