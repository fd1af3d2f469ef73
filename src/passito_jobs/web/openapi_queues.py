"""The pause-and-resume part of the OpenAPI document (openapi.py): each queue's pause and limits
in `Queue`, and the pause and resume actions of queues and schedules."""

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
