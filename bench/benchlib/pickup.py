"""Pickup reports: a handler's first-line time, sent to the benchmark over UDP on loopback.

UDP keeps the handler's side to one `sendto` and lets the benchmark wait without polling any
database, so measuring does not load the machine whose latency it measures.
"""

from __future__ import annotations

import json
import os
import socket

ADDR_ENV = "BENCH_PICKUP_ADDR"
SYSTEM_ENV = "BENCH_PICKUP_SYSTEM"

_sock: socket.socket | None = None


def report_pickup(t0: object, first_line: float) -> None:
    """Send (system, producer time, first-line time) to BENCH_PICKUP_ADDR, if it is set."""
    global _sock  # noqa: PLW0603 - one socket per process, made on first use
    addr = os.environ.get(ADDR_ENV)
    if not addr or not isinstance(t0, int | float):
        return
    host, port = addr.rsplit(":", 1)
    if _sock is None:
        _sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    message = {"system": os.environ.get(SYSTEM_ENV, "?"), "t0": t0, "t1": first_line}
    _sock.sendto(json.dumps(message).encode(), (host, int(port)))


class PickupReceiver:
    """The benchmark's end: one UDP socket on loopback that the handlers report to."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        host, port = self.sock.getsockname()
        self.addr = f"{host}:{port}"

    def receive(self, timeout: float) -> dict[str, object]:
        self.sock.settimeout(timeout)
        data, _ = self.sock.recvfrom(4096)
        return dict(json.loads(data))

    def drain(self) -> None:
        """Forget reports left over from an earlier sample (a late one after a timeout)."""
        self.sock.setblocking(False)
        try:
            while True:
                self.sock.recvfrom(4096)
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()
