"""Tool calls on the local model: the call a request must make, as a grammar, and its answer.

A tool call is generated as `{"name": ..., "arguments": {...}}`: a small Lark grammar with one
alternative per offered tool, the tool's `parameters` inlined as a JSON schema of its own
(structured.py compiles it), so its `#/$defs/...` references resolve in its own document. It
is returned in OpenAI's `tool_calls` shape.

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

from ..errors import InvalidRequest
from ..schemas import ChatRequest
from .structured import ANY_OBJECT, Grammar, compile_schema


@dataclass(frozen=True)
class ToolPlan:
    """The tools one answer may call, and the grammar that makes the call well-formed."""

    tools: tuple[dict[str, Any], ...]  # the `function` objects on offer
    grammar: Grammar

    def prompt(self) -> str:
        """What the model is told about the tools (a system turn; the client's own words)."""
        lines = ["You can call these functions. Answer with one JSON object:"]
        lines.append('{"name": <function name>, "arguments": <arguments object>}')
        for fn in self.tools:
            params = json.dumps(fn.get("parameters") or ANY_OBJECT, separators=(",", ":"))
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
    functions = list(enumerate(_functions(req)))  # with the index that names them in errors
    if not functions:
        return None
    choice = req.tool_choice if req.tool_choice is not None else "auto"
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        # A mode over a subset of `tools` (fields.check saw its shape): the subset's grammar.
        allowed = choice["allowed_tools"]
        names = [t["function"]["name"] for t in allowed["tools"]]
        unknown = [n for n in names if n not in {fn["name"] for _, fn in functions}]
        if unknown:
            raise InvalidRequest(
                f"'tool_choice.allowed_tools' names the function '{unknown[0]}', which is not "
                "in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
        functions = [(i, fn) for i, fn in functions if fn["name"] in names]
        choice = allowed["mode"]
    if choice == "none":
        return None
    if choice == "auto" and req.messages[-1].role == "tool":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        functions = [(i, fn) for i, fn in functions if fn["name"] == name]
        if not functions:
            raise InvalidRequest(
                f"'tool_choice' names the function '{name}', which is not in 'tools'.",
                param="tool_choice",
                code="invalid_value",
            )
    return ToolPlan(tuple(fn for _, fn in functions), _call_grammar(functions))


def _call_grammar(functions: list[tuple[int, dict[str, Any]]]) -> Grammar:
    """`{"name": <name>, "arguments": <instance of its parameters>}` for one of `functions`
    (each with its index in `tools`, which names its errors)."""
    rules = ["start: " + " | ".join(f"call_{i}" for i, _ in functions)]
    for i, fn in functions:
        param = f"tools[{i}].function.parameters"
        schema = fn.get("parameters")
        if schema is None:
            schema = ANY_OBJECT
        if not isinstance(schema, dict):
            raise InvalidRequest(
                f"'{param}' must be a JSON schema object.", param=param, code="invalid_value"
            )
        doc = compile_schema(schema, param)
        head = json.dumps({"name": fn["name"]}, ensure_ascii=False)[:-1] + ', "arguments": '
        # A Lark string literal is written as a JSON string is.
        rules.append(f"call_{i}: {json.dumps(head, ensure_ascii=False)} args_{i} " + '"}"')
        rules.append(f"args_{i}: %json {json.dumps(doc, ensure_ascii=False)}")
    return _lark_grammar("\n".join(rules))


@lru_cache(maxsize=128)
def _lark_grammar(lark: str) -> Grammar:
    from llguidance import LLMatcher

    grammar = LLMatcher.grammar_from_lark(lark)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        # Every schema compiled on its own above: what is left is a name Lark cannot spell.
        raise InvalidRequest(
            f"The tools cannot be served by the local model: {messages[0] if messages else ''}",
            param="tools",
            code="invalid_value",
        )
    return Grammar(grammar, "tools")


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
