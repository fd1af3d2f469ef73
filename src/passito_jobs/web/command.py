"""`passito-jobs web` and `passito-jobs web hash-password` (the CLI's parser calls these)."""

from __future__ import annotations

import getpass
import hashlib
import sys
from collections.abc import Callable
from typing import TextIO

from passito_jobs.config import ConfigError, Settings
from passito_jobs.web.settings import WebSettings

MAX_SECRET = 4096


def run_web(
    settings: Settings, *, host: str | None, port: int | None, database_url: Callable[[], str]
) -> int:
    """Serve the dashboard until SIGTERM; ConfigError (exit 2) for what stops it from starting."""
    web = WebSettings.from_env()
    changes = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if changes:
        web = web.replace(**changes)
    try:
        from passito_jobs.web import app  # noqa: PLC0415 - Starlette and uvicorn only when serving
    except ImportError as exc:
        raise ConfigError(
            f"the dashboard needs the `web` extra (pip install 'passito-jobs[web]'): {exc}"
        ) from None
    app.check_binding(web)  # before anything starts: refuse a public address without authentication
    url = database_url()
    try:
        return app.serve(settings, web, url)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {web.host}:{web.port}: {exc.strerror or exc}") from None


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
