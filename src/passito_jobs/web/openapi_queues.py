"""The flow-control part of the OpenAPI document (openapi.py): each queue's pause and limits in
`Queue`, the pause and resume actions of queues and schedules, and setting a queue's limits."""

from __future__ import annotations

from typing import Any

LIMIT = {"type": ["integer", "null"], "minimum": 1, "description": "None: no limit"}

QUEUE_FLOW = {
    "paused": {"type": "boolean", "description": "Nothing is claimed from the queue"},
    "concurrency": LIMIT,
    "rate": {
        "type": ["object", "null"],
        "properties": {"limit": {"type": "integer"}, "period_seconds": {"type": "number"}},
        "required": ["limit", "period_seconds"],
        "additionalProperties": False,
        "description": "At most `limit` starts per period; null: no limit",
    },
    "key_concurrency": LIMIT,
    "held_back": {"type": "integer", "minimum": 0, "description": "Ready jobs a pause or limit holds back"},
}

FLOW_CHANGE = {
    "type": "object",
    "properties": {
        "queue": {"type": "string"},
        "action": {"type": "string", "enum": ["pause", "resume"]},
        "paused": {"type": "boolean"},
        "created": {"type": "boolean", "description": "The queue had no flow-control row (check the name)"},
        "audit_id": {"type": "integer"},
    },
    "required": ["queue", "action", "paused", "created", "audit_id"],
    "additionalProperties": False,
}

SCHEDULE_CHANGE = {
    "type": "object",
    "properties": {
        "schedule": {"type": "string"},
        "action": {"type": "string", "enum": ["pause", "resume"]},
        "paused": {"type": "boolean"},
        "audit_id": {"type": "integer"},
    },
    "required": ["schedule", "action", "paused", "audit_id"],
    "additionalProperties": False,
}


def flow_action(
    summary: str, errors: dict[str, Any], *, name: str = "queue", answer: str = "FlowChange"
) -> dict[str, Any]:
    """POST /api/v1/queues/{queue}/pause or /resume (and /api/v1/schedules/{name}/...: a 404
    when no schedule has the name)."""
    param = {"name": name, "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}
    missing = {} if name == "queue" else {"404": {**errors["404"], "description": "No such schedule"}}
    return {
        "post": {
            "summary": summary,
            "parameters": [param],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": {"type": "object", "maxProperties": 0}}},
            },
            "responses": {
                "200": {
                    "description": "Done",
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{answer}"}}},
                },
                **{k: v for k, v in errors.items() if k not in ("404", "409")},
                **missing,
            },
        }
    }


_SET_LIMIT = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": 1_000_000},
        {"type": "null"},
        {"const": "none"},
    ],
    "description": 'null or "none": no limit',
}
LIMITS_BODY = {
    "type": "object",
    "properties": {
        "concurrency": _SET_LIMIT,
        "rate": {
            "anyOf": [{"type": "string", "maxLength": 40}, {"type": "null"}],
            "description": 'N/PERIOD: "50/1s", "600/1m"; null or "none": no limit',
        },
        "key_concurrency": _SET_LIMIT,
    },
    "additionalProperties": False,
}
LIMITS_CHANGE = {
    "type": "object",
    "properties": {
        "queue": {"type": "string"},
        "action": {"type": "string", "enum": ["limit"]},
        "created": {"type": "boolean", "description": "The queue had no flow-control row (check the name)"},
        "audit_id": {"type": "integer"},
        **QUEUE_FLOW,
    },
    "required": ["queue", "action", "created", "audit_id", *QUEUE_FLOW],
    "additionalProperties": False,
}


def limits_action(errors: dict[str, Any]) -> dict[str, Any]:
    """PUT (every limit; one not given is removed) and PATCH (only those given) of
    /api/v1/queues/{queue}/limits."""
    queue = {"name": "queue", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}

    def operation(summary: str, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "summary": summary,
            "parameters": [queue],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {
                "200": {
                    "description": "Done: the queue's flow control now",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/LimitsChange"}}
                    },
                },
                **{k: v for k, v in errors.items() if k not in ("404", "409")},
            },
        }

    return {
        "put": operation("Set a queue's limits (a limit not given is removed)", LIMITS_BODY),
        "patch": operation(
            "Change some of a queue's limits (the others are left as they are)",
            {**LIMITS_BODY, "minProperties": 1},
        ),
    }


def schedule_schemas(time: dict[str, Any]) -> dict[str, Any]:
    """The schedules' schemas: each schedule as GET /api/v1/schedules lists it, and the answer of
    its pause and resume actions; `time` is the document's timestamp schema."""
    schedule = {
        "name": {"type": "string"},
        "type": {"type": "string"},
        "queue": {"type": "string"},
        "cron": {"type": ["string", "null"]},
        "every": {"type": ["number", "null"]},
        "timezone": {"type": "string"},
        "catch_up": {"type": "string", "enum": ["latest", "none", "all"]},
        "paused": {"type": "boolean"},
        "stale": {"type": "boolean"},
        "state": {"type": "string", "enum": ["active", "paused", "stale"]},
        "last_slot": time,
        "last_job_id": {"type": ["integer", "null"]},
        "next_slot": time,
        "checked_at": time,
    }
    listed = {"schedules": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}}}
    return {
        "Schedule": {
            "type": "object",
            "properties": schedule,
            "required": list(schedule),
            "additionalProperties": False,
        },
        "Schedules": {
            "type": "object",
            "properties": listed,
            "required": ["schedules"],
            "additionalProperties": False,
        },
        "ScheduleChange": SCHEDULE_CHANGE,
    }
