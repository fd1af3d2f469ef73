"""The queues in the admin API and the dashboard: their numbers and flow control
(docs/flow-control.md), pausing and resuming one, and setting its limits.

Pause, resume and limits are actions like retry and cancel: an admin on a dashboard that is not
read-only, a CSRF-checked form from the pages or a JSON (or bearer-token) call to the API, the
queue's own SQL functions (pause_queue, resume_queue, set_queue_*), and an audit row in the same
transaction. Limits follow the rules of `passito-jobs queues set` (queue.flow.parse_setting).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from passito_jobs.queue import limits
from passito_jobs.queue.admin import Actor, Admin
from passito_jobs.queue.errors import FlowControlError
from passito_jobs.queue.flow import LIMIT_NAMES, NO_LIMIT, parse_setting
from passito_jobs.queue.models import FlowChange, QueueFlow
from passito_jobs.web import api, params, views
from passito_jobs.web.board import Dashboard, board_and_user
from passito_jobs.web.params import BadRequest
from passito_jobs.web.security import check_api_post, check_form, read_form

QUEUE_WINDOW = 3600.0
COUNTS = (
    *("blocked", "pending", "ready", "processing", "failed", "stale", "stuck"),
    *("completed_last_hour", "failed_last_hour"),
)


class QueueConvertor(Convertor[str]):
    """A queue name in a path: any text, line breaks too (Starlette's `path` stops at them and
    the request would be a 404), so that queue_name() refuses a bad name with a 400."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("queue", QueueConvertor())


def routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/queues", queues),
        Route("/api/v1/queues/{queue:queue}/pause", api_pause, methods=["POST"]),
        Route("/api/v1/queues/{queue:queue}/resume", api_resume, methods=["POST"]),
        Route("/api/v1/queues/{queue:queue}/limits", api_limits, methods=["PUT", "PATCH"]),
        Route("/queues/{queue:queue}/pause", page_pause, methods=["POST"]),
        Route("/queues/{queue:queue}/limits", page_limits, methods=["POST"]),
        Route("/queues/{queue:queue}/resume", page_resume, methods=["POST"]),
    ]


def flow_json(flow: QueueFlow | None) -> dict[str, Any]:
    """A queue's flow control as the API shows it (no row: not paused, no limits)."""
    rate = None
    if flow is not None and flow.rate_limit is not None and flow.rate_period is not None:
        rate = {"limit": flow.rate_limit, "period_seconds": flow.rate_period}
    return {
        "paused": flow.paused if flow else False,
        "concurrency": flow.concurrency if flow else None,
        "rate": rate,
        "key_concurrency": flow.key_concurrency if flow else None,
        "held_back": flow.held_back if flow else 0,
    }


async def queues(request: Request) -> Response:
    board, _ = board_and_user(request)
    params.single_values(request.query_params.multi_items(), ())
    timeout = board.web.query_timeout

    def read(admin: Admin) -> dict[str, Any]:
        stats = admin.queue_stats(
            window=QUEUE_WINDOW,
            stale_after=board.thresholds.stale_after,
            stuck_after=board.thresholds.stuck_after,
            timeout=timeout,
        )
        flows = {f.queue: f for f in admin.queue_flow()}
        rows = [
            {
                "queue": q.queue,
                "blocked": q.blocked,
                "pending": q.pending,
                "ready": q.ready,
                "processing": q.processing,
                "failed": q.failed,
                "stale": q.stale,
                "stuck": q.stuck,
                "oldest_ready_age_seconds": views.json_safe(round(q.oldest_ready_age, 3)),
                "completed_last_hour": q.completed_recently,
                "failed_last_hour": q.failed_recently,
                **flow_json(flows.get(q.queue)),
            }
            for q in stats
        ]
        # A paused or limited queue without jobs is listed too: it can still be resumed.
        counts = dict.fromkeys(COUNTS, 0) | {"oldest_ready_age_seconds": 0.0}
        listed = {q.queue for q in stats}
        rows += [
            {"queue": name, **counts, **flow_json(flow)} for name, flow in flows.items() if name not in listed
        ]
        return {"window_seconds": QUEUE_WINDOW, "queues": rows}

    return JSONResponse(await board.db.run(read))


