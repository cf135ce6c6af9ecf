"""Pieces every part of /openapi.json builds its operations from: error responses in OpenAI's
shape, JSON bodies, object schemas."""

from __future__ import annotations

from typing import Any

ERROR_REF = {"$ref": "#/components/schemas/Error"}
# The statuses a generating endpoint may answer with besides 200 (403 and 415: a box without
# client keys refuses other sites, rebound host names and bodies that are not JSON).
GEN_ERRORS = (400, 401, 403, 404, 413, 415, 429, 502, 503, 504)


def errors(*statuses: int) -> dict[str, Any]:
    """The responses for `statuses`, each an OpenAI-shaped error."""
    return {
        str(s): {
            "description": "OpenAI-shaped error",
            "content": {"application/json": {"schema": ERROR_REF}},
        }
        for s in statuses
    }


def json_body(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    """A JSON response (or request content) of `schema`."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_request(schema: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body of `schema`."""
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def obj(*required: str, **properties: Any) -> dict[str, Any]:
    """An object schema: its `required` names, then each property's schema."""
    return {"type": "object", "required": list(required), "properties": properties}
