"""The Jinja2 filters and globals of the dashboard's templates: times, ages, durations, numbers,
printable text, and query strings of links and forms."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import jinja2

from passito_jobs.health.checks import age
from passito_jobs.queue.flow import format_period
from passito_jobs.queue.limits import printable
from passito_jobs.queue.models import JobState
from passito_jobs.settings import format_duration
from passito_jobs.web import views


def register(env: jinja2.Environment) -> None:
    env.filters["when"] = when
    env.filters["ago"] = ago
    env.filters["age"] = age
    env.filters["duration"] = format_duration
    env.filters["printable"] = lambda text, width=200: printable(str(text), width)
    env.filters["number"] = lambda value: f"{value:,}"
    env.filters["period"] = format_period
    env.globals["states"] = [s.value for s in JobState]
    env.globals["query"] = query


def query(base: dict[str, Any] | None = None, **more: Any) -> str:
    """A query string of `base` and `more` without the empty values (links, forms)."""
    values = {**(base or {}), **more}
    return urlencode({k: v for k, v in values.items() if v not in (None, "")})


def when(moment: datetime | None) -> str:
    shown = views.when(moment)
    if shown is None or moment is None or shown.endswith("infinity"):
        return shown or ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    shown = views.when(moment)
    if shown is not None and shown.endswith("infinity"):
        return shown
    seconds = (datetime.now(UTC) - moment).total_seconds()
    return f"in {age(-seconds)}" if seconds < 0 else f"{age(seconds)} ago"
