"""`passito-jobs web` (the dashboard and admin API) and `web hash-password` (a users-file or
tokens-file line's secret). Starlette, uvicorn and argon2 are imported only when one runs."""

from __future__ import annotations

import argparse
import getpass
import hashlib
import sys
from typing import Any, TextIO

from passito_jobs.cli.options import Flag, add_flags, apply_flags, database_url, port, utf8_text
from passito_jobs.config import Settings
from passito_jobs.health.checks import Thresholds
from passito_jobs.settings import ConfigError

MAX_SECRET = 4096
"""The longest password or token `hash-password` takes (argon2 hashes any length; this bounds it)."""

WEB_FLAGS = (
    Flag("--host", "web", "host", "address to listen on", utf8_text, "HOST"),
    Flag("--port", "web", "port", "port to listen on; 0 picks a free one", port, "PORT"),
)


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "web",
        help="serve the operations dashboard and JSON admin API (docs/dashboard.md)",
        description="The dashboard (/) and the admin API (/api/v1). Without PASSITO_WEB_AUTH it "
        "listens on loopback only.",
    )
    add_flags(p, WEB_FLAGS)
    p.set_defaults(func=cmd_web)
    wsub = p.add_subparsers(dest="web_command", metavar="[hash-password]", parser_class=type(p))
    s = wsub.add_parser(
        "hash-password",
        help="read a password from standard input; print its argon2 hash for PASSITO_WEB_USERS_FILE",
    )
    s.add_argument("--token", action="store_true", help="hash a bearer token for PASSITO_WEB_TOKENS_FILE")
    s.set_defaults(func=cmd_web_hash_password)


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    """Serve the dashboard until SIGTERM; ConfigError (exit 2) for what stops it from starting."""
    settings = apply_flags(args, settings)
    web = settings.web
    try:
        from passito_jobs.web import app  # noqa: PLC0415 - Starlette and uvicorn only when serving
    except ImportError as exc:
        raise ConfigError(
            f"the dashboard needs the `web` extra (pip install 'passito-jobs[web]'): {exc}"
        ) from None
    app.check_binding(web)  # before anything starts: refuse a public address without authentication
    thresholds = Thresholds(
        stale_after=settings.health.stale_after,
        stuck_after=settings.maintenance.stuck_after,
        max_failure_ratio=settings.health.max_failure_ratio,
        window=settings.health.window,
    )
    url = database_url(settings)
    try:
        return app.serve(web, url, thresholds=thresholds, connect_timeout=settings.database.connect_timeout)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {web.host}:{web.port}: {exc.strerror or exc}") from None


def cmd_web_hash_password(args: argparse.Namespace, settings: Settings) -> int:
    print(hash_secret(token=args.token))
    return 0


def read_secret(stream: TextIO, prompt: str) -> str:
    """A password or token from standard input (a prompt without echo on a terminal)."""
    if stream.isatty():
        text = getpass.getpass(prompt)
    else:
        text = stream.read(MAX_SECRET + 2)
        if text.endswith("\n"):
            text = text[:-1]
        if text.endswith("\r"):
            text = text[:-1]
    if not text:
        raise ConfigError(
            "no password on standard input (printf '%s' \"$PASSWORD\" | passito-jobs web hash-password)"
        )
    if any("\ud800" <= c <= "\udfff" for c in text):
        raise ConfigError("the password is not valid UTF-8 text")
    if len(text) > MAX_SECRET or "\n" in text:
        raise ConfigError(f"the password must be one line of at most {MAX_SECRET} characters")
    return text


def hash_secret(*, token: bool, stream: TextIO | None = None) -> str:
    """The users-file hash of a password (argon2id), or the tokens-file form of a token."""
    secret = read_secret(stream or sys.stdin, "Token: " if token else "Password: ")
    if token:
        return "sha256:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
    try:
        from passito_jobs.web.auth import hash_password  # noqa: PLC0415 - argon2 is in the web extra
    except ImportError as exc:
        raise ConfigError(f"hashing needs the `web` extra (pip install 'passito-jobs[web]'): {exc}") from None
    return hash_password(secret)
