"""The HTML dashboard: overview, jobs (and the dead-letter view), a job, workers, the audit log
(schedules.py has the schedules page).

Pages are rendered on the server and work without JavaScript; `static/app.js` only keeps the
overview and the job page live (sse.py). Forms that change something carry the CSRF token and
answer with a redirect (post/redirect/get), or with a confirmation page for bulk actions.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from markupsafe import escape
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from passito_jobs.health.checks import HealthReport
from passito_jobs.health.report import HealthCheckError, run_checks
from passito_jobs.queue.admin import MAX_BULK, MAX_FLOW, Actor, Admin, JobFilter
from passito_jobs.queue.models import Job, JobState, QueueFlow
from passito_jobs.web import api, drawing, params, sse, views
from passito_jobs.web.board import board_and_user
from passito_jobs.web.db import DatabaseError
from passito_jobs.web.params import BadRequest
from passito_jobs.web.security import CSRF_FIELD, check_form, csrf_token, read_form, set_csrf_cookie

if TYPE_CHECKING:
    from passito_jobs.web.auth import User
    from passito_jobs.web.board import Dashboard

SHOWN_JSON = 20_000
"""Characters of a payload, result or progress shown on the job page; "show all" downloads it."""
NOTICES = {
    "retried": "Job retried: it is back in the queue.",
    "cancelled": "Job cancelled.",
    "bulk-retry": "Retried {count} job(s).",
    "bulk-cancel": "Cancelled {count} job(s).",
    "nothing": "No job matched: nothing changed.",
    "paused": "Queue paused: nothing more is claimed from it until it is resumed.",
    "resumed": "Queue resumed: its workers were woken.",
    "schedule-paused": "Schedule paused: its slots are not dispatched until it is resumed.",
    "schedule-resumed": "Schedule resumed: its next slot is dispatched as usual.",
    "limits": "Queue limits saved: every worker obeys them at its next claim.",
}
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


def routes() -> list[BaseRoute]:
    return [
        Route("/", overview),
        Route("/jobs", jobs),
        Route("/jobs/bulk", bulk, methods=["POST"]),
        Route("/jobs/{id}", job),
        Route("/jobs/{id}/json", job_json),
        Route("/jobs/{id}/retry", retry, methods=["POST"]),
        Route("/jobs/{id}/cancel", cancel, methods=["POST"]),
        Route("/workers", workers),
        Route("/audit", audit),
        Route("/fragments/overview", overview_fragment),
        Route("/fragments/jobs/{id}", job_fragment),
        Route("/events", events),
    ]


# ---------------------------------------------------------------- rendering


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    response = HTMLResponse(_fragment(request, template, **context), status)
    set_csrf_cookie(request, response)
    return response


def pretty(value: Any) -> tuple[str, bool]:
    """Indented JSON, cut at SHOWN_JSON characters; (text, cut)."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    return (text[:SHOWN_JSON], True) if len(text) > SHOWN_JSON else (text, False)


def notice(request: Request) -> str | None:
    code = request.query_params.get("notice", "")
    if code not in NOTICES:
        return None
    count = request.query_params.get("count", "0")
    return NOTICES[code].format(count=int(count) if count.isdigit() and len(count) < 7 else 0)


# ---------------------------------------------------------------- overview


@dataclass(frozen=True)
class OverviewData:
    report: HealthReport | None
    report_error: str | None
    hour: drawing.Chart
    day: drawing.Chart
    flow: dict[str, QueueFlow]


async def overview_data(board: Dashboard) -> OverviewData:
    timeout = board.web.query_timeout

    def check(admin: Admin) -> HealthReport | str:
        try:
            return run_checks(admin.store, board.thresholds, timeout=timeout)
        except HealthCheckError as exc:
            return str(exc)

    report = await board.db.run(check)
    flow = await board.db.run(lambda admin: {f.queue: f for f in admin.queue_flow()})
    now = datetime.now(UTC)
    hour = await board.cached("hour", 5.0, lambda a: a.throughput(span=HOUR.total_seconds(), bucket=60))
    day = await board.cached("day", 60.0, lambda a: a.throughput(span=DAY.total_seconds(), bucket=3600))
    return OverviewData(
        report=report if isinstance(report, HealthReport) else None,
        report_error=report if isinstance(report, str) else None,
        hour=drawing.throughput_chart(hour, now=now, span=HOUR, step=timedelta(minutes=1), label="minute"),
        day=drawing.throughput_chart(day, now=now, span=DAY, step=HOUR, label="hour"),
        flow=flow,
    )


async def overview(request: Request) -> Response:
    params.single_values(request.query_params.multi_items(), ("notice",))
    board, _ = board_and_user(request)
    return render(request, "overview.html", data=await overview_data(board), notice=notice(request))


