"""Structured output on the local model, valid by construction: JSON and tool calls as grammars.

`response_format` json_object / json_schema and `tools` become a GBNF grammar (llama-cpp-python
turns JSON schemas into GBNF) that the sampler chain enforces token by token, so the answer
parses, and validates against the schema, unless it runs out of `max_tokens` first
(finish_reason "length", as OpenAI's own answers then do).

A tool call is generated as `{"name": ..., "arguments": {...}}`, one object whose schema is an
`anyOf` over the offered tools, and returned in OpenAI's `tool_calls` shape.

`tool_choice`:
- `none`: a plain answer; the tools are not shown to the model.
- a named function, or `required`: a call of that function / of one of the tools.
- `auto` (the default when tools are given): the 135M model cannot be trusted to decide, so
  the rule is fixed: a call when the conversation ends with a user (or system) message, a plain
  answer once it ends with a tool result. A call is never attempted after a tool result.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ...errors import InvalidRequest
from ...schemas import ChatRequest

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


@lru_cache(maxsize=64)
def _gbnf(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    grammar = str(json_schema_to_gbnf(schema_json))
    # llama-cpp-python's string rule lets raw control characters into a JSON string (llama.cpp's
    # own converter excludes them); strict JSON parsers, Python's included, then refuse the
    # answer. Exclude them here, as JSON requires.
    return "\n".join(
        line.replace('[^"\\\\]', '[^"\\\\\\x7F\\x00-\\x1F]', 1)
        if line.startswith("char ::=")
        else line
        for line in grammar.split("\n")
    )


# Keywords llama-cpp-python's converter does not turn into grammar: an answer could break them,
# so a schema using them is refused rather than served "valid" when it is not.
_UNENFORCED = frozenset(
    "minimum maximum exclusiveMinimum exclusiveMaximum multipleOf uniqueItems minProperties "
    "maxProperties not if then else patternProperties dependentRequired dependentSchemas "
    "contains minContains maxContains propertyNames unevaluatedProperties unevaluatedItems".split()
)
_FORMATS = frozenset({"date", "time", "date-time", "uuid"})


def _unenforced(schema: Any, path: str) -> str | None:
    """The path of the first keyword the grammar could not enforce, or None."""
    if not isinstance(schema, dict):
        return None
    for key in schema:
        if key in _UNENFORCED:
            return f"{path}.{key}"
    fmt = schema.get("format")
    if fmt is not None and fmt not in _FORMATS and not str(fmt).startswith("uuid"):
        return f"{path}.format"
    subs: list[tuple[str, Any]] = []
    for key in ("properties", "$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            subs += [(f"{path}.{key}.{k}", v) for k, v in schema[key].items()]
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(schema.get(key), list):
            subs += [(f"{path}.{key}[{i}]", v) for i, v in enumerate(schema[key])]
    for key in ("items", "additionalProperties"):
        subs.append((f"{path}.{key}", schema.get(key)))
    for sub_path, sub in subs:
        found = _unenforced(sub, sub_path)
        if found:
            return found
    return None


def schema_grammar(schema: dict[str, Any], param: str) -> str:
    """GBNF for a JSON schema; a schema the converter cannot take is the client's 400."""
    bad = _unenforced(schema, param)
    if bad is not None:
        raise InvalidRequest(
            f"The local model cannot guarantee '{bad}' of the JSON schema; remove it or send "
            "the request to a cloud model.",
            param=bad,
            code="unsupported_schema",
        )
    try:
        return _gbnf(json.dumps(schema))  # key order kept: it is the order of generation
    except Exception as exc:  # the converter raises plain Exceptions and ValueErrors
        raise InvalidRequest(
            f"The JSON schema in '{param}' cannot be served by the local model: {exc}",
            param=param,
            code="invalid_schema",
        ) from None


def response_grammar(req: ChatRequest) -> str | None:
    """The grammar `response_format` asks for, or None for plain text."""
    rf = req.response_format or {}
    kind = rf.get("type", "text")
    if kind == "json_object":
        return schema_grammar(_ANY_OBJECT, "response_format")
    if kind == "json_schema":
        spec = rf.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            schema = _ANY_OBJECT
        if not isinstance(schema, dict):
            raise InvalidRequest(
                "'response_format.json_schema.schema' must be an object.",
                param="response_format.json_schema.schema",
                code="invalid_value",
            )
        return schema_grammar(schema, "response_format.json_schema.schema")
    return None


@dataclass(frozen=True)
class ToolPlan:
    """The tools one answer may call, and the grammar that makes the call well-formed."""

    tools: tuple[dict[str, Any], ...]  # the `function` objects on offer
    grammar: str

    def prompt(self) -> str:
        """What the model is told about the tools (a system turn; the client's own words)."""
        lines = ["You can call these functions. Answer with one JSON object:"]
        lines.append('{"name": <function name>, "arguments": <arguments object>}')
        for fn in self.tools:
            params = json.dumps(fn.get("parameters") or _ANY_OBJECT, separators=(",", ":"))
            desc = fn.get("description") or ""
            lines.append(f"- {fn['name']}: {desc} Parameters: {params}")
        return "\n".join(lines)


def _functions(req: ChatRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(req.tools or []):
        fn = tool.get("function") if tool.get("type", "function") == "function" else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest(
                f"'tools[{i}]' must be a function tool with a name.",
                param=f"tools[{i}]",
                code="invalid_value",
            )
        out.append(fn)
    return out


def tool_plan(req: ChatRequest) -> ToolPlan | None:
    """The call this answer must make, or None when it is a plain answer."""
    functions = _functions(req)
    if not functions:
        return None
    choice = req.tool_choice if req.tool_choice is not None else "auto"
    if choice == "none":
        return None
    if choice == "auto" and req.messages[-1].role == "tool":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        functions = [fn for fn in functions if fn["name"] == name]
        if not functions:
            raise InvalidRequest(
                f"'tool_choice' names the function '{name}', which is not in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": fn["name"]},
                "arguments": fn.get("parameters") or _ANY_OBJECT,
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for fn in functions
    ]
    schema = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return ToolPlan(tuple(functions), schema_grammar(schema, "tools"))


def tool_calls(text: str) -> list[dict[str, Any]] | None:
    """The generated call in OpenAI's shape; None when the text is not a whole call (cut off)."""
    try:
        call = json.loads(text)
    except ValueError:
        return None
    if not isinstance(call, dict) or "name" not in call:
        return None
    return [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": json.dumps(call.get("arguments", {}), ensure_ascii=False),
            },
        }
    ]


def chat_messages(req: ChatRequest, plan: ToolPlan | None) -> list[dict[str, str]]:
    """The chat as plain role/content turns for the template: tool turns spelled out."""
    messages: list[dict[str, str]] = []
    if plan is not None:
        messages.append({"role": "system", "content": plan.prompt()})
    for m in req.messages:
        text = m.text()
        extra = m.model_extra or {}
        if m.role == "assistant" and extra.get("tool_calls"):
            calls = [c.get("function", {}) for c in extra["tool_calls"] if isinstance(c, dict)]
            text = (text + "\n" if text else "") + json.dumps(calls, ensure_ascii=False)
        if m.role in ("tool", "function"):
            messages.append({"role": "user", "content": f"Function result: {text}"})
        else:
            messages.append({"role": m.role, "content": text})
    # One system turn first: the client's system message follows the tool list.
    if plan is not None and len(messages) > 1 and messages[1]["role"] in ("system", "developer"):
        first = messages.pop(1)
        messages[0] = {"role": "system", "content": first["content"] + "\n\n" + plan.prompt()}
    return messages
