"""The probe server (/metrics, /healthz, /readyz of workers, exporter and supervisor) under
idle, slow and old-fashioned clients."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from passito_jobs.httpserver import MAX_HEAD_BYTES, ProbeServer
from tests.helpers import WorkerProcess, free_port, http_get, wait_for


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> tuple[bytes, float]:
    """Send `data`, read until the server closes; (everything read, seconds it took)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received, time.monotonic() - started


@pytest.fixture
def probes() -> Iterator[ProbeServer]:
    with ProbeServer(
        0, host="127.0.0.1", live=lambda: None, ready=lambda: True, registry=CollectorRegistry()
    ) as server:
        yield server


@pytest.mark.slow
def test_a_worker_answers_healthz_while_1000_idle_connections_are_open(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    worker = WorkerProcess(cli_env, tmp_path / "worker.log", "--metrics-port", str(port))
    idle: list[socket.socket] = []
    try:
        wait_for(lambda: http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200, message="the worker")
        for _ in range(1000):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        started = time.monotonic()
        status, body = http_get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert (status, body) == (200, b"ok\n")
        # Well under the 5 s read timeout a probe stuck behind the idle connections would wait
        # (generous: a loaded machine is slow to answer anything).
        assert time.monotonic() - started < 3.0
        assert http_get(f"http://127.0.0.1:{port}/metrics")[0] == 200
    finally:
        for sock in idle:
            sock.close()
        assert worker.stop() == 0


def test_an_idle_connection_is_closed_after_the_read_timeout() -> None:
    with ProbeServer(0, host="127.0.0.1", read_timeout=0.3, registry=CollectorRegistry()) as server:
        received, took = raw_request(server.port, b"GET /healthz HTTP/1.1\r\n")  # never finished
    assert received == b""
    assert 0.25 < took < 3.0


def test_an_http_0_9_request_is_answered_and_closed_at_once(probes: ProbeServer) -> None:
    received, took = raw_request(probes.port, b"GET /healthz\r\n")
    assert received.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n")
    assert took < 3.0  # not after the 5 s read timeout


def test_healthz_readyz_and_errors(probes: ProbeServer) -> None:
    base = f"http://127.0.0.1:{probes.port}"
    assert http_get(f"{base}/healthz") == (200, b"ok\n")
    assert http_get(f"{base}/readyz?verbose=1") == (200, b"ready\n")
    assert http_get(f"{base}/nope")[0] == 404
    received, _ = raw_request(probes.port, b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 405 ")
    received, _ = raw_request(probes.port, b"HEAD /healthz HTTP/1.0\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b"\r\n\r\n")  # no body
    received, _ = raw_request(probes.port, b"GET /" + b"x" * (MAX_HEAD_BYTES - 4))  # one byte too many
    assert received.startswith(b"HTTP/1.1 431 ")


def test_healthz_says_why_a_process_is_unhealthy() -> None:
    problem: list[str | None] = ["the claim loop made no round trip for 75s with free slots"]

    def broken() -> bool:
        raise RuntimeError("boom")

    with ProbeServer(
        0, host="127.0.0.1", live=lambda: problem[0], ready=broken, registry=CollectorRegistry()
    ) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert http_get(f"{base}/healthz") == (
            503,
            b"unhealthy: the claim loop made no round trip for 75s with free slots\n",
        )
        assert http_get(f"{base}/readyz") == (503, b"not ready\n")
        problem[0] = None
        assert http_get(f"{base}/healthz") == (200, b"ok\n")


class SlowCollector(Collector):
    """A collector that waits (as the exporter's database query may) until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.waiting = 0

    def collect(self) -> Iterator[Metric]:
        self.waiting += 1
        self.release.wait(30)
        yield GaugeMetricFamily("slow_gauge", "A gauge behind a slow query.", value=1)


def test_connections_beyond_the_cap_get_503_and_probes_pass_slow_scrapes() -> None:
    registry = CollectorRegistry()
    slow = SlowCollector()
    registry.register(slow)
    with ProbeServer(0, host="127.0.0.1", registry=registry, max_connections=3) as server:
        results: list[Any] = []
        scrapes = [
            threading.Thread(
                target=lambda: results.append(http_get(f"http://127.0.0.1:{server.port}/metrics"))
            )
            for _ in range(2)
        ]
        for scrape in scrapes:
            scrape.start()
        wait_for(lambda: slow.waiting == 2, message="two scrapes in the slow collector")
        # A probe is answered while both scrapes wait; it takes the third and last connection.
        assert http_get(f"http://127.0.0.1:{server.port}/healthz") == (200, b"ok\n")
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as idle:
            # The idle connection takes the last place; a probe pushes it out and is answered.
            assert http_get(f"http://127.0.0.1:{server.port}/healthz") == (200, b"ok\n")
            assert idle.recv(100) == b""
        scrapes.append(
            threading.Thread(
                target=lambda: results.append(http_get(f"http://127.0.0.1:{server.port}/metrics"))
            )
        )
        scrapes[-1].start()
        wait_for(lambda: slow.waiting == 3, message="three scrapes in the slow collector")
        # Every connection is being answered: a new one is refused at once.
        received, took = raw_request(server.port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert received.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
        assert received.endswith(b"too many connections\n")
        assert took < 3.0  # refused, not queued behind the slow scrapes
        slow.release.set()
        for scrape in scrapes:
            scrape.join(30)
    assert [status for status, _ in results] == [200, 200, 200]
    assert all(b"slow_gauge 1.0" in body for _, body in results)