async def overview_fragment(request: Request) -> Response:
    params.single_values(request.query_params.multi_items(), ())
    board, _ = board_and_user(request)
    return render(request, "_overview.html", data=await overview_data(board))


# ---------------------------------------------------------------- jobs


async def jobs(request: Request) -> Response:
    board, user = board_and_user(request)
    values = params.single_values(
        request.query_params.multi_items(), (*params.FILTER_KEYS, "cursor", "limit", "notice", "count")
    )
    where, before, limit = api.list_request(values, empty_is_any=True)
    page = await board.db.run(lambda admin: admin.list_jobs(where, before=before, limit=limit))
    filters = params.filter_query(where)
    next_link = None
    if page.next_before is not None:
        next_link = "/jobs?" + urlencode(
            {**filters, "limit": limit, "cursor": params.encode_cursor(page.next_before)}
        )
    return render(
        request,
        "jobs.html",
        page=page,
        where=where,
        filters=filters,
        limit=limit,
        next_link=next_link,
        first_page=before is None,
        actions=_bulk_actions(where),
        notice=notice(request),
        masker=board.masker(user),
    )


def _bulk_actions(where: JobFilter) -> list[str]:
    """The bulk actions that can apply to the filter's jobs."""
    return [
        action for action, states in api.ACTION_STATES.items() if where.state is None or where.state in states
    ]


async def bulk(request: Request) -> Response:
    """Step 1 (no `confirm`): a page that shows how many jobs the action would change. Step 2:
    the action, then back to the list."""
    board, user = board_and_user(request)
    params.single_values(request.query_params.multi_items(), ())  # the filter is in the form
    form = await read_form(request)
    check_form(request, form)
    api.require_action(board, user)
    action = form.get("action", "")
    if action not in api.ACTION_STATES:
        raise BadRequest("action must be retry or cancel")
    where = params.job_filter(form)
    actor = Actor(user.name, user.role, "dashboard")
    confirmed = form.get("confirm") == "yes"
    outcome = await board.db.run(
        lambda admin: api.bulk_action(admin, action, where, MAX_BULK, actor, dry_run=not confirmed)
    )
    filters = params.filter_query(where)
    if not confirmed:
        return render(
            request, "bulk_confirm.html", action=action, outcome=outcome, filters=filters, most=MAX_BULK
        )
    code = f"bulk-{action}" if outcome.changed else "nothing"
    return RedirectResponse("/jobs?" + urlencode({**filters, "notice": code, "count": outcome.changed}), 303)


@dataclass(frozen=True)
class JobView:
    job: Job
    detail: dict[str, Any]
    payload: tuple[str, bool]
    result: tuple[str, bool]
    progress: tuple[str, bool]
    graph: drawing.Graph | None
    flow_cut: bool
    timeline: list[tuple[datetime | None, str, str]]
    audit: list[Any]


def _timeline(job: Job, audit: list[Any]) -> list[tuple[datetime | None, str, str]]:
    """What happened to the job, in order: (when, what, css class)."""
    events: list[tuple[datetime | None, str, str]] = [(job.created_at, "dispatched", "info")]
    if job.started_at is not None:
        events.append((job.started_at, "first attempt started", "info"))
    if job.attempts > 1 and job.claimed_at is not None:
        events.append((job.claimed_at, f"attempt {job.attempts} of {job.max_attempts} started", "warn"))
    if job.heartbeat_at is not None and job.state is JobState.PROCESSING:
        events.append((job.heartbeat_at, f"last heartbeat from {job.worker_id}", "info"))
    for entry in audit:
        done = "changed it" if entry.job_changed else "changed nothing"
        events.append((entry.at, f"{entry.action} by {entry.actor} ({entry.source}): {done}", "audit"))
    if job.finished_at is not None:
        events.append((job.finished_at, job.state.value, job.state.value))
    elif job.state is JobState.PENDING and job.run_at > datetime.now(UTC):
        events.append((job.run_at, "next attempt due", "info"))
    return sorted(events, key=lambda e: e[0] or datetime.min.replace(tzinfo=UTC))


async def job_view(board: Dashboard, user: User, job_id: int) -> JobView:
    masker = board.masker(user)

    def read(admin: Admin) -> JobView:
        found = admin.job(job_id)
        if found is None:
            raise BadRequest(f"no job #{job_id}", 404)
        detail = views.job_detail(found, admin.relatives(found), admin.store.job_flow(found), masker)
        flow = admin.flow(job_id)
        audit = admin.audit_of_job(job_id)
        return JobView(
            job=found,
            detail=detail,
            payload=pretty(detail["payload"]),
            result=pretty(detail["result"]),
            progress=pretty(detail["progress"]),
            graph=drawing.flow_graph(flow, job_id),
            flow_cut=len(flow) >= MAX_FLOW,
            timeline=_timeline(found, audit),
            audit=audit,
        )

    return await board.db.run(read)


