"""The queues in the admin API and the dashboard: their numbers and flow control
(docs/flow-control.md), and pausing and resuming one.

Pause and resume are actions like retry and cancel: an admin on a dashboard that is not
read-only, a CSRF-checked form from the pages or a JSON (or bearer-token) call to the API, the
queue's own SQL functions (pause_queue, resume_queue), and an audit row in the same statement.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from passito_jobs.queue import limits
from passito_jobs.queue.admin import Actor, Admin, FlowChange
from passito_jobs.queue.errors import FlowControlError
from passito_jobs.queue.models import QueueFlow
from passito_jobs.web import api, params, views
from passito_jobs.web.board import board_and_user
from passito_jobs.web.params import BadRequest
from passito_jobs.web.security import check_api_post, check_form, read_form

QUEUE_WINDOW = 3600.0
COUNTS = (
    *("blocked", "pending", "ready", "processing", "failed", "stale", "stuck"),
    *("completed_last_hour", "failed_last_hour"),
)


def routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/queues", queues),
        Route("/api/v1/queues/{queue:path}/pause", api_pause, methods=["POST"]),
        Route("/api/v1/queues/{queue:path}/resume", api_resume, methods=["POST"]),
        Route("/queues/{queue:path}/pause", page_pause, methods=["POST"]),
        Route("/queues/{queue:path}/resume", page_resume, methods=["POST"]),
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

    def act(admin: Admin) -> FlowChange | str:
        try:
            return admin.set_paused(name, paused=paused, actor=actor)
        except FlowControlError as exc:
            return str(exc)

    change = await board.db.run(act)
    if isinstance(change, str):
        raise BadRequest(change)
    return change


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
