"""One place that shapes a client's request for an OpenAI-compatible upstream.

Both cloud backends send what the client asked for, with the model, the output clamp and the
usage request set by the gateway. The litellm backend also needs the body split in two: the
OpenAI request parameters, which litellm takes as keyword arguments, and everything else,
which must travel only as JSON body fields (`extra_body`). litellm reads many keyword
arguments as call options (`base_url`, `api_key`, `extra_headers`, `mock_response`,
`custom_llm_provider`, callbacks, retries...): a client field must never become one, or a
client could send the operator's key to a host of its choosing.
"""

from __future__ import annotations

from typing import Any

from ..schemas import AnyRequest
from ..settings import CloudModel
from .base import Endpoint

# OpenAI's request parameters, as documented for each endpoint, minus `model` and `stream`
# (set by the gateway) and `metadata` (litellm reads that one as its own logging metadata).
_COMMON = frozenset(
    {
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "max_tokens",
        "n",
        "presence_penalty",
        "seed",
        "stop",
        "stream_options",
        "temperature",
        "top_p",
        "user",
    }
)
REQUEST_PARAMS: dict[Endpoint, frozenset[str]] = {
    "chat": _COMMON
    | {
        "audio",
        "function_call",
        "functions",
        "max_completion_tokens",
        "messages",
        "modalities",
        "parallel_tool_calls",
        "prediction",
        "reasoning_effort",
        "response_format",
        "service_tier",
        "store",
        "tool_choice",
        "tools",
        "top_logprobs",
        "verbosity",
        "web_search_options",
    },
    "completion": _COMMON | {"best_of", "echo", "prompt", "suffix"},
}


def openai_body(
    req: AnyRequest, model: CloudModel, *, upstream_model: str, stream: bool
) -> dict[str, Any]:
    """The JSON body an OpenAI-compatible upstream gets: the client's fields, ours on top."""
    body = req.upstream_body()
    body["model"] = upstream_model
    body["stream"] = stream
    if req.max_tokens is not None:
        body["max_tokens"] = min(req.max_tokens, model.max_output_tokens)
    if stream:
        # Ask for usage always (metrics, cache, spend); the handler drops it if unasked.
        body["stream_options"] = {**(req.stream_options or {}), "include_usage": True}
    else:
        body.pop("stream_options", None)
    return body


def split_params(body: dict[str, Any], endpoint: Endpoint) -> tuple[dict[str, Any], dict[str, Any]]:
    """(OpenAI parameters, every other field) of a body; `model` and `stream` are dropped."""
    allowed = REQUEST_PARAMS[endpoint]
    params: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for k, v in body.items():
        if k in ("model", "stream"):
            continue
        (params if k in allowed else extra)[k] = v
    return params, extra


def bearer_headers(model: CloudModel) -> dict[str, str]:
    """The upstream's Authorization header, from the operator's environment only."""
    key = model.api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}