async def job(request: Request) -> Response:
    board, user = board_and_user(request)
    if request.path_params["id"] == "bulk":  # /jobs/bulk is POST only
        raise HTTPException(405, headers={"Allow": "POST"})
    params.single_values(request.query_params.multi_items(), ("notice", "count"))
    view = await job_view(board, user, params.job_id(request.path_params["id"]))
    return render(request, "job.html", view=view, notice=notice(request))


async def job_fragment(request: Request) -> Response:
    board, user = board_and_user(request)
    params.single_values(request.query_params.multi_items(), ())
    view = await job_view(board, user, params.job_id(request.path_params["id"]))
    return render(request, "_job.html", view=view)


async def job_json(request: Request) -> Response:
    """The job as the API gives it, as a download (the "show all" of a long payload)."""
    board, user = board_and_user(request)
    params.single_values(request.query_params.multi_items(), ())
    job_id = params.job_id(request.path_params["id"])

    def read(admin: Admin) -> dict[str, Any]:
        found = admin.job(job_id)
        if found is None:
            raise BadRequest(f"no job #{job_id}", 404)
        return views.job_detail(
            found, admin.relatives(found), admin.store.job_flow(found), board.masker(user)
        )

    detail = await board.db.run(read)
    headers = {"Content-Disposition": f'attachment; filename="job-{job_id}.json"'}
    return JSONResponse(detail, headers=headers)


async def _single(request: Request, action: str) -> Response:
    board, user = board_and_user(request)
    params.single_values(request.query_params.multi_items(), ())
    job_id = params.job_id(request.path_params["id"])
    form = await read_form(request)
    check_form(request, form)
    api.require_action(board, user)
    actor = Actor(user.name, user.role, "dashboard")
    await board.db.run(lambda admin: api.single_action(admin, action, job_id, actor))
    code = "retried" if action == "retry" else "cancelled"
    return RedirectResponse(f"/jobs/{job_id}?notice={code}", 303)


async def retry(request: Request) -> Response:
    return await _single(request, "retry")


async def cancel(request: Request) -> Response:
    return await _single(request, "cancel")


# ---------------------------------------------------------------- workers, audit


async def workers(request: Request) -> Response:
    board, _ = board_and_user(request)
    params.single_values(request.query_params.multi_items(), ())
    seen = await board.db.run(lambda admin: admin.workers())
    return render(request, "workers.html", workers=seen, stuck_after=board.thresholds.stuck_after)


async def audit(request: Request) -> Response:
    board, _ = board_and_user(request)
    values = params.single_values(request.query_params.multi_items(), ("cursor", "limit"))
    before = params.decode_cursor(values["cursor"]) if values.get("cursor") else None
    limit = params.limit(values)
    entries = await board.db.run(lambda admin: admin.audit(before=before, limit=limit))
    next_link = None
    if len(entries) == limit:
        next_link = "/audit?" + urlencode({"limit": limit, "cursor": params.encode_cursor(entries[-1].id)})
    return render(request, "audit.html", entries=entries, next_link=next_link)


# ---------------------------------------------------------------- live updates


async def events(request: Request) -> Response:
    """Server-sent events for `topic=overview` or `topic=job:ID`: the live fragment's HTML."""
    board, user = board_and_user(request)
    values = params.single_values(request.query_params.multi_items(), ("topic",))
    topic = values.get("topic", "")
    fragment: Callable[[], Awaitable[str]]
    if topic == "overview":

        async def fragment() -> str:
            data = await overview_data(board)
            return _fragment(request, "_overview.html", data=data)

    elif topic.startswith("job:"):
        job_id = params.job_id(topic[4:], "topic job id")

        async def fragment() -> str:
            view = await job_view(board, user, job_id)
            return _fragment(request, "_job.html", view=view)

    else:
        raise BadRequest("topic must be overview or job:ID")
    if board.notifier.streams >= sse.MAX_STREAMS:
        raise BadRequest("too many live pages are open: this page refreshes every 2 s instead", 503)

    async def safe() -> str:
        try:
            return await fragment()
        except (DatabaseError, BadRequest) as exc:
            message = exc.message if isinstance(exc, BadRequest) else str(exc)
            return f'<p class="notice error">Live updates paused: {escape(message)}</p>'

    return StreamingResponse(
        sse.stream(board.notifier, safe),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _fragment(request: Request, template: str, **context: Any) -> str:
    board, user = board_and_user(request)
    return board.templates.get_template(template).render(
        user=user,
        can_act=board.can_act(user),
        read_only=board.web.read_only,
        csrf=csrf_token(request),
        csrf_field=CSRF_FIELD,
        path=request.url.path,
        **context,
    )
