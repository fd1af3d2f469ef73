"""The flow-control part of the OpenAPI document (openapi.py): each queue's pause and limits in
`Queue`, and the pause and resume actions."""

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


def flow_action(summary: str, errors: dict[str, Any]) -> dict[str, Any]:
    """POST /api/v1/queues/{queue}/pause or /resume."""
    queue = {"name": "queue", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}
    return {
        "post": {
            "summary": summary,
            "parameters": [queue],
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": {"type": "object", "maxProperties": 0}}},
            },
            "responses": {
                "200": {
                    "description": "Done",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FlowChange"}}},
                },
                **{k: v for k, v in errors.items() if k not in ("404", "409")},
            },
        }
    }
