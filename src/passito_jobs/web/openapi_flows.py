"""The flow part of the OpenAPI document (openapi.py): a job's `depends_on_mode` and its `flow`,
its parents and descendants with their states."""

from __future__ import annotations

from typing import Any

DEPENDS_ON_MODE = {
    "type": ["string", "null"],
    "enum": ["completed", "finished", None],
    "description": "How a job with parents waits on them (null: it has none)",
}


def _obj(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def flow_schemas(states: list[str]) -> dict[str, Any]:
    """`JobFlow` and the jobs in it; `states`: the job states' names."""
    state = {"type": "string", "enum": states}
    return {
        "JobFlow": _obj(
            {
                "parents": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/FlowParent"},
                    "description": "At most 100",
                },
                "more_parents": {"type": "integer", "minimum": 0, "description": "Parents not listed"},
                "descendants": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/FlowDescendant"},
                    "description": "Children, their children, ...: nearest first, at most 100",
                },
                "more_descendants": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Descendants not listed",
                },
                "more_descendants_at_least": {
                    "type": "boolean",
                    "description": "The count stopped (10,000 dependencies walked): there may be more",
                },
            }
        ),
        "FlowParent": _obj({"id": {"type": "integer"}, "type": {"type": "string"}, "state": state}),
        "FlowDescendant": _obj(
            {
                "id": {"type": "integer"},
                "type": {"type": "string"},
                "state": state,
                "after": {"type": "integer", "description": "The parent it was reached from"},
                "depth": {"type": "integer", "minimum": 1, "description": "1: a child, 2: a grandchild, ..."},
            }
        ),
    }
