"""The /v1/responses paths of /openapi.json, merged into the document by openapi.py."""

from __future__ import annotations

from typing import Any

from ..responses.request import ResponsesRequest
from .openapi_parts import GEN_ERRORS, errors, json_request

_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "created_at", "status", "model", "output"],
    "properties": {
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["response"]},
        "created_at": {"type": "integer"},
        "status": {"type": "string", "enum": ["completed", "incomplete", "failed", "in_progress"]},
        "model": {"type": "string"},
        "output": {"type": "array", "items": {"type": "object", "required": ["type"]}},
        "usage": {
            "type": ["object", "null"],
            "required": ["input_tokens", "output_tokens", "total_tokens"],
            "properties": {
                "input_tokens": {"type": "integer"},
                "output_tokens": {"type": "integer"},
                "total_tokens": {"type": "integer"},
            },
        },
    },
}


def _request_schema() -> dict[str, Any]:
    # Inline (no $defs: ResponsesRequest has no nested models), from the validating model.
    return ResponsesRequest.model_json_schema(mode="validation")


_ID = {
    "name": "response_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}


def response_paths() -> dict[str, Any]:
    return {
        "/v1/responses": {
            "post": {
                "operationId": "createResponse",
                "requestBody": json_request(_request_schema()),
                "responses": {
                    "200": {
                        "description": "A response, or its events as SSE when `stream` is true",
                        "content": {
                            "application/json": {"schema": _RESPONSE},
                            "text/event-stream": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "event": {"type": "string"},
                                        "data": {"type": "string"},
                                    },
                                    "required": ["data"],
                                }
                            },
                        },
                    },
                    **errors(*GEN_ERRORS),
                },
            }
        },
        "/v1/responses/{response_id}": {
            "get": {
                "operationId": "getResponse",
                "parameters": [
                    _ID,
                    {
                        "name": "stream",
                        "in": "query",
                        "schema": {"type": "boolean"},
                        "description": "true: the stored response replayed as its event stream",
                    },
                    {
                        "name": "starting_after",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": -1},
                        "description": "With stream: the events after this sequence number",
                    },
                    {
                        "name": "include[]",
                        "in": "query",
                        "schema": {"type": "array", "items": {"type": "string"}},
                        "description": "Refused (400): a stored response holds what its "
                        "create request asked for",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "A stored response (an event stream with stream=true)",
                        "content": {
                            "application/json": {"schema": _RESPONSE},
                            "text/event-stream": {"schema": {"type": "string"}},
                        },
                    },
                    **errors(400, 401, 403, 404),
                },
            },
            "delete": {
                "operationId": "deleteResponse",
                "parameters": [_ID],
                "responses": {
                    "200": {
                        "description": "Deleted",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["id", "object", "deleted"],
                                }
                            }
                        },
                    },
                    **errors(401, 403, 404),
                },
            },
        },
    }
