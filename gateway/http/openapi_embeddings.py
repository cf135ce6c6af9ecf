"""The /v1/embeddings part of /openapi.json, merged into the document by openapi.py."""

from __future__ import annotations

from typing import Any

from ..embeddings.request import EmbeddingRequest

_REF = "#/components/schemas/{model}"

_RESPONSE = {
    "type": "object",
    "required": ["object", "data", "model", "usage"],
    "properties": {
        "object": {"type": "string", "enum": ["list"]},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["object", "index", "embedding"],
                "properties": {
                    "object": {"type": "string", "enum": ["embedding"]},
                    "index": {"type": "integer"},
                    "embedding": {
                        "description": "unit length; base64: little-endian float32 bytes",
                        "oneOf": [
                            {"type": "array", "items": {"type": "number"}},
                            {"type": "string"},
                        ],
                    },
                },
            },
        },
        "model": {"type": "string"},
        "usage": {
            "type": "object",
            "required": ["prompt_tokens", "total_tokens"],
            "properties": {
                "prompt_tokens": {"type": "integer"},
                "total_tokens": {"type": "integer"},
            },
        },
    },
}

_ERROR = {
    "description": "OpenAI-shaped error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def embedding_schemas() -> dict[str, Any]:
    schema = EmbeddingRequest.model_json_schema(ref_template=_REF)
    defs = schema.pop("$defs", {})
    return {**defs, "EmbeddingRequest": schema}


def embedding_paths() -> dict[str, Any]:
    return {
        "/v1/embeddings": {
            "post": {
                "operationId": "createEmbedding",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/EmbeddingRequest"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "One vector per input, in input order",
                        "content": {"application/json": {"schema": _RESPONSE}},
                    },
                    **{str(s): _ERROR for s in (400, 401, 404, 413, 429, 502, 503, 504)},
                },
            }
        }
    }
