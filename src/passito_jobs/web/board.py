"""What every request handler of the dashboard and the admin API reads: the `Dashboard` kept in
`app.state.dashboard`, and the user the `Guard` (app.py) authenticated. A module of its own so
that app.py (which imports the handlers) and the handlers (api.py, pages.py, queues.py) share
it without importing each other.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import jinja2
from starlette.requests import Request

from passito_jobs.health.checks import Thresholds
from passito_jobs.queue.admin import Admin
from passito_jobs.web.auth import Authenticator, User
from passito_jobs.web.db import Database
from passito_jobs.web.settings import WebSettings
from passito_jobs.web.sse import Notifier
from passito_jobs.web.views import Masker

T = TypeVar("T")


@dataclass
class Dashboard:
    """What every request handler needs, kept in `app.state.dashboard`."""

    web: WebSettings
    db: Database
    auth: Authenticator
    notifier: Notifier
    templates: jinja2.Environment
    thresholds: Thresholds
    csrf_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    """Signs the CSRF tokens (security.csrf_token): create_app gives the key of
    PASSITO_WEB_CSRF_KEY_FILE (security.load_csrf_key); the default is new at every start."""
    _cache: dict[str, tuple[float, Any]] = field(default_factory=dict)

    async def cached(self, key: str, ttl: float, action: Callable[[Admin], T]) -> T:
        """`action`'s result, computed at most once per `ttl` seconds (charts over a day)."""
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and now - hit[0] < ttl:
            value: T = hit[1]
            return value
        value = await self.db.run(action)
        self._cache[key] = (now, value)
        return value

    def masker(self, user: User) -> Masker:
        return Masker(frozenset(self.web.mask_fields), enabled=not user.is_admin)

    def can_act(self, user: User) -> bool:
        return user.is_admin and not self.web.read_only


def dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


def user_of(request: Request) -> User:
    found: User = request.scope["state"]["user"]
    return found


def board_and_user(request: Request) -> tuple[Dashboard, User]:
    """The dashboard and the authenticated user of `request`."""
    return dashboard(request), user_of(request)