def queue_name(request: Request) -> str:
    """The queue of the path, by the rules of names (at most 128 characters, no control
    characters): a bad one is a 400 before the database is asked."""
    value = params.text(request.path_params["queue"], "queue")
    try:
        return limits.check_name("queue", value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


async def _change(request: Request, *, paused: bool, source: str) -> FlowChange:
    board, user = board_and_user(request)
    params.single_values(request.query_params.multi_items(), ())
    name = queue_name(request)
    api.require_action(board, user)
    if source == "api":
        check_api_post(request, user.via)
        if await api.json_body(request, required=False):
            raise BadRequest("this action takes an empty object (or no body)")
    else:
        check_form(request, await read_form(request))
    actor = Actor(user.name, user.role, source)
    return await _flow_change(board, lambda admin: admin.set_paused(name, paused=paused, actor=actor))


async def _flow_change(board: Dashboard, change: Callable[[Admin], FlowChange]) -> FlowChange:
    """Run `change` on the dashboard's connection; a value the rules refuse is a 400."""

    def act(admin: Admin) -> FlowChange | str:
        try:
            return change(admin)
        except FlowControlError as exc:
            return str(exc)

    result = await board.db.run(act)
    if isinstance(result, str):
        raise BadRequest(result)
    return result


async def _api(request: Request, *, paused: bool) -> Response:
    change = await _change(request, paused=paused, source="api")
    return JSONResponse(
        {
            "queue": change.queue,
            "action": change.action,
            "paused": paused,
            "created": change.created,
            "audit_id": change.audit_id,
        }
    )


async def api_pause(request: Request) -> Response:
    return await _api(request, paused=True)


async def api_resume(request: Request) -> Response:
    return await _api(request, paused=False)


async def _page(request: Request, *, paused: bool) -> Response:
    await _change(request, paused=paused, source="dashboard")
    return RedirectResponse(f"/?notice={'paused' if paused else 'resumed'}", 303)


async def page_pause(request: Request) -> Response:
    return await _page(request, paused=True)


async def page_resume(request: Request) -> Response:
    return await _page(request, paused=False)


# ---------------------------------------------------------------- limits


def _limits(given: dict[str, Any], *, replace: bool) -> dict[str, Any]:
    """The limits of a request, checked (400 naming the field otherwise). `replace` (PUT, the
    form): a limit not given is removed; otherwise (PATCH) it is left as it is."""
    unknown = [name for name in given if name not in LIMIT_NAMES]
    if unknown:
        raise BadRequest(f"unknown field {params.shown(unknown[0])}: the limits are {', '.join(LIMIT_NAMES)}")
    if not given and not replace:
        raise BadRequest(f"give at least one of {', '.join(LIMIT_NAMES)} (null: no limit)")
    try:
        checked = {name: parse_setting(name, value) for name, value in given.items()}
    except FlowControlError as exc:
        raise BadRequest(str(exc)) from None
    return (dict.fromkeys(LIMIT_NAMES) if replace else {}) | checked


def _form_limit(text: str) -> object:
    """A form field: empty or `none` is no limit, digits a number; anything else is checked
    (and refused) as the text it is."""
    value = text.strip()
    if not value or value.lower() == NO_LIMIT:
        return None
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 20 else value


async def _set_limits(request: Request, *, source: str) -> FlowChange:
    board, user = board_and_user(request)
    params.single_values(request.query_params.multi_items(), ())
    name = queue_name(request)
    api.require_action(board, user)
    if source == "api":
        check_api_post(request, user.via)
        given = _limits(await api.json_body(request, required=True), replace=request.method == "PUT")
    else:
        form = await read_form(request)
        check_form(request, form)
        fields = {key: _form_limit(str(form.get(key, ""))) for key in LIMIT_NAMES}
        given = _limits(fields, replace=True)
    actor = Actor(user.name, user.role, source)
    return await _flow_change(board, lambda admin: admin.set_limits(name, given, actor))


async def api_limits(request: Request) -> Response:
    """PUT sets all three limits (a missing one: no limit); PATCH only those given."""
    change = await _set_limits(request, source="api")
    board, _ = board_and_user(request)
    flows = await board.db.run(lambda admin: [f for f in admin.queue_flow() if f.queue == change.queue])
    return JSONResponse(
        {
            "queue": change.queue,
            "action": change.action,
            "created": change.created,
            "audit_id": change.audit_id,
            **flow_json(flows[0] if flows else None),
        }
    )


async def page_limits(request: Request) -> Response:
    await _set_limits(request, source="dashboard")
    return RedirectResponse("/?notice=limits", 303)
