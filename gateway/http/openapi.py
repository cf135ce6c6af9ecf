"""The OpenAPI document served at /openapi.json: the gateway's API as clients see it.

Request bodies are generated from the same pydantic models that validate requests, so the
document cannot drift from what the handlers accept.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from ..schemas import ChatRequest, CompletionRequest
from .openapi_embeddings import embedding_paths, embedding_schemas
from .openapi_parts import GEN_ERRORS, errors, json_body, json_request
from .openapi_responses import response_paths
from .openapi_status import ADMIN_CURVE, ADMIN_STATUS

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_USAGE = {
    "type": "object",
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
    },
}


def _response(object_name: str) -> dict[str, Any]:
    """A whole (non-streamed) response of the given OpenAI object type."""
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": [object_name]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object"}},
            "usage": _USAGE,
        },
    }


def _stream_or_json(object_name: str) -> dict[str, Any]:
    return {
        "200": {
            "description": "A response, or an SSE stream when `stream` is true",
            "content": {
                "application/json": {"schema": _response(object_name)},
                # Before OpenAPI 3.2, an event stream's `schema` describes each event.
                "text/event-stream": {
                    "schema": {
                        "type": "object",
                        "properties": {"data": {"type": "string"}, "event": {"type": "string"}},
                        "required": ["data"],
                    }
                },
            },
        }
    }


_FEEDBACK: dict[str, Any] = {
    "type": "object",
    "required": ["request_id"],
    "properties": {
        "request_id": {"type": "string", "description": "x-request-id of the answer"},
        "score": {"type": "number", "minimum": -1, "maximum": 1, "description": "-1 bad, 1 good"},
        "good": {"type": "boolean", "description": "instead of score"},
    },
    "additionalProperties": False,
    "oneOf": [{"required": ["score"]}, {"required": ["good"]}],  # exactly one of them
}


@functools.cache
def document() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(ChatRequest, "validation"), (CompletionRequest, "validation")],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    schemas["Error"] = _ERROR
    schemas.update(embedding_schemas())
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edge-gateway",
            "version": "1",
            "description": "OpenAI-compatible edge LLM routing gateway.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "paths": {
            **embedding_paths(),
            "/v1/chat/completions": {
                "post": {
                    "operationId": "createChatCompletion",
                    "requestBody": json_request({"$ref": "#/components/schemas/ChatRequest"}),
                    "responses": {**_stream_or_json("chat.completion"), **errors(*GEN_ERRORS)},
                }
            },
            "/v1/completions": {
                "post": {
                    "operationId": "createCompletion",
                    "requestBody": json_request({"$ref": "#/components/schemas/CompletionRequest"}),
                    "responses": {
                        **_stream_or_json("text_completion"),
                        **errors(*GEN_ERRORS),
                    },
                }
            },
            "/v1/route": {
                "post": {
                    "operationId": "explainRoute",
                    "requestBody": json_request({"$ref": "#/components/schemas/ChatRequest"}),
                    "responses": {
                        "200": json_body(
                            {
                                "type": "object",
                                "required": ["route", "target", "rule", "reason", "features"],
                            },
                            "The routing decision and the features behind it",
                        ),
                        **errors(400, 401, 403, 404, 413, 415, 429),
                    },
                }
            },
            "/v1/feedback": {
                "post": {
                    "operationId": "createFeedback",
                    "description": "Score an answer this key received (learning.enabled).",
                    "requestBody": json_request(_FEEDBACK),
                    "responses": {
                        "200": json_body(
                            {
                                "type": "object",
                                "required": ["object", "request_id", "score", "label"],
                            },
                            "The label stored",
                        ),
                        **errors(400, 401, 403, 404, 409, 413, 415),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "responses": {
                        "200": json_body(
                            {
                                "type": "object",
                                "required": ["object", "data"],
                                "properties": {
                                    "object": {"type": "string"},
                                    "data": {"type": "array", "items": {"type": "object"}},
                                },
                            }
                        ),
                        **errors(401, 403),
                    },
                }
            },
            "/v1/models/{model}": {
                "get": {
                    "operationId": "retrieveModel",
                    "parameters": [
                        {
                            "name": "model",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                            "description": "A name /v1/models lists",
                        }
                    ],
                    "responses": {
                        "200": json_body(
                            {
                                "type": "object",
                                "required": ["id", "object", "created", "owned_by"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "object": {"type": "string", "enum": ["model"]},
                                    "created": {"type": "integer"},
                                    "owned_by": {"type": "string"},
                                },
                            }
                        ),
                        **errors(401, 403, 404),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "security": [],
                    "responses": {"200": json_body({"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "security": [],
                    "responses": {
                        "200": json_body({"type": "object"}),
                        "503": json_body({"type": "object"}, "Loading or draining"),
                    },
                }
            },
            "/admin/status": ADMIN_STATUS,
            "/admin/routing-curve": ADMIN_CURVE,
            **response_paths(),
        },
    }
