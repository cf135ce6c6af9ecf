"""The POST /v1/responses body the gateway reads, and OpenAI's length bounds on its fields."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field
from pydantic.types import StrictBool, StrictFloat, StrictInt, StrictStr, StringConstraints

from ..errors import InvalidRequest
from ..schemas import ABSURD_MAX_TOKENS, NullIsAbsent

# OpenAI's bounds. Documented in its API reference: `metadata` holds at most 16 pairs, keys up
# to 64 characters, values up to 512; `safety_identifier` up to 64. Enforced by OpenAI (its 400
# `string_above_max_length`) though not in the reference: `prompt_cache_key` up to 64. OpenAI
# states none for `user` (deprecated, replaced by those two): 256 is this gateway's own figure.
# Unbounded, one API key's metadata (echoed and stored with the response) would fill the store.
_METADATA_PAIRS = 16
_METADATA_KEY_CHARS = 64
_METADATA_VALUE_CHARS = 512
_STRING_CHARS = {"user": 256, "safety_identifier": 64, "prompt_cache_key": 64}
_MetadataKey = Annotated[str, StringConstraints(max_length=_METADATA_KEY_CHARS)]
_MetadataValue = Annotated[StrictStr, StringConstraints(max_length=_METADATA_VALUE_CHARS)]


class ResponsesRequest(NullIsAbsent):
    """The fields of POST /v1/responses the gateway reads; unknown fields are kept."""

    model_config = ConfigDict(extra="allow")
    model: StrictStr = Field(min_length=1, examples=["local"])
    input: StrictStr | list[dict[str, Any]] = Field(examples=["Say hello in French."])
    instructions: StrictStr | None = None
    max_output_tokens: StrictInt | None = Field(None, ge=1, le=ABSURD_MAX_TOKENS)
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | None = Field(None, ge=0, le=1)
    text: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: StrictStr | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    metadata: dict[_MetadataKey, _MetadataValue] | None = Field(None, max_length=_METADATA_PAIRS)
    store: StrictBool | None = None
    previous_response_id: StrictStr | None = Field(None, min_length=1, max_length=128)
    stream: StrictBool = False
    stream_options: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    user: StrictStr | None = Field(None, max_length=_STRING_CHARS["user"])
    safety_identifier: StrictStr | None = Field(None, max_length=_STRING_CHARS["safety_identifier"])
    prompt_cache_key: StrictStr | None = Field(None, max_length=_STRING_CHARS["prompt_cache_key"])

    def stores(self) -> bool:
        """OpenAI's default: a response is stored unless `store` is false."""
        return self.store is not False


def check_lengths(body: dict[str, Any]) -> None:
    """OpenAI's length bounds (above) on the raw body, as OpenAI words them: a 400 naming the
    field, and never echoing a long key back. Types are left to the model's validation."""
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        if len(metadata) > _METADATA_PAIRS:
            raise bad_field(
                f"Invalid 'metadata': too many properties. Expected an object with at most "
                f"{_METADATA_PAIRS} properties, but got an object with {len(metadata)} instead.",
                "metadata",
                "object_above_max_properties",
            )
        for key, value in metadata.items():
            if len(key) > _METADATA_KEY_CHARS:
                raise _too_long("metadata", _METADATA_KEY_CHARS, len(key), "key")
            if isinstance(value, str) and len(value) > _METADATA_VALUE_CHARS:
                raise _too_long(f"metadata.{key}", _METADATA_VALUE_CHARS, len(value))
    for name, bound in _STRING_CHARS.items():
        value = body.get(name)
        if isinstance(value, str) and len(value) > bound:
            raise _too_long(name, bound, len(value))


def _too_long(param: str, bound: int, n: int, what: str = "string") -> InvalidRequest:
    return bad_field(
        f"Invalid '{param}': {what} too long. Expected a {what} with maximum length {bound}, "
        f"but got a {what} with length {n} instead.",
        param,
        "string_above_max_length",
    )


def bad_field(message: str, param: str, code: str = "unsupported_parameter") -> InvalidRequest:
    """A 400 naming the Responses field the client sent."""
    return InvalidRequest(message, param=param, code=code)


def item_string(item: dict[str, Any], key: str, where: str) -> str:
    """`item[key]`, which must be a string: a 400 naming `where.key` otherwise."""
    value = item.get(key)
    if not isinstance(value, str):
        raise bad_field(f"'{where}.{key}' must be a string.", f"{where}.{key}", "invalid_value")
    return value
