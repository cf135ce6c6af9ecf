"""The OpenAPI document served at /openapi.json: the gateway's API as clients see it.

Request bodies are generated from the same pydantic models that validate requests, so the
document cannot drift from what the handlers accept.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema

from ..responses import openapi as responses_openapi
from ..schemas import ChatRequest, CompletionRequest
from .openapi_embeddings import embedding_paths, embedding_schemas

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


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {
            "description": "OpenAI-shaped error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for s in statuses
    }


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_GEN_ERRORS = (400, 401, 404, 413, 429, 502, 503, 504)


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
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ChatRequest"}
                            }
                        },
                    },
                    "responses": {**_stream_or_json("chat.completion"), **_errors(*_GEN_ERRORS)},
                }
            },
            "/v1/completions": {
                "post": {
                    "operationId": "createCompletion",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CompletionRequest"}
                            }
                        },
                    },
                    "responses": {
                        **_stream_or_json("text_completion"),
                        **_errors(*_GEN_ERRORS),
                    },
                }
            },
            "/v1/route": {
                "post": {
                    "operationId": "explainRoute",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ChatRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["route", "target", "rule", "reason", "features"],
                            },
                            "The routing decision and the features behind it",
                        ),
                        **_errors(400, 401, 404, 413, 429),
                    },
                }
            },
            "/v1/feedback": {
                "post": {
                    "operationId": "createFeedback",
                    "description": "Score an answer this key received (learning.enabled).",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _FEEDBACK}},
                    },
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["object", "request_id", "score", "label"],
                            },
                            "The label stored",
                        ),
                        **_errors(400, 401, 404, 409, 413),
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["object", "data"],
                                "properties": {
                                    "object": {"type": "string"},
                                    "data": {"type": "array", "items": {"type": "object"}},
                                },
                            }
                        ),
                        **_errors(401),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "security": [],
                    "responses": {"200": _json({"type": "object"})},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "security": [],
                    "responses": {
                        "200": _json({"type": "object"}),
                        "503": _json({"type": "object"}, "Loading or draining"),
                    },
                }
            },
            "/admin/status": _ADMIN_STATUS,
            "/admin/routing-curve": _ADMIN_CURVE,
            **responses_openapi.paths(),
        },
    }


def _obj(*required: str, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": properties}


_NUM = {"type": ["number", "null"]}
_STR = {"type": ["string", "null"]}
_COUNTS = _obj(
    "requests",
    "routes",
    "rules",
    requests={"type": "integer"},
    errors={"type": "integer"},
    routes={"type": "object", "additionalProperties": {"type": "integer"}},
    rules={"type": "object", "additionalProperties": {"type": "integer"}},
)
_STATUS = _obj(
    "now",
    "uplink",
    "policy",
    "traffic",
    "cache",
    "local",
    "recent",
    now={"type": "number", "description": "Unix time of this snapshot"},
    started_at={"type": "number"},
    show_prompts={"type": "boolean"},
    uplink=_obj(
        "reachable",
        "targets",
        reachable={"type": ["boolean", "null"], "description": "null: no cloud models"},
        targets={
            "type": "array",
            "items": _obj(
                "name",
                "state",
                name={"type": "string"},
                model={"type": ["string", "null"], "description": "litellm model string"},
                tier={"type": "boolean", "description": "another edge-gateway (tier: true)"},
                state={"type": "string", "enum": ["closed", "open", "half_open"]},
                changed_at={**_NUM, "description": "last breaker transition (Unix time)"},
                change_reason=_STR,
                last_failure=_STR,
            ),
        },
    ),
    policy=_obj(
        "file",
        "rules",
        "last_error",
        file={"type": "string"},
        default={"type": "string"},
        rules={"type": "array", "items": _obj("name", "route")},
        loaded_at={"type": "number"},
        last_error={**_STR, "description": "why the last edit was rejected, if it was"},
    ),
    traffic=_obj(
        "recent",
        "hour",
        "per_minute",
        last_minutes={"type": "integer"},
        recent=_COUNTS,
        hour=_COUNTS,
        per_minute={"type": "array", "items": {"type": "object"}, "maxItems": 60},
    ),
    cache=_obj(
        "hit_rate",
        hit_rate={**_NUM, "description": "hits / (hits + misses), last hour"},
        tokens_saved_hour={"type": "integer", "description": "cloud tokens answered by cache"},
        tokens_saved_total={"type": "integer"},
    ),
    local=_obj(
        "model",
        "ready",
        model={"type": "string"},
        ready={"type": "boolean"},
        slots_busy={"type": "integer"},
        queue_depth={"type": "integer"},
        tokens_per_s=_NUM,
    ),
    recent={
        "type": "array",
        "description": "Newest first, from a bounded ring buffer (ui.recent_decisions). "
        "prompt and answer are null unless ui.show_prompts is on.",
        "items": _obj(
            "time",
            "route",
            "rule",
            "status",
            time={"type": "number"},
            model=_STR,
            route={"type": "string"},
            rule={"type": "string"},
            reason=_STR,
            degraded={"type": "boolean"},
            latency_ms={"type": "number"},
            status={"type": "integer"},
            prompt=_STR,
            answer=_STR,
            upstream={
                "type": ["object", "null"],
                "description": "the hop below, when a tier answered (null otherwise)",
                "required": ["tier", "route", "degraded"],
                "properties": {
                    "tier": {"type": "string", "description": "this box's name for the tier"},
                    "route": {"type": "string", "enum": ["local", "cloud", "cache", "other"]},
                    "degraded": {"type": "boolean"},
                    "reason": _STR,
                    "cache": {"type": ["string", "null"], "enum": ["hit", "miss", "skip", None]},
                    "model_file": _STR,
                    "via": {**_STR, "description": "the tier's own tier, if any"},
                },
            },
        ),
    },
)
_ADMIN_STATUS = {
    "get": {
        "operationId": "adminStatus",
        "description": (
            "What the status page at / shows. Needs the admin key when one is set; without one, "
            "served only over loopback. Holds no keys and no upstream URLs."
        ),
        "responses": {
            "200": _json(_STATUS, "The gateway's state now and over the last hour"),
            **_errors(401, 403),
        },
    }
}

_POINTS = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
}
_CURVE = _obj(
    "enabled",
    "ready",
    enabled={"type": "boolean", "description": "learning.enabled"},
    ready={"type": "boolean", "description": "true: `series` holds the curves"},
    reason={"type": "string", "description": "why there is no curve yet"},
    labels={"type": "integer", "description": "trainable labels in the store"},
    min_labels={"type": "integer", "description": "learning.curve_min_labels"},
    positives={"type": "number"},
    scorer={"type": "string", "enum": ["shipped", "learned"]},
    series={
        "type": "object",
        "description": (
            "[share sent to the cloud, share of the cloud labels recovered] points: "
            "`policy scorer`, `prompt-length`, `random`"
        ),
        "additionalProperties": _POINTS,
    },
    apgr={"type": "object", "additionalProperties": {"type": "number"}},
    threshold={
        "type": ["object", "null"],
        "description": "where the policy's complexity threshold sits on the curve",
        "properties": {
            "complexity": {"type": "number"},
            "share": {"type": "number"},
            "recovered": {"type": "number"},
        },
    },
)
_ADMIN_CURVE = {
    "get": {
        "operationId": "adminRoutingCurve",
        "description": (
            "The routing curve of the box's own labels (the label store) for the scorer in "
            "force, prompt length and random, and where the policy's threshold sits; drawn by "
            "the status page once the store holds learning.curve_min_labels labels. Same "
            "access as /admin/status."
        ),
        "responses": {
            "200": _json(_CURVE, "The curve, or why there is none yet"),
            **_errors(401, 403),
        },
    }
}
