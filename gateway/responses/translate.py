"""A Responses API request as a chat request: one pipeline (routing, cache, local, cloud) for both.

`/v1/responses` is served by mapping the request onto `/v1/chat/completions` and the answer
back (render.py). Everything the chat path already does, the local model's grammars and tool
calls, the policy, the cache, failover and the cloud's allow-listed parameters, then applies
unchanged. What has no chat equivalent (built-in tools, background runs, `include`, ...) is a
400 naming the field: forwarded as chat, no route could honour it. `item_reference` input
items are replaced by the stored items they name (references.py) before the mapping, so
every route gets the whole conversation as chat messages.

Errors raised by the chat path name chat fields (`messages[3]`, `response_format`,
`max_tokens`); `ErrorNames` (error_names.py) turns them back into the names the client sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest
from .request import ResponsesRequest, bad_field, item_string

# Fields read here and never forwarded as they are; everything else unknown to this model
# travels with the chat request (the local path refuses it by name, the cloud gets it as a
# JSON body field, as on /v1/chat/completions).
_CONSUMED = frozenset(
    {
        "model",
        "input",
        "instructions",
        "max_output_tokens",
        "temperature",
        "top_p",
        "text",
        "tools",
        "tool_choice",
        "metadata",
        "store",
        "previous_response_id",
        "stream",
        "stream_options",
        "reasoning",
        "truncation",
        "include",
        "background",
        "conversation",
        "prompt",
        "max_tool_calls",
        "top_logprobs",
        "context_management",
    }
)
# Responses-only fields with no chat equivalent: no route of this gateway can honour them.
_NOT_SERVED: dict[str, str] = {
    "conversation": "the Conversations API is not served here; use previous_response_id",
    "prompt": "stored prompt templates are not served here",
    "max_tool_calls": "the number of tool calls cannot be bounded on the chat path",
    "top_logprobs": "output logprobs are not served on /v1/responses",
    "context_management": "server-side compaction is not served here",
}
# Chat completions parameters a Responses request may not smuggle in: `n` would produce answers
# the response has no place for, the rest have Responses names of their own (or none).
_CHAT_ONLY = frozenset(
    "messages n max_tokens max_completion_tokens response_format logprobs functions "
    "function_call stop seed presence_penalty frequency_penalty logit_bias audio modalities "
    "prediction reasoning_effort verbosity web_search_options echo suffix best_of".split()
)
_BUILT_IN = "built-in tools are not served: only function tools"


def _not_served(name: str, why: str) -> InvalidRequest:
    return bad_field(f"'{name}' is not supported by this gateway's /v1/responses ({why}).", name)


@dataclass
class ChatPlan:
    """The chat body a Responses request becomes, and where each of its messages came from."""

    body: dict[str, Any]
    origins: list[str] = field(default_factory=list)  # per chat message: the client's name
    history: list[dict[str, Any]] = field(default_factory=list)  # messages a follow-up reuses


def to_chat(req: ResponsesRequest, previous: list[dict[str, Any]] | None) -> ChatPlan:
    """The chat request for `req`, continuing `previous` (a stored response's conversation)."""
    _refuse_unservable(req)
    messages: list[dict[str, Any]] = []
    origins: list[str] = []
    if req.instructions is not None:
        # Instructions are not carried into a follow-up (as OpenAI's are not): not in history.
        messages.append({"role": "system", "content": req.instructions})
        origins.append("instructions")
    history = list(previous or [])
    messages += history
    origins += ["previous_response_id"] * len(history)
    new = _input_messages(req.input)
    messages += [m for m, _ in new]
    origins += [o for _, o in new]
    history += [m for m, _ in new]
    body: dict[str, Any] = {
        k: v for k, v in req.model_dump(exclude_unset=True).items() if k not in _CONSUMED
    }
    body["model"] = req.model
    body["messages"] = messages
    body["stream"] = req.stream
    for name in ("temperature", "top_p"):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    if req.max_output_tokens is not None:
        # max_tokens, not max_completion_tokens: the cloud path clamps this one per model.
        body["max_tokens"] = req.max_output_tokens
    body.update(_text(req.text))
    body.update(_reasoning(req.reasoning))
    if req.tools is not None:
        body["tools"] = [_tool(i, t) for i, t in enumerate(req.tools)]
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice)
    return ChatPlan(body, origins, history)


