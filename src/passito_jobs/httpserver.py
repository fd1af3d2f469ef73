"""A small HTTP server for /metrics, /healthz and /readyz, on a daemon thread.

Shared by the worker, the health exporter and the local supervisor; the operator uses
kopf's own probes.

Probes must answer even when someone opens connections and sends nothing, so there is no
thread per connection: one thread waits on every socket (selectors), reads each request head
with a deadline (PASSITO probes and scrapes send theirs at once), and answers /healthz and
/readyz itself. Only /metrics, whose collectors may query a database, runs on a small thread
pool. At most `max_connections` are open at once: a new connection beyond that pushes out the
one that has waited longest without sending a complete request, and is answered 503 only when
every open connection is being answered. Every answer closes its connection.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

log = logging.getLogger("passito_jobs.http")

MAX_HEAD_BYTES = 8192
ACCEPTS_PER_ROUND = 32  # then read what arrived, so a flood of connections cannot starve a probe
LINGER = 1.0  # after an answer, read until the client closes (at most this long), so that closing
# a socket with unread bytes does not reset the connection before the client read the answer
TEXT = "text/plain; charset=utf-8"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    deadline: float
    received: bytearray = field(default_factory=bytearray)
    outgoing: bytes = b""  # an answer being written (the request is complete)
    closing: bool = False  # answered: waiting for the client to close (LINGER)


class ProbeServer:
    """Serves Prometheus metrics and two probes until `close()`.

    `ready()` decides /readyz (true: 200). `live()` decides /healthz: None means healthy
    (200 "ok"), a string is the reason it is not (503).
    """

    def __init__(
        self,
        port: int,
        *,
        ready: Callable[[], bool] | None = None,
        live: Callable[[], str | None] | None = None,
        registry: CollectorRegistry = REGISTRY,
        host: str = "0.0.0.0",  # noqa: S104 - probes and scrapes come from outside the pod
        max_connections: int = 256,
        read_timeout: float = 5.0,
    ) -> None:
        self._ready = ready or (lambda: True)
        self._live = live or (lambda: None)
        self._registry = registry
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._listener = socket.create_server((host, port), backlog=256)
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._open: dict[socket.socket, _Connection] = {}  # in the order they were accepted
        self._closing = 0  # of those, answered ones that linger; they do not count against the cap
        self._scrapes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="http-metrics")
        self._scraping = 0  # connections handed to the pool
        self._scraping_lock = threading.Lock()
        self._closed = False
        self._expired_at = 0.0
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()

    def __enter__(self) -> ProbeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(5.0)
        self._scrapes.shutdown(wait=False, cancel_futures=True)
        for conn in list(self._open.values()):
            self._drop(conn)
        self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()

    # ------------------------------------------------------------ the selector thread

    def _serve(self) -> None:
        while not self._closed:
            try:
                events = self._selector.select(timeout=0.25)
            except OSError:  # the selector was closed under us: close() is under way
                return
            for key, mask in events:
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(64)
                elif isinstance(key.data, _Connection):
                    try:
                        if mask & selectors.EVENT_READ:
                            self._read(key.data)
                        elif mask & selectors.EVENT_WRITE:
                            self._write(key.data)
                    except OSError:
                        self._drop(key.data)
                    except Exception:  # one bad request must not stop the probes
                        log.exception("Probe server failed to answer a request")
                        self._drop(key.data)
            now = time.monotonic()
            if now - self._expired_at >= 0.1:
                self._expired_at = now
                self._expire(now)

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_ROUND):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, for one: try again on the next event
                log.warning("Probe server cannot accept a connection: %s", exc)
                return
            sock.setblocking(False)
            busy = len(self._open) - self._closing + self._scraping
            refuse = busy >= self.max_connections and not self._evict_one()
            if refuse and self._closing >= self.max_connections:
                sock.close()  # a flood: not even a polite 503
                continue
            conn = _Connection(sock, time.monotonic() + self.read_timeout)
            self._open[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            if refuse:
                self._answer(conn, 503, b"too many connections\n")

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest without a complete request."""
        for conn in self._open.values():
            if not (conn.outgoing or conn.closing):
                self._drop(conn)
                return True
        return False

    def _read(self, conn: _Connection) -> None:
        data = conn.sock.recv(4096)
        if not data or conn.closing:
            if not data:
                self._drop(conn)
            return  # what a client sends after its answer is discarded
        conn.received += data
        head = bytes(conn.received)
        if len(head) > MAX_HEAD_BYTES:
            self._answer(conn, 431, b"request head too large\n")
            return
        line_end = head.find(b"\n")
        if line_end < 0:
            return
        words = head[:line_end].strip().split()
        if len(words) != 3 or not words[2].startswith(b"HTTP/1."):
            # HTTP/0.9 (no version) sends no headers: answer now rather than wait for them.
            self._answer(conn, 505 if len(words) == 2 else 400, b"use HTTP/1.0 or HTTP/1.1\n")
            return
        if b"\r\n\r\n" not in head and b"\n\n" not in head:
            return
        method, target = words[0], words[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            self._answer(conn, 405, b"only GET and HEAD\n")
        elif target == b"/healthz":
            problem = _call(self._live, "health check failed")
            if problem is None:
                self._answer(conn, 200, b"ok\n", head_only=method == b"HEAD")
            else:
                body = f"unhealthy: {problem}\n".encode("utf-8", "backslashreplace")
                self._answer(conn, 503, body, head_only=method == b"HEAD")
        elif target == b"/readyz":
            ok = _call(lambda: None if self._ready() else "not ready", "readiness check failed") is None
            body = b"ready\n" if ok else b"not ready\n"
            self._answer(conn, 200 if ok else 503, body, head_only=method == b"HEAD")
        elif target == b"/metrics":
            self._hand_to_pool(conn, head_only=method == b"HEAD")
        else:
            self._answer(conn, 404, b"not found: try /metrics, /healthz or /readyz\n")

    def _answer(self, conn: _Connection, status: int, body: bytes, *, head_only: bool = False) -> None:
        conn.outgoing = _response(status, body, head_only=head_only)
        conn.deadline = time.monotonic() + self.read_timeout
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Connection) -> None:
        sent = conn.sock.send(conn.outgoing)
        conn.outgoing = conn.outgoing[sent:]
        if not conn.outgoing:
            conn.sock.shutdown(socket.SHUT_WR)
            conn.closing = True
            self._closing += 1
            conn.deadline = time.monotonic() + LINGER
            self._selector.modify(conn.sock, selectors.EVENT_READ, conn)

    def _expire(self, now: float) -> None:
        for conn in list(self._open.values()):
            if now >= conn.deadline:
                self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        if self._open.pop(conn.sock, None) is None:
            return
        if conn.closing:
            self._closing -= 1
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    # ------------------------------------------------------------ /metrics on the pool

    def _hand_to_pool(self, conn: _Connection, *, head_only: bool) -> None:
        self._open.pop(conn.sock, None)
        self._selector.unregister(conn.sock)
        with self._scraping_lock:
            self._scraping += 1
        try:
            self._scrapes.submit(self._scrape, conn.sock, head_only)
        except RuntimeError:  # closing
            self._scraped(conn.sock)

    def _scrape(self, sock: socket.socket, head_only: bool) -> None:
        try:
            try:
                answer = _response(
                    200, generate_latest(self._registry), CONTENT_TYPE_LATEST, head_only=head_only
                )
            except Exception as exc:
                log.warning("Collecting metrics failed: %s", exc)
                answer = _response(500, b"collecting metrics failed\n")
            sock.settimeout(max(self.read_timeout, 10.0))
            with contextlib.suppress(OSError):
                sock.sendall(answer)
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(LINGER)
                while sock.recv(4096):
                    pass
        finally:
            self._scraped(sock)

    def _scraped(self, sock: socket.socket) -> None:
        sock.close()
        with self._scraping_lock:
            self._scraping -= 1


def _call(check: Callable[[], str | None], failed: str) -> str | None:
    try:
        return check()
    except Exception as exc:
        return f"{failed}: {type(exc).__name__}"


def _response(status: int, body: bytes, content_type: str = TEXT, *, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body
