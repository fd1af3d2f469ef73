"""The Jinja2 templates shipped in `passito_jobs/outpass/templates/` (PDF and email bodies)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

STATUS_LABELS = {
    "pending": "Pending",
    "pending_parent_approval": "Awaiting parent approval",
    "approved": "Approved",
    "rejected": "Rejected",
    "cancelled": "Cancelled",
}


@cache
def _environment() -> jinja2.Environment:
    import jinja2  # noqa: PLC0415 - a worker-extra dependency; `import passito_jobs` must not need it

    return jinja2.Environment(
        loader=jinja2.PackageLoader("passito_jobs.outpass", "templates"),
        # HTML is escaped, so a payload value can never become markup or a link; the .txt
        # bodies are plain text and stay as they are.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(name: str, **context: Any) -> str:
    return _environment().get_template(name).render(**context)


def read_static(name: str) -> str:
    """A non-template file from the templates folder (the PDF's CSS)."""
    return resources.files("passito_jobs.outpass").joinpath("templates", name).read_text("utf-8")
