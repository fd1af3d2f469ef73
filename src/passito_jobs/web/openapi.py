"""The OpenAPI 3.1 document of the admin API, served at /api/v1/openapi.json.

Written as data next to the handlers it describes (api.py); tests/web check every real response
against it, and fuzz the API with it (schemathesis).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from passito_jobs.queue import limits
from passito_jobs.queue.admin import MAX_BULK
from passito_jobs.queue.models import JobState
from passito_jobs.web.openapi_flows import DEPENDS_ON_MODE, flow_schemas
from passito_jobs.web.openapi_queues import (
    FLOW_CHANGE,
    LIMITS_CHANGE,
    QUEUE_FLOW,
    flow_action,
    limits_action,
    schedule_schemas,
)
from passito_jobs.web.params import MAX_LIMIT

VERSION = "1.0.0"
STATES = [s.value for s in JobState]
TIME = {"type": ["string", "null"], "description": "ISO 8601, or infinity / -infinity"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(
    properties: dict[str, Any], *, required: list[str] | None = None, extra: bool = False
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": extra,
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _json(_ref("Error"), "Bad input: the message says what is wrong"),
    "401": _json(_ref("Error"), "Not authenticated"),
    "403": _json(_ref("Error"), "Not allowed (a viewer, a read-only dashboard, a cross-site request)"),
    "503": _json(_ref("Error"), "The database cannot answer now"),
}
ACTION_ERRORS = {
    **ERRORS,
    "404": _json(_ref("Error"), "No such job"),
    "409": _json(_ref("Error"), "The job is in a state the action does not apply to; nothing changed"),
    "413": _json(_ref("Error"), "The body is too large"),
    "415": _json(_ref("Error"), "The body must be JSON"),
}
NAME = {"type": "string", "maxLength": limits.MAX_NAME_LENGTH}
FILTER_PARAMS = [
    {"name": "state", "in": "query", "schema": {"type": "string", "enum": STATES}},
    {"name": "queue", "in": "query", "schema": NAME},
    {"name": "type", "in": "query", "schema": NAME},
    {
        "name": "tag",
        "in": "query",
        "description": "Jobs carrying this tag (one tag; no control characters)",
        "schema": {"type": "string", "minLength": 1, "maxLength": limits.MAX_TAG_LENGTH},
    },
    {"name": "id", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": limits.MAX_JOB_ID}},
    {
        "name": "created_after",
        "in": "query",
        "description": "ISO 8601 time (UTC when no offset): jobs created at or after it",
        "schema": {"type": "string", "format": "date-time"},
    },
    {
        "name": "created_before",
        "in": "query",
        "description": "ISO 8601 time: jobs created before it",
        "schema": {"type": "string", "format": "date-time"},
    },
]
PAGE_PARAMS = [
    {
        "name": "limit",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 50},
    },
    {
        "name": "cursor",
        "in": "query",
        "description": "The `next` value of the previous page",
        "schema": {"type": "string", "maxLength": 64},
    },
]
JOB_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": limits.MAX_JOB_ID},
}


IDS = {"type": "array", "items": {"type": "integer"}}


def _schemas() -> dict[str, Any]:
    return {
        "Error": _obj({"error": _obj({"status": {"type": "integer"}, "message": {"type": "string"}})}),
        **_job_schemas(),
        **flow_schemas(STATES),
        **_queue_schemas(),
        **_action_schemas(),
    }


def _job_schemas() -> dict[str, Any]:
    ids = IDS
    relative = _obj(
        {
            "id": {"type": "integer"},
            "type": {"type": "string"},
            "queue": {"type": "string"},
            "state": {"type": "string", "enum": STATES},
        }
    )
    return {
        "JobSummary": _obj(
            {
                "id": {"type": "integer"},
                "queue": {"type": "string"},
                "type": {"type": "string"},
                "state": {"type": "string", "enum": STATES},
                "priority": {"type": "integer"},
                "attempts": {"type": "integer"},
                "max_attempts": {"type": "integer"},
                "run_at": TIME,
                "created_at": TIME,
                "started_at": TIME,
                "finished_at": TIME,
                "worker_id": {"type": ["string", "null"]},
                "error": {"type": ["string", "null"], "description": "The first line of the last error"},
            }
        ),
        "JobPage": _obj(
            {
                "jobs": {"type": "array", "items": _ref("JobSummary")},
                "limit": {"type": "integer"},
                "next": {"type": ["string", "null"], "description": "Cursor of the next (older) page"},
                "searched_to": {
                    "type": ["integer", "null"],
                    "description": "Set when the page holds fewer jobs than asked because the search "
                    "budget ran out: ids down to this one were searched; `next` goes on",
                },
            }
        ),
        "Relative": relative,
        "Job": _obj(
            {
                "id": {"type": "integer"},
                "queue": {"type": "string"},
                "type": {"type": "string"},
                "state": {"type": "string", "enum": STATES},
                "priority": {"type": "integer"},
                "attempts": {"type": "integer"},
                "max_attempts": {"type": "integer"},
                "payload": {"description": "Personal fields masked for viewers"},
                "result": {},
                "progress": {},
                "last_error": {"type": ["string", "null"]},
                "worker_id": {"type": ["string", "null"]},
                "unique_key": {"type": ["string", "null"]},
                "depends_on": ids,
                "waiting_on": {"type": "integer"},
                "run_at": TIME,
                "created_at": TIME,
                "claimed_at": TIME,
                "started_at": TIME,
                "heartbeat_at": TIME,
                "finished_at": TIME,
                "parents": {"type": "array", "items": _ref("Relative")},
                "children": {"type": "array", "items": _ref("Relative"), "description": "At most 200"},
                "depends_on_mode": DEPENDS_ON_MODE,
                "flow": _ref("JobFlow"),
                "masked": {"type": "boolean"},
            }
        ),
    }


def _queue_schemas() -> dict[str, Any]:
    return {
        "Queue": _obj(
            {
                name: {"type": "integer", "minimum": 0}
                for name in (
                    "blocked",
                    "pending",
                    "ready",
                    "processing",
                    "failed",
                    "stale",
                    "stuck",
                    "completed_last_hour",
                    "failed_last_hour",
                )
            }
            | {"queue": {"type": "string"}, "oldest_ready_age_seconds": {"type": ["number", "null"]}}
            | QUEUE_FLOW
        ),
        "FlowChange": FLOW_CHANGE,
        "LimitsChange": LIMITS_CHANGE,
        "Queues": _obj(
            {"window_seconds": {"type": "number"}, "queues": {"type": "array", "items": _ref("Queue")}}
        ),
        "Worker": _obj(
            {
                "worker_id": {"type": ["string", "null"]},
                "jobs": {"type": "integer"},
                "job_ids": IDS,
                "queues": {"type": "array", "items": {"type": "string"}},
                "types": {"type": "array", "items": {"type": "string"}},
                "oldest_claim": TIME,
                "last_heartbeat": TIME,
                "heartbeat_age_seconds": {"type": ["number", "null"]},
                "free_slots": {
                    "type": ["integer", "null"],
                    "description": "Free slots of a worker waiting for jobs (its queues: the ones "
                    "it waits on, [] for every queue); null: not waiting",
                },
            }
        ),
        "Workers": _obj(
            {"source": {"type": "string"}, "workers": {"type": "array", "items": _ref("Worker")}}
        ),
        "Health": {
            "type": "object",
            "description": "The report of `passito-jobs health --json`",
            "required": ["healthy", "checked_at", "totals", "queues", "problems"],
            "properties": {
                "healthy": {"type": "boolean"},
                "checked_at": {"type": "string"},
                "thresholds": {"type": "object"},
                "totals": {"type": "object"},
                "queues": {"type": "object"},
                "problems": {"type": "array", "items": {"type": "object"}},
                "blocked_orphans": {"type": "object"},
            },
        },
    } | schedule_schemas(TIME)


def _action_schemas() -> dict[str, Any]:
    ids = IDS
    return {
        "AuditEntry": _obj(
            {
                "id": {"type": "integer"},
                "at": TIME,
                "actor": {"type": "string"},
                "role": {"type": "string", "enum": ["viewer", "admin"]},
                "action": {"type": "string", "enum": ["retry", "cancel", "pause", "resume", "limit"]},
                "source": {"type": "string", "enum": ["dashboard", "api"]},
                "job_ids": {**ids, "description": "The jobs asked for (the first 100)"},
                "asked": {"type": "integer"},
                "changed_ids": {**ids, "description": "Those changed (the first 100)"},
                "changed": {"type": "integer"},
                "filter": {"type": ["object", "null"]},
            }
        ),
        "AuditPage": _obj(
            {
                "entries": {"type": "array", "items": _ref("AuditEntry")},
                "limit": {"type": "integer"},
                "next": {"type": ["string", "null"]},
            }
        ),
        "ActionResult": _obj(
            {
                "action": {"type": "string", "enum": ["retry", "cancel"]},
                "job_id": {"type": "integer"},
                "state": {"type": ["string", "null"]},
                "audit_id": {"type": "integer"},
            }
        ),
        "Filter": _obj(
            {str(p["name"]): {"type": "string"} for p in FILTER_PARAMS}
            | {"state": {"type": "string", "enum": STATES}},
            required=[],
        ),
        "BulkRequest": _obj(
            {
                "filter": _ref("Filter"),
                "dry_run": {"type": "boolean", "description": "Count the jobs, change none"},
                "max": {"type": "integer", "minimum": 1, "maximum": MAX_BULK},
            },
            required=[],
        ),
        "BulkOutcome": _obj(
            {
                "action": {"type": "string", "enum": ["retry", "cancel"]},
                "dry_run": {"type": "boolean"},
                "matched": {"type": "integer", "description": "Jobs of the filter the action applies to"},
                "more": {"type": "boolean", "description": "More than `max` matched: run it again"},
                "changed": {"type": "integer"},
                "changed_ids": {**ids, "description": "The first 100"},
                "unchanged_ids": {**ids, "description": "Matched but not changed (the first 100)"},
                "audit_id": {"type": ["integer", "null"]},
            }
        ),
    }


def _get(
    summary: str, schema: str, parameters: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": parameters or [],
            "responses": {"200": _json(_ref(schema), "OK"), **ERRORS, **extra},
        }
    }


def _action(summary: str, *, bulk: bool) -> dict[str, Any]:
    body = _ref("BulkRequest") if bulk else _obj({}, required=[])
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": [] if bulk else [JOB_ID],
        "requestBody": {"required": bulk, "content": {"application/json": {"schema": body}}},
        "responses": {"200": _json(_ref("BulkOutcome" if bulk else "ActionResult"), "Done"), **ACTION_ERRORS},
    }
    return {"post": operation}


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "passito-jobs admin API",
            "version": VERSION,
            "description": "Read and act on the passito-jobs queue. docs/dashboard.md describes "
            "authentication, roles, masking and the audit log.",
        },
        "servers": [{"url": "/"}],
        "security": [{"basic": []}, {"bearer": []}, {}],
        "paths": {
            "/api/v1/queues": _get("Per queue: counts by state, oldest ready age, the last hour", "Queues"),
            "/api/v1/queues/{queue}/pause": flow_action("Pause a queue (its jobs wait)", ACTION_ERRORS),
            "/api/v1/queues/{queue}/resume": flow_action("Resume a queue, waking its workers", ACTION_ERRORS),
            "/api/v1/queues/{queue}/limits": limits_action(ACTION_ERRORS),
            "/api/v1/jobs": _get("Jobs, newest first (keyset pages)", "JobPage", FILTER_PARAMS + PAGE_PARAMS),
            "/api/v1/jobs/{id}": _get(
                "One job: every field, parents and children, and its flow (parents and descendants)",
                "Job",
                [JOB_ID],
                **{"404": _json(_ref("Error"), "No such job")},
            ),
            "/api/v1/jobs/{id}/retry": _action(
                "Retry a failed or cancelled job (attempts reset)", bulk=False
            ),
            "/api/v1/jobs/{id}/cancel": _action("Cancel a blocked, pending or processing job", bulk=False),
            "/api/v1/jobs/retry": _action("Retry every failed or cancelled job of a filter", bulk=True),
            "/api/v1/jobs/cancel": _action("Cancel every unfinished job of a filter", bulk=True),
            "/api/v1/workers": _get("Workers seen by their heartbeats, and the jobs each holds", "Workers"),
            "/api/v1/schedules": _get("Periodic jobs: when each runs, its last and next slot", "Schedules"),
            "/api/v1/schedules/{name}/pause": flow_action(
                "Pause a schedule (its slots are skipped)",
                ACTION_ERRORS,
                name="name",
                answer="ScheduleChange",
            ),
            "/api/v1/schedules/{name}/resume": flow_action(
                "Resume a schedule", ACTION_ERRORS, name="name", answer="ScheduleChange"
            ),
            "/api/v1/health": _get("The health report (`passito-jobs health --json`)", "Health"),
            "/api/v1/audit": _get("The audit log, newest first", "AuditPage", PAGE_PARAMS),
        },
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }
