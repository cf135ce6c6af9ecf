"""What the local path does with each OpenAI request field, in one table: honour or refuse.

A field the local model cannot honour is a 400 naming it, never a silent drop. Fields that
only describe the caller or the delivery (`user`, `metadata`, `store`, ...) change nothing in
an answer and are accepted as they are. Anything else the table does not know is refused:
the cloud may understand it, the local model does not. README.md has the same table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidRequest
from ..schemas import AnyRequest, ChatRequest

HONOURED = "honoured"
NO_EFFECT = "accepted, no effect on the answer"

# Fields of both endpoints.
COMMON: dict[str, str] = {
    "model": HONOURED,
    "stream": HONOURED,
    "stream_options": HONOURED,
    "max_tokens": HONOURED,
    "temperature": HONOURED,
    "top_p": HONOURED,
    "n": "honoured: parallel sequences on the batched engine",
    "stop": HONOURED,
    "seed": "honoured: choice i samples with seed + i",
    "presence_penalty": HONOURED,
    "frequency_penalty": HONOURED,
    "user": NO_EFFECT,
    "metadata": NO_EFFECT,
    "store": NO_EFFECT,
    "service_tier": NO_EFFECT,
    "prompt_cache_key": NO_EFFECT,
    "safety_identifier": NO_EFFECT,
}
CHAT: dict[str, str] = {
    **COMMON,
    "messages": "honoured; text parts only: image parts are refused",
    "max_completion_tokens": HONOURED,
    "logprobs": HONOURED,
    "top_logprobs": HONOURED,
    "response_format": "honoured: text, json_object and json_schema by grammar (llguidance)",
    "tools": "honoured: function tools, calls by grammar (llguidance)",
    "tool_choice": "honoured: none, auto (see README), required, a named function, allowed_tools",
    "parallel_tool_calls": "honoured: at most one call per answer",
}
COMPLETION: dict[str, str] = {
    **COMMON,
    "prompt": "honoured: a string or a list of strings (one choice each)",
    "echo": "honoured, not with logprobs",
    "logprobs": HONOURED,
    "best_of": "honoured when 1 (or equal to n); refused above",
}
# Known, and refused on the local path (the reason is the error message).
REFUSED: dict[str, str] = {
    "logit_bias": "token ids are the cloud tokenizer's, not the local model's; only {} is accepted",
    "modalities": 'the local model answers in text only: only ["text"] is accepted',
    "prompt_cache_retention": "only in_memory or 24h",
    "prompt_cache_options": "only ttl 30m and mode implicit or explicit",
    "functions": "the deprecated functions API; use tools",
    "function_call": "the deprecated functions API; use tool_choice",
    "suffix": "the local model has no fill-in-the-middle tokens",
    "audio": "the local model has no audio output",
    "prediction": "predicted outputs are not supported by the local model",
    "reasoning_effort": "the local model does not reason in a separate budget",
    "web_search_options": "the local model cannot search the web",
    "verbosity": "the local model has no verbosity control",
}
# Known fields accepted with the values that ask nothing of the answer (what OpenAI clients send
# by default or to say "nothing special"); any other value is refused as REFUSED says.
_PROMPT_CACHE_RETENTION = ("in_memory", "in-memory", "24h")  # the SDK's spelling and the docs'
HARMLESS_COMMON: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "logit_bias": ("`{}` accepted (no bias); any entry: 400", lambda v: v == {}),
}
HARMLESS_CHAT: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **HARMLESS_COMMON,
    "modalities": ('`["text"]` accepted (the answer is text); audio: 400', lambda v: v == ["text"]),
    "prompt_cache_retention": (
        "in_memory or 24h accepted, no effect on the answer (the local model keeps prefixes "
        "in its slots as long as they last)",
        lambda v: v in _PROMPT_CACHE_RETENTION,
    ),
    "prompt_cache_options": (
        "ttl 30m and mode implicit or explicit accepted, no effect on the answer (the local "
        "model keeps prefixes in its slots as long as they last); other values: 400",
        lambda v: _cache_options(v),
    ),
}
_IMAGE_PARTS = ("image_url", "input_image", "image")


def _cache_options(v: Any) -> bool:
    """OpenAI's `prompt_cache_options` with the values it defines (ttl: only 30m)."""
    return (
        isinstance(v, dict)
        and set(v) <= {"ttl", "mode"}
        and v.get("ttl", "30m") == "30m"
        and v.get("mode", "implicit") in ("implicit", "explicit")
    )