def _refuse_unservable(req: ResponsesRequest) -> None:
    extra = req.model_extra or {}
    chat_only = sorted(_CHAT_ONLY & extra.keys())
    if chat_only:
        raise bad_field(
            f"'{chat_only[0]}' is a chat completions parameter, not one of /v1/responses.",
            chat_only[0],
            "unknown_parameter",
        )
    for name, why in _NOT_SERVED.items():
        value = extra.get(name)
        if value is None or (name == "top_logprobs" and type(value) is int and value == 0):
            continue  # top_logprobs 0 asks for no alternatives: nothing to serve
        raise _not_served(name, why)
    if extra.get("background") is True:
        raise _not_served("background", "answers are served while the request waits")
    if extra.get("include"):
        raise _not_served("include", "no extra output data is available")
    truncation = extra.get("truncation")
    if truncation not in (None, "disabled"):
        raise _not_served("truncation", "only 'disabled': a prompt too long is a 400")
    for key in req.stream_options or {}:
        if key != "include_obfuscation":
            raise _not_served(f"stream_options.{key}", "unknown stream option")


def _text(text: dict[str, Any] | None) -> dict[str, Any]:
    """`text.format` as `response_format`; `text.verbosity` as chat's `verbosity`."""
    out: dict[str, Any] = {}
    for key, value in (text or {}).items():
        if key == "verbosity":
            if value is not None:
                out["verbosity"] = value
        elif key != "format":
            raise _not_served(f"text.{key}", "unknown text option")
    fmt = (text or {}).get("format")
    if fmt is None:
        return out
    if not isinstance(fmt, dict) or not isinstance(fmt.get("type"), str):
        raise bad_field(
            "'text.format' must be an object with a 'type'.", "text.format", "invalid_value"
        )
    kind = fmt["type"]
    if kind in ("text", "json_object"):
        out["response_format"] = {"type": kind}
    elif kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise bad_field(
                "'text.format.schema' must be a JSON schema object.",
                "text.format.schema",
                "invalid_value",
            )
        spec: dict[str, Any] = {"name": fmt.get("name") or "response", "schema": schema}
        for key in ("strict", "description"):
            if fmt.get(key) is not None:
                spec[key] = fmt[key]
        out["response_format"] = {"type": "json_schema", "json_schema": spec}
    else:
        raise bad_field(
            f"'text.format.type' must be text, json_object or json_schema, not '{kind}'.",
            "text.format.type",
            "invalid_value",
        )
    return out


def _reasoning(reasoning: dict[str, Any] | None) -> dict[str, Any]:
    """`reasoning.effort` as chat's `reasoning_effort` (the local model refuses it)."""
    out: dict[str, Any] = {}
    for key, value in (reasoning or {}).items():
        if value is None:
            continue
        if key != "effort":
            raise _not_served(f"reasoning.{key}", "reasoning summaries are not served")
        out["reasoning_effort"] = value
    return out


def _tool(i: int, tool: dict[str, Any]) -> dict[str, Any]:
    kind = tool.get("type")
    if kind != "function":
        raise bad_field(
            f"'tools[{i}].type' is '{kind}': this gateway serves function tools only "
            f"({_BUILT_IN}).",
            f"tools[{i}].type",
        )
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise bad_field(f"'tools[{i}].name' must be a string.", f"tools[{i}].name", "invalid_value")
    fn: dict[str, Any] = {"name": name}
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            fn[key] = tool[key]
    return {"type": "function", "function": fn}


def _tool_choice(choice: str | dict[str, Any]) -> Any:
    if isinstance(choice, str):
        if choice in ("none", "auto", "required"):
            return choice
    elif choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    elif choice.get("type") == "allowed_tools" and isinstance(choice.get("tools"), list):
        # The Responses spelling (function tools named at the top level) in chat's.
        tools = []
        for i, tool in enumerate(choice["tools"]):
            if (
                not isinstance(tool, dict)
                or tool.get("type") != "function"
                or not isinstance(tool.get("name"), str)
            ):
                raise bad_field(
                    f"'tool_choice.tools[{i}]' must be a function tool "
                    '({"type": "function", "name": ...}): built-in tools are not served.',
                    "tool_choice",
                    "invalid_value",
                )
            tools.append({"type": "function", "function": {"name": tool["name"]}})
        return {
            "type": "allowed_tools",
            "allowed_tools": {"mode": choice.get("mode"), "tools": tools},
        }
    raise bad_field(
        "'tool_choice' must be 'none', 'auto', 'required', "
        '{"type": "function", "name": ...} or {"type": "allowed_tools", ...} (built-in '
        "tools are not served).",
        "tool_choice",
        "invalid_value",
    )


