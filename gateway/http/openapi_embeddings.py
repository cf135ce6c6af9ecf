"""The /v1/embeddings part of /openapi.json, merged into the document by openapi.py."""

from __future__ import annotations

from typing import Any

from ..embeddings.request import EmbeddingRequest
from .openapi_parts import GEN_ERRORS, errors, json_request

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


def embedding_schemas() -> dict[str, Any]:
    schema = EmbeddingRequest.model_json_schema(ref_template=_REF)
    defs = schema.pop("$defs", {})
    return {**defs, "EmbeddingRequest": schema}


def embedding_paths() -> dict[str, Any]:
    return {
        "/v1/embeddings": {
            "post": {
                "operationId": "createEmbedding",
                "requestBody": json_request({"$ref": "#/components/schemas/EmbeddingRequest"}),
                "responses": {
                    "200": {
                        "description": "One vector per input, in input order",
                        "content": {"application/json": {"schema": _RESPONSE}},
                    },
                    **errors(*GEN_ERRORS),
                },
            }
        }
    }