def _refuse(field: str, why: str, code: str = "unsupported_parameter") -> InvalidRequest:
    return InvalidRequest(
        f"'{field}' is not supported by the local model, which answers this request ({why}).",
        param=field,
        code=code,
    )


def check(req: AnyRequest, *, has_fim: bool = False) -> None:
    """400 naming the first field the local path would otherwise ignore."""
    chat = isinstance(req, ChatRequest)
    table = CHAT if chat else COMPLETION
    harmless = HARMLESS_CHAT if chat else HARMLESS_COMMON
    for field, value in req.model_dump(exclude_unset=True).items():
        if value is None or field in table:
            continue
        if field == "suffix" and has_fim:
            continue
        if field in harmless and harmless[field][1](value):
            continue
        raise _refuse(field, REFUSED.get(field, "unknown to the local path"))
    if isinstance(req, ChatRequest):
        _check_chat(req)
    else:
        _check_completion(req)


def _check_chat(req: ChatRequest) -> None:
    for i, m in enumerate(req.messages):
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                if part.type in _IMAGE_PARTS:
                    raise _refuse(
                        f"messages[{i}].content[{j}].{part.type}",
                        "the local model reads text only",
                        code="image_not_supported",
                    )
                if part.type != "text":
                    raise _refuse(f"messages[{i}].content[{j}].type", f"a '{part.type}' part")
    kind = (req.response_format or {}).get("type", "text")
    if kind not in ("text", "json_object", "json_schema"):
        raise _refuse("response_format.type", f"'{kind}'")
    _check_tool_choice(req.tool_choice)


def _check_tool_choice(choice: Any) -> None:
    if choice is None or choice in ("none", "auto", "required"):
        return
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        _check_allowed_tools(choice.get("allowed_tools"))
        return
    raise InvalidRequest(
        "'tool_choice' must be 'none', 'auto', 'required', "
        '{"type": "function", "function": {"name": ...}} or '
        '{"type": "allowed_tools", "allowed_tools": {"mode": ..., "tools": [...]}}.',
        param="tool_choice",
        code="invalid_value",
    )


def _check_allowed_tools(allowed: Any) -> None:
    """OpenAI's `allowed_tools`: a mode and the function tools the answer may call."""
    where = "tool_choice.allowed_tools"
    if not isinstance(allowed, dict) or allowed.get("mode") not in ("auto", "required"):
        raise InvalidRequest(
            f"'{where}' must be an object with 'mode' ('auto' or 'required') and 'tools'.",
            param="tool_choice",
            code="invalid_value",
        )
    tools = allowed.get("tools")
    if not isinstance(tools, list) or not tools:
        raise InvalidRequest(
            f"'{where}.tools' must list at least one tool.",
            param="tool_choice",
            code="invalid_value",
        )
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
        ):
            kind = tool.get("type") if isinstance(tool, dict) else None
            raise _refuse(f"{where}.tools[{i}]", f"a '{kind}' tool: function tools only")


def _check_completion(req: Any) -> None:
    if req.max_tokens == 0:
        raise _refuse(
            "max_tokens", "0 asks for no completion at all; it generates at least one token"
        )
    if req.echo and req.logprobs is not None:
        raise _refuse("echo", "echo with logprobs needs prompt logprobs")
    best_of = (req.model_extra or {}).get("best_of")
    if best_of is not None and best_of not in (1, req.n or 1):
        raise _refuse("best_of", "no server-side ranking of candidates")
