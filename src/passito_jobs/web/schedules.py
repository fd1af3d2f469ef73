"""The schedules (periodic jobs, docs/schedules.md) in the admin API and the dashboard: the list,
and pausing and resuming one.

Pause and resume are actions like a queue's: an admin on a dashboard that is not read-only, a
CSRF-checked form from the page or a JSON (or bearer-token) call to the API, the same update as
`passito-jobs schedules pause`, and an audit row in the same statement.
"""

from __future__ import annotations

from starlette.convertors import register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from passito_jobs.queue import limits
from passito_jobs.queue.admin import Actor, Admin
from passito_jobs.web import api, pages, params, views
from passito_jobs.web.board import board_and_user
from passito_jobs.web.params import BadRequest
from passito_jobs.web.queues import QueueConvertor
from passito_jobs.web.security import check_api_post, check_form, read_form

# A schedule name in a path: any text, line breaks too, so that schedule_name() refuses a bad
# one with a 400 and its reason (Starlette's `path` stops at a line break: a 404).
register_url_convertor("schedule", QueueConvertor())


def routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/schedules", api_list),
        Route("/api/v1/schedules/{name:schedule}/pause", api_pause, methods=["POST"]),
        Route("/api/v1/schedules/{name:schedule}/resume", api_resume, methods=["POST"]),
        Route("/schedules", page),
        Route("/schedules/{name:schedule}/pause", page_pause, methods=["POST"]),
        Route("/schedules/{name:schedule}/resume", page_resume, methods=["POST"]),
    ]


async def api_list(request: Request) -> Response:
    board, _ = board_and_user(request)
    params.single_values(request.query_params.multi_items(), ())
    rows = await board.db.run(lambda admin: admin.store.list_schedules())
    return JSONResponse({"schedules": [views.schedule(row) for row in rows]})


async def page(request: Request) -> Response:
    board, _ = board_and_user(request)
    params.single_values(request.query_params.multi_items(), ("notice",))
    rows = await board.db.run(lambda admin: admin.store.list_schedules())
    return pages.render(request, "schedules.html", schedules=rows, notice=pages.notice(request))


def schedule_name(request: Request) -> str:
    """The schedule of the path, by the rules of names: a bad one is a 400 before the database
    is asked."""
    value = params.text(request.path_params["name"], "schedule name")
    try:
        return limits.check_name("schedule name", value)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


async def _change(request: Request, *, paused: bool, source: str) -> tuple[str, int]:
    """Pause or resume the schedule of the path; its name and the audit row's id."""
    board, user = board_and_user(request)
    params.single_values(request.query_params.multi_items(), ())
    name = schedule_name(request)
    api.require_action(board, user)
    if source == "api":
        check_api_post(request, user.via)
        if await api.json_body(request, required=False):
            raise BadRequest("this action takes an empty object (or no body)")
    else:
        check_form(request, await read_form(request))
    actor = Actor(user.name, user.role, source)

    def act(admin: Admin) -> int | None:
        return admin.set_schedule_paused(name, paused=paused, actor=actor)

    audit_id = await board.db.run(act)
    if audit_id is None:
        raise BadRequest(f"no schedule is named {limits.printable(name, 60)!r}", 404)
    return name, audit_id


async def _api(request: Request, *, paused: bool) -> Response:
    name, audit_id = await _change(request, paused=paused, source="api")
    action = "pause" if paused else "resume"
    return JSONResponse({"schedule": name, "action": action, "paused": paused, "audit_id": audit_id})


async def api_pause(request: Request) -> Response:
    return await _api(request, paused=True)


async def api_resume(request: Request) -> Response:
    return await _api(request, paused=False)


async def _page(request: Request, *, paused: bool) -> Response:
    await _change(request, paused=paused, source="dashboard")
    return RedirectResponse(f"/schedules?notice=schedule-{'paused' if paused else 'resumed'}", 303)


async def page_pause(request: Request) -> Response:
    return await _page(request, paused=True)


async def page_resume(request: Request) -> Response:
    return await _page(request, paused=False)
