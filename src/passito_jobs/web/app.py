"""The ASGI application: routes, authentication, error pages, and the server that runs it.

`create_app` wires the pieces; `serve` runs it under uvicorn on a socket it binds itself (port 0
picks a free one, and the log line says which).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from passito_jobs.health.checks import Thresholds
from passito_jobs.queue.limits import printable
from passito_jobs.settings import ConfigError
from passito_jobs.web import api, filters, pages, queues, schedules
from passito_jobs.web.auth import Authenticator, AuthError
from passito_jobs.web.board import Dashboard, dashboard
from passito_jobs.web.db import Database, DatabaseError
from passito_jobs.web.params import BadRequest
from passito_jobs.web.security import SecurityHeaders, check_loopback_host, check_url, load_csrf_key
from passito_jobs.web.settings import WebSettings, is_loopback
from passito_jobs.web.sse import Notifier

log = logging.getLogger("passito_jobs.web")
HERE = Path(__file__).parent
PUBLIC = ("/healthz", "/readyz", "/static/")


class Guard:
    """Authenticates every request but the probes and static files; marks HTTPS behind a
    trusted proxy (X-Forwarded-Proto is believed only from PASSITO_WEB_TRUSTED_PROXIES)."""

    def __init__(self, app: ASGIApp, auth: Authenticator) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        peer = scope["client"][0] if scope.get("client") else None
        state = scope.setdefault("state", {})
        if (
            self.auth.is_trusted_proxy(peer)
            and request.headers.get("x-forwarded-proto", "").lower() == "https"
        ):
            state["forwarded_https"] = True
        if not scope["path"].startswith(PUBLIC):
            try:
                state["user"] = await self.auth.authenticate(request.headers, peer)
            except AuthError as exc:
                headers = {"WWW-Authenticate": exc.challenge} if exc.challenge else {}
                response = error_response(request, exc.status, exc.message, headers)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class Precheck:
    """Refuses a request before any route sees it: `check(scope)` raises BadRequest. Used for a
    path or query that is not UTF-8 once percent-decoded (security.check_url: Starlette would
    put U+FFFD in its place) and, without authentication, a Host that is not this machine
    (security.check_loopback_host)."""

    def __init__(self, app: ASGIApp, check: Callable[[Scope], None]) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                self.check(scope)
            except BadRequest as exc:
                response = error_response(Request(scope), exc.status, exc.message)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def error_response(
    request: Request, status: int, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    if wants_json(request):
        return JSONResponse({"error": {"status": status, "message": message}}, status, headers=headers)
    board: Dashboard | None = (
        getattr(request.app.state, "dashboard", None) if "app" in request.scope else None
    )
    if board is None:
        return PlainTextResponse(message, status, headers=headers)
    html = board.templates.get_template("error.html").render(
        status=status, message=message, user=None, path="", read_only=False
    )
    return HTMLResponse(html, status, headers=headers)


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return error_response(request, exc.status, exc.message)


async def _database_error(request: Request, exc: Exception) -> Response:
    return error_response(request, 503, str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "no such page", 405: "method not allowed"}
    return error_response(
        request, exc.status_code, messages.get(exc.status_code, str(exc.detail)), exc.headers
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, printable(request.url.path, 200), exc_info=exc)
    return error_response(request, 500, "internal error (logged on the server)")


def routes() -> list[BaseRoute]:
    return [
        *queues.routes(),
        *schedules.routes(),
        *api.routes(),
        *pages.routes(),
        Route("/healthz", lambda _: PlainTextResponse("ok\n")),
        Route("/readyz", _ready),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


async def _ready(request: Request) -> Response:
    """The readiness probe, open to anyone: it says only whether the database answers; why not
    (which host, port and database, the driver's error) goes to the server's log."""
    try:
        await dashboard(request).db.run(lambda admin: admin.job_states([]))
    except DatabaseError as exc:
        log.warning("not ready: %s", exc)
        return PlainTextResponse("database unavailable\n", 503)
    return PlainTextResponse("ok\n")


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    filters.register(env)
    return env


def create_app(
    web: WebSettings,
    database_url: str,
    *,
    thresholds: Thresholds,
    connect_timeout: float = 5.0,
    listen: bool = True,
) -> Starlette:
    """The dashboard as an ASGI app (its Dashboard group, where the database is, the health
    thresholds); raises ConfigError for an unreadable users, tokens or CSRF key file. `listen=False`
    (PASSITO_LISTEN, a transaction pooler): no LISTEN, no prepared statements."""
    csrf_key = load_csrf_key(web)
    board = Dashboard(
        web=web,
        db=Database(
            database_url,
            size=web.db_connections,
            connect_timeout=connect_timeout,
            query_timeout=web.query_timeout,
            prepare=listen,
        ),
        auth=Authenticator(web),
        notifier=Notifier(database_url, connect_timeout=connect_timeout, listen=listen),
        templates=templates(),
        thresholds=thresholds,
        csrf_key=csrf_key,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        board.notifier.start()
        try:
            yield
        finally:
            await board.notifier.stop()
            board.db.close()

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        BadRequest: _bad_request,
        DatabaseError: _database_error,
        HTTPException: _http_error,
        Exception: _unexpected,
    }
    app = Starlette(routes=routes(), exception_handlers=handlers, lifespan=lifespan)
    # No redirect of /jobs/ to /jobs: Starlette builds it absolute, from the client's Host and
    # always http (a 307 to http://<any Host>/...); a path with a slash too many is a 404.
    app.router.redirect_slashes = False
    app.state.dashboard = board
    app.add_middleware(Guard, auth=board.auth)
    app.add_middleware(Precheck, check=check_url)
    if not web.auth:
        app.add_middleware(Precheck, check=check_loopback_host)
    app.add_middleware(SecurityHeaders)
    return app


def check_binding(web: WebSettings) -> str:
    """The start-up line about authentication; ConfigError when the address needs one."""
    if web.auth:
        return f"authentication: {', '.join(web.auth)}"
    if not is_loopback(web.host):
        raise ConfigError(
            f"the dashboard would listen on {web.host} without authentication: set PASSITO_WEB_AUTH "
            "(basic, header or token; docs/dashboard.md), or listen on 127.0.0.1"
        )
    return "no authentication: listening on loopback only, so whoever can reach it is an admin"


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: without it, a response written in two parts (headers,
    # body) waits for the client's delayed ACK, 40 ms a request (measured: 44 ms -> 0.6 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


def serve(
    web: WebSettings,
    database_url: str,
    *,
    thresholds: Thresholds,
    connect_timeout: float,
    listen: bool = True,
) -> int:
    """Run the dashboard until SIGTERM or SIGINT."""
    import uvicorn  # noqa: PLC0415 - the server only when serving

    auth_line = check_binding(web)
    app = create_app(web, database_url, thresholds=thresholds, connect_timeout=connect_timeout, listen=listen)
    sock = bind(web.host, web.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # X-Forwarded-* only from trusted proxies: the Guard decides
        server_header=False,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            # The line says the dashboard serves: logged once uvicorn has its signal handlers, so a
            # SIGTERM sent right after it is a graceful stop, never the default action's kill.
            await super().startup(sockets=sockets)
            if not self.should_exit:
                log.info(
                    "dashboard on http://%s:%s/ (%s; read-only: %s)",
                    shown,
                    port,
                    auth_line,
                    str(web.read_only).lower(),
                )

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # A graceful stop exits 0, as `health serve` does (uvicorn would re-raise the signal).
            super().handle_exit(sig, frame)
            self._captured_signals.clear()

    asyncio.run(Server(config).serve(sockets=[sock]))
    log.info("dashboard stopped")
    return 0
