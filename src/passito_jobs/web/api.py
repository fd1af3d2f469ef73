"""The JSON admin API under /api/v1 (described by /api/v1/openapi.json, web/openapi.py).

Reads are open to viewers (personal fields masked); actions need an admin and a dashboard that is
not read-only, and go through the queue's SQL functions with an audit row. Errors are
`{"error": {"status": N, "message": "..."}}` with a 4xx status (503 when the database cannot
answer); no input gives a 500.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from passito_jobs.health.report import HealthCheckError, run_checks, to_json
from passito_jobs.queue import limits
from passito_jobs.queue.admin import (
    CANCELLABLE,
    MAX_IDS_SHOWN,
    RETRYABLE,
    Actor,
    Admin,
    JobFilter,
    JobPage,
)
from passito_jobs.queue.models import JobState
from passito_jobs.web import openapi, params, views
from passito_jobs.web.board import board_and_user
from passito_jobs.web.params import BadRequest
from passito_jobs.web.security import check_api_post

if TYPE_CHECKING:
    from passito_jobs.web.auth import User
    from passito_jobs.web.board import Dashboard

MAX_BODY = 64 * 1024
ACTION_STATES = {"retry": RETRYABLE, "cancel": CANCELLABLE}
BULK_ACTIONS = tuple(ACTION_STATES)
ACTION_RULES = {"retry": "failed or cancelled", "cancel": "blocked, pending or processing"}


def routes() -> list[BaseRoute]:
    return [
        Route("/api/v1/openapi.json", spec),
        Route("/api/v1/jobs", jobs),
        Route("/api/v1/jobs/retry", bulk_retry, methods=["POST"]),
        Route("/api/v1/jobs/cancel", bulk_cancel, methods=["POST"]),
        Route("/api/v1/jobs/{id}", job),
        Route("/api/v1/jobs/{id}/retry", retry, methods=["POST"]),
        Route("/api/v1/jobs/{id}/cancel", cancel, methods=["POST"]),
        Route("/api/v1/workers", workers),
        Route("/api/v1/health", health),
        Route("/api/v1/audit", audit),
    ]


def _query(request: Request, allowed: Sequence[str]) -> dict[str, str]:
    return params.single_values(request.query_params.multi_items(), allowed)


async def spec(request: Request) -> Response:
    _query(request, ())
    return JSONResponse(openapi.document())


def list_request(values: dict[str, str], *, empty_is_any: bool = False) -> tuple[JobFilter, int | None, int]:
    where = params.job_filter(values, empty_is_any=empty_is_any)
    before = params.decode_cursor(values["cursor"]) if values.get("cursor") else None
    return where, before, params.limit(values)


def page_json(page: JobPage, limit: int, masker: views.Masker) -> dict[str, Any]:
    return {
        "jobs": [views.job_summary(j, masker) for j in page.jobs],
        "limit": limit,
        "next": None if page.next_before is None else params.encode_cursor(page.next_before),
        "searched_to": page.searched_to,
    }


async def jobs(request: Request) -> Response:
    board, user = board_and_user(request)
    values = _query(request, (*params.FILTER_KEYS, "cursor", "limit"))
    where, before, limit = list_request(values)
    page = await board.db.run(lambda admin: admin.list_jobs(where, before=before, limit=limit))
    return JSONResponse(page_json(page, limit, board.masker(user)))


async def job(request: Request) -> Response:
    board, user = board_and_user(request)
    if request.path_params["id"] in BULK_ACTIONS:  # /api/v1/jobs/retry is POST only
        raise HTTPException(405, headers={"Allow": "POST"})
    _query(request, ())
    job_id = params.job_id(request.path_params["id"])

    def read(admin: Admin) -> dict[str, Any]:
        found = admin.job(job_id)
        if found is None:
            raise BadRequest(f"no job #{job_id}", 404)
        return views.job_detail(
            found, admin.relatives(found), admin.store.job_flow(found), board.masker(user)
        )

    return JSONResponse(await board.db.run(read))


def require_action(board: Dashboard, user: User) -> None:
    if board.web.read_only:
        raise BadRequest("the dashboard is read-only (PASSITO_WEB_READ_ONLY): no action is allowed", 403)
    if not user.is_admin:
        raise BadRequest(f"{user.name} is a viewer: only admins can retry, cancel, pause or resume", 403)


async def json_body(request: Request, *, required: bool) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise BadRequest(f"the request body is larger than {MAX_BODY} bytes", 413)
    if not raw.strip():
        if required:
            raise BadRequest("the request needs a JSON object as its body")
        return {}
    try:
        body = limits.load_json(raw)
    except limits.RepeatedKeyError as exc:
        raise BadRequest(str(exc)) from None
    except RecursionError:
        raise BadRequest("the request body is nested too deeply to read") from None
    except json.JSONDecodeError:
        raise BadRequest("the request body is not valid JSON") from None
    except ValueError:  # valid JSON, with an integer longer than Python converts
        raise BadRequest(
            f"the request body holds a number of more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str


def single_action(admin: Admin, action: str, job_id: int, actor: Actor) -> dict[str, Any]:
    """Retry or cancel one job; a job the action does not apply to is refused (409) unchanged."""
    found = admin.job(job_id)
    if found is None:
        raise BadRequest(f"no job #{job_id}", 404)
    if found.state not in ACTION_STATES[action]:
        raise BadRequest(
            f"job #{job_id} is {found.state.value}: only {ACTION_RULES[action]} jobs can be "
            f"{'retried' if action == 'retry' else 'cancelled'}",
            409,
        )
    if action == "retry":
        dead = admin.store.dead_parents([job_id])
        if job_id in dead:
            parent, state = dead[job_id]
            raise BadRequest(
                f"job #{job_id} was not retried: its parent job #{parent} is {state}, so it could never "
                f"run; retry the parent first",
                409,
            )
    result = admin.retry([job_id], actor) if action == "retry" else admin.cancel([job_id], actor)
    after = admin.job(job_id)
    if not result.changed:
        raise BadRequest(
            f"job #{job_id} changed while we looked: it is now {after.state.value if after else 'gone'}", 409
        )
    return {
        "action": action,
        "job_id": job_id,
        "state": after.state.value if after else None,
        "audit_id": result.audit_id,
    }


async def _single(request: Request, action: str) -> Response:
    board, user = board_and_user(request)
    _query(request, ())
    job_id = params.job_id(request.path_params["id"])
    require_action(board, user)
    check_api_post(request, user.via)
    body = await json_body(request, required=False)
    if body:
        raise BadRequest(f"unknown field {params.shown(next(iter(body)))}: this action takes an empty object")
    actor = Actor(user.name, user.role, "api")
    return JSONResponse(await board.db.run(lambda admin: single_action(admin, action, job_id, actor)))


async def retry(request: Request) -> Response:
    return await _single(request, "retry")


async def cancel(request: Request) -> Response:
    return await _single(request, "cancel")


@dataclass(frozen=True)
class BulkOutcome:
    action: str
    dry_run: bool
    matched: int
    more: bool
    changed: int
    changed_ids: list[int]
    unchanged_ids: list[int]
    audit_id: int | None


def bulk_action(
    admin: Admin, action: str, where: JobFilter, most: int, actor: Actor, *, dry_run: bool
) -> BulkOutcome:
    """The action over every job of the filter it applies to (at most `most`, oldest first)."""
    ids = admin.candidates(where, ACTION_STATES[action], most=most + 1)
    more, ids = len(ids) > most, ids[:most]
    if dry_run or not ids:
        return BulkOutcome(action, dry_run, len(ids), more, 0, [], [], None)
    result = admin.retry(ids, actor, where) if action == "retry" else admin.cancel(ids, actor, where)
    changed = set(result.changed)
    unchanged = [i for i in ids if i not in changed]
    return BulkOutcome(
        action,
        dry_run,
        len(ids),
        more,
        len(result.changed),
        result.changed[:MAX_IDS_SHOWN],
        unchanged[:MAX_IDS_SHOWN],
        result.audit_id,
    )


BULK_KEYS = ("filter", "dry_run", "max")


async def _bulk(request: Request, action: str) -> Response:
    board, user = board_and_user(request)
    _query(request, ())
    require_action(board, user)
    check_api_post(request, user.via)
    body = await json_body(request, required=True)
    unknown = [key for key in body if key not in BULK_KEYS]
    if unknown:
        raise BadRequest(f"unknown field {params.shown(unknown[0])} (known: {', '.join(BULK_KEYS)})")
    given = body.get("filter", {})
    if not isinstance(given, dict):
        raise BadRequest(f"filter must be a JSON object, got {type(given).__name__}")
    unknown = [key for key in given if key not in params.FILTER_KEYS]
    if unknown:
        raise BadRequest(
            f"unknown filter {params.shown(unknown[0])} (known: {', '.join(params.FILTER_KEYS)})"
        )
    where = params.job_filter(given, empty_is_any=False)
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadRequest("dry_run must be true or false")
    most = params.bulk_max(body.get("max"))
    actor = Actor(user.name, user.role, "api")
    outcome = await board.db.run(
        lambda admin: bulk_action(admin, action, where, most, actor, dry_run=dry_run)
    )
    return JSONResponse(asdict(outcome))


async def bulk_retry(request: Request) -> Response:
    return await _bulk(request, "retry")


async def bulk_cancel(request: Request) -> Response:
    return await _bulk(request, "cancel")


async def workers(request: Request) -> Response:
    board, _ = board_and_user(request)
    _query(request, ())
    seen = await board.db.run(lambda admin: admin.workers())
    return JSONResponse(
        {
            "source": "heartbeats of processing jobs, and workers waiting for jobs",
            "workers": [views.worker(w) for w in seen],
        }
    )


async def health(request: Request) -> Response:
    board, _ = board_and_user(request)
    _query(request, ())
    timeout = board.web.query_timeout

    def check(admin: Admin) -> dict[str, Any]:
        try:
            return to_json(run_checks(admin.store, board.thresholds, timeout=timeout))
        except HealthCheckError as exc:
            raise BadRequest(str(exc), 503) from None

    return JSONResponse(await board.db.run(check))


async def audit(request: Request) -> Response:
    board, _ = board_and_user(request)
    values = _query(request, ("cursor", "limit"))
    before = params.decode_cursor(values["cursor"]) if values.get("cursor") else None
    limit = params.limit(values)
    entries = await board.db.run(lambda admin: admin.audit(before=before, limit=limit))
    more = len(entries) == limit
    return JSONResponse(
        {
            "entries": [views.audit(e) for e in entries],
            "limit": limit,
            "next": params.encode_cursor(entries[-1].id) if more else None,
        }
    )


__all__ = ["JobState", "Refusal", "routes"]