# -- input items -> chat messages ---------------------------------------------------------

_ROLES = ("user", "assistant", "system", "developer")


def _input_messages(value: str | list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """Chat messages for `input`, each with the input item it came from."""
    if isinstance(value, str):
        return [({"role": "user", "content": value}, "input")]
    if not value:
        raise bad_field("'input' must not be empty.", "input", "invalid_value")
    out: list[tuple[dict[str, Any], str]] = []
    for i, item in enumerate(value):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            out.append((_message(item, where), where))
        elif kind == "function_call":
            call = _call(item, where)
            last = out[-1][0] if out else None
            if last is not None and last["role"] == "assistant":
                # One assistant turn carries its text and every call it made.
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append(({"role": "assistant", "content": None, "tool_calls": [call]}, where))
        elif kind == "function_call_output":
            call_id = item_string(item, "call_id", where)
            output = item.get("output")
            text = output if isinstance(output, str) else _parts_text(output, f"{where}.output")
            out.append(({"role": "tool", "tool_call_id": call_id, "content": text}, where))
        else:
            raise bad_field(
                f"'{where}.type' is '{kind}': this gateway takes message, function_call, "
                "function_call_output and item_reference items.",
                f"{where}.type",
            )
    return out


def _call(item: dict[str, Any], where: str) -> dict[str, Any]:
    return {
        "id": item_string(item, "call_id", where),
        "type": "function",
        "function": {
            "name": item_string(item, "name", where),
            "arguments": item_string(item, "arguments", where),
        },
    }


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise bad_field(
            f"'{where}.role' must be one of {', '.join(_ROLES)}.", f"{where}.role", "invalid_value"
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise bad_field(
            f"'{where}.content' must be a string or a list of content parts.",
            f"{where}.content",
            "invalid_value",
        )
    if role == "assistant":
        return {"role": role, "content": _parts_text(content, f"{where}.content")}
    return {
        "role": role,
        "content": [_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)],
    }


def _part(part: Any, where: str) -> dict[str, Any]:
    """An input content part as a chat content part (the local model refuses non-text ones)."""
    if not isinstance(part, dict):
        raise bad_field(f"'{where}' must be an object.", where, "invalid_value")
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": item_string(part, "text", where)}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            raise bad_field(
                f"'{where}.image_url' must be a URL or data URL (file ids are not served).",
                f"{where}.image_url",
            )
        image: dict[str, Any] = {"url": url}
        if isinstance(part.get("detail"), str):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        file = {
            k: part[k] for k in ("file_id", "file_data", "filename") if isinstance(part.get(k), str)
        }
        if not (file.get("file_id") or file.get("file_data")):
            raise bad_field(
                f"'{where}' needs a file_id or file_data (file URLs are not served).",
                f"{where}.file_url",
            )
        return {"type": "file", "file": file}
    raise bad_field(f"'{where}.type' '{kind}' is not an input content part.", f"{where}.type")


def _parts_text(parts: Any, where: str) -> str:
    """Text parts joined (assistant turns, tool outputs): nothing but text is allowed there."""
    if not isinstance(parts, list):
        raise bad_field(
            f"'{where}' must be a string or a list of text parts.", where, "invalid_value"
        )
    texts: list[str] = []
    for j, p in enumerate(parts):
        if not isinstance(p, dict) or p.get("type") not in ("input_text", "output_text", "refusal"):
            raise bad_field(
                f"'{where}[{j}]' must be a text part.", f"{where}[{j}]", "invalid_value"
            )
        key = "refusal" if p["type"] == "refusal" else "text"
        texts.append(item_string(p, key, f"{where}[{j}]"))
    return "".join(texts)
