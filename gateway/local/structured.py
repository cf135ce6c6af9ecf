"""Structured output on the local model, valid by construction: JSON answers as grammars.

`response_format` json_object / json_schema and `tools` become an llguidance grammar (its JSON
schema compiler; constraint.py applies it token by token), so the answer parses, and validates
against the schema, unless it runs out of `max_tokens` first (finish_reason "length", as
OpenAI's own answers then do). What the compiler enforces covers OpenAI's strict mode: `$ref`
into `$defs` / `definitions` / any `#/...` pointer (recursion included), `anyOf`, `enum`,
`const`, type lists (nullable), numeric bounds (`minimum`, `maximum`, `exclusive*`,
`multipleOf`), string `pattern`, `format` and lengths, array lengths. A keyword it cannot
enforce (`uniqueItems`, `not`, `if`, look-arounds in a `pattern`, ...) is a 400 naming it by
the client's own path, never an answer that only looks valid.

Tool calls, whose arguments are grammars of this kind too, are tool_calls.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..errors import InvalidRequest
from ..schemas import ChatRequest

ANY_OBJECT: dict[str, Any] = {"type": "object"}

# The compiler's options, set on every schema (a client's own "x-guidance" is replaced: its
# `lenient` would drop the keywords the grammar cannot enforce instead of refusing them).
# Whitespace between tokens is bounded, as llama.cpp's own converter bounds it: unbounded, a
# small model can fill max_tokens with newlines and never close the object.
_COMPILER_OPTIONS: dict[str, Any] = {
    "whitespace_pattern": r"(?: |\n[ \t]{0,20})?",
    "lenient": False,
    "coerce_one_of": False,
}

# RFC 3339 full-date with the real length of February: the compiler's own `date` takes
# 02-29 in any year, which `datetime.date.fromisoformat` (jsonschema's check) refuses. Year
# 0000 is left out for the same reason (Python has no year 0).
_YEAR = r"(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    rf"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    rf"|{_LEAP_YEAR}-02-29)"
)
_TIME = (
    r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]+)?"
    r"(?:[zZ]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_STRICT_FORMATS = {"date": f"^{_DATE}$", "date-time": f"^{_DATE}[tT]{_TIME}$"}

# Where a schema holds subschemas (2020-12 and draft-07 names); everything else is a value
# (`enum`, `const`, `default`, `examples`, ...), never walked, never rewritten.
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_ONE = (
    "items additionalItems additionalProperties not if then else contains propertyNames "
    "unevaluatedItems unevaluatedProperties".split()
)


def _children(node: dict[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    for key in _SCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                yield f"{path}.{key}.{name}", sub
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for i, sub in enumerate(node[key]):
                yield f"{path}.{key}[{i}]", sub
    for key in _SCHEMA_ONE:
        sub = node.get(key)
        if isinstance(sub, list):  # draft-07 tuple `items`
            for i, item in enumerate(sub):
                yield f"{path}.{key}[{i}]", item
        elif sub is not None:
            yield f"{path}.{key}", sub


def _subschemas(schema: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema with its path, in document order. `$ref`s are not followed: the walk
    is over the document's tree, so a recursive schema is walked once."""
    stack: list[tuple[str, Any]] = [(path, schema)]
    while stack:
        where, node = stack.pop()
        if isinstance(node, dict):
            yield where, node
            stack.extend(reversed(list(_children(node, where))))


_MERGES = ("allOf", "anyOf", "oneOf", "$ref")
_OPEN_KEYS = ("additionalProperties", "patternProperties", "unevaluatedProperties")


def _prepared(node: Any, *, merged: bool = False) -> Any:
    """The schema as it is generated from: still the client's, narrowed where an answer may
    be narrower and still valid.

    - `date` / `date-time` formats as the exact patterns above;
    - an object schema that lists `properties` and says nothing about other keys gets none
      (as llama.cpp's converter did): a small model otherwise invents keys until max_tokens.
      Not where schemas are merged (`allOf` members, siblings of `$ref` or `*Of`): there,
      closing one side could exclude the other's properties.
    """
    if not isinstance(node, dict):
        return node
    out = dict(node)
    merging = any(k in out for k in _MERGES)
    # Members of an allOf, or of an anyOf / oneOf beside the node's own properties, are merged.
    own = "properties" in out or "required" in out
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {k: _prepared(v) for k, v in out[key].items()}
    for key in (*_SCHEMA_LISTS, *_SCHEMA_ONE):
        sub = out.get(key)
        if isinstance(sub, list):
            members = key == "allOf" or (own and key in ("anyOf", "oneOf"))
            out[key] = [_prepared(v, merged=members) for v in sub]
        elif isinstance(sub, dict):
            out[key] = _prepared(sub)
    pattern = _STRICT_FORMATS.get(out["format"]) if isinstance(out.get("format"), str) else None
    if pattern is not None:
        # An extra pattern beside the client's own (a schema may hold both): the intersection.
        del out["format"]
        all_of = out.get("allOf")
        out["allOf"] = [*(all_of if isinstance(all_of, list) else []), {"pattern": pattern}]
    closable = isinstance(out.get("properties"), dict) and not merged and not merging
    if closable and not any(k in out for k in _OPEN_KEYS):
        out["additionalProperties"] = False
    return out


def _compiler_input(schema: dict[str, Any]) -> dict[str, Any]:
    return {**_prepared(schema), "x-guidance": _COMPILER_OPTIONS}


@lru_cache(maxsize=256)
def _compiled(schema_json: str) -> tuple[str, str | None]:
    """(llguidance grammar, the compiler's complaint or None) for one JSON schema."""
    from llguidance import LLMatcher

    grammar = LLMatcher.grammar_from_json_schema(schema_json)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    return grammar, (messages[0] if is_error and messages else None)


# The compiler's words for "a valid schema, but not one a grammar can hold an answer to".
_UNSUPPORTED = re.compile(
    r"Unimplemented keys|Unknown format|not supported|unsupported|is not present in a registry"
)
_KEYWORDS = (
    "minimum maximum exclusiveMinimum exclusiveMaximum multipleOf "
    "minLength maxLength minItems maxItems minProperties maxProperties required "
    "additionalProperties oneOf allOf anyOf enum const type items properties".split()
)


def _locate(schema: dict[str, Any], param: str, message: str) -> str:
    """The path of the keyword the compiler complains about (its messages name no path), or
    the schema's own path when none can be told."""
    unimplemented = re.search(r"Unimplemented keys: (\[.*?\])", message)
    keys = set(json.loads(unimplemented.group(1))) if unimplemented else None
    for where, node in _subschemas(schema, param):
        for key, value in node.items():
            if keys is not None:
                hit = key in keys
            elif key == "$ref" and isinstance(value, str):
                base, _, fragment = value.partition("#")
                hit = bool(base or fragment) and (base or fragment) in message
            elif key == "format":
                hit = message.strip() == f"Unknown format: {value}"
            elif key == "pattern":
                hit = message.startswith("regex parse error") and str(value) in message
            else:
                hit = key in _KEYWORDS and bool(
                    re.search(rf"(?<!\w){re.escape(key)}(?!\w)", message)
                )
            if hit:
                return f"{where}.{key}"
    return param


# What a grammar may cost, priced before llguidance builds it. An integer `multipleOf` m
# becomes a lexer automaton of m states, built up front: measured on 2 cores, 10,000 takes
# 0.02 s, 50,000 0.14 s, 200,000 1.3 s and 999,983 13-18 s and 350 MB (the cost grows faster
# than m, and no llguidance limit stops it). The bound is on the sum over the schema, so a
# hundred large ones cost no more than one.
MAX_MULTIPLE_OF = 10_000


def _priced(schema: dict[str, Any], param: str) -> None:
    """A 400 naming the keyword that would make the grammar cost more than its budget."""
    total = 0
    for where, node in _subschemas(schema, param):
        m = node.get("multipleOf")
        if isinstance(m, (int, float)) and not isinstance(m, bool) and m >= 1 and m == int(m):
            total += int(m)
            if total > MAX_MULTIPLE_OF:
                raise InvalidRequest(
                    f"The local model's grammar engine cannot enforce '{where}.multipleOf' "
                    f"({int(m)}): integer divisors in one schema may add up to "
                    f"{MAX_MULTIPLE_OF:,}; use a smaller one or a cloud model.",
                    param=f"{where}.multipleOf",
                    code="unsupported_schema",
                )


def compile_schema(schema: dict[str, Any], param: str) -> dict[str, Any]:
    """The schema as the compiler takes it; a schema it cannot enforce is the client's 400
    naming the keyword by the client's own path (`param` is where the schema sits)."""
    _priced(schema, param)
    try:
        doc = _compiler_input(schema)
    except RecursionError:
        raise InvalidRequest(
            f"The JSON schema in '{param}' is nested too deeply for the local model.",
            param=param,
            code="invalid_schema",
        ) from None
    _, problem = _compiled(json.dumps(doc))  # key order kept: it is the order of generation
    if problem is not None:
        where = _locate(schema, param, problem)
        if _UNSUPPORTED.search(problem):
            raise InvalidRequest(
                f"The local model cannot guarantee '{where}' of the JSON schema ({problem}); "
                "remove it or send the request to a cloud model.",
                param=where,
                code="unsupported_schema",
            )
        raise InvalidRequest(
            f"The JSON schema in '{param}' cannot be served by the local model: {problem} "
            f"(at '{where}').",
            param=where,
            code="invalid_schema",
        )
    return doc


@dataclass(frozen=True)
class Grammar:
    """An llguidance grammar for one answer, and the request field it came from."""

    text: str
    param: str


# Any JSON object, with numbers bounded as llama.cpp's converter bounds them (16 integer and 16
# fraction digits): the compiler's own `{"type": "object"}` lets a number run on, and a small
# model sampling digits then fills max_tokens mid-number. Whitespace as _COMPILER_OPTIONS.
_JSON_OBJECT_LARK = r"""
start: obj
obj: "{" WS? (pair (WS? "," WS? pair)*)? WS? "}"
pair: STR WS? ":" WS? value
arr: "[" WS? (value (WS? "," WS? value)*)? WS? "]"
value: obj | arr | STR | NUM | "true" | "false" | "null"
STR: /"(?:[^"\\\x00-\x1f\x7f]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/
NUM: /-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,3})?/
WS: /(?: |\n[ \t]{0,20})/
"""


@lru_cache(maxsize=1)
def _json_object_grammar() -> str:
    from llguidance import LLMatcher

    return str(LLMatcher.grammar_from_lark(_JSON_OBJECT_LARK))


def schema_grammar(schema: dict[str, Any], param: str) -> Grammar:
    """The grammar for answers that are instances of `schema`."""
    return Grammar(_compiled(json.dumps(compile_schema(schema, param)))[0], param)


def response_grammar(req: ChatRequest) -> Grammar | None:
    """The grammar `response_format` asks for, or None for plain text."""
    rf = req.response_format or {}
    kind = rf.get("type", "text")
    if kind == "json_object":
        return Grammar(_json_object_grammar(), "response_format")
    if kind == "json_schema":
        spec = rf.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if schema is None:
            schema = ANY_OBJECT
        if not isinstance(schema, dict):
            raise InvalidRequest(
                "'response_format.json_schema.schema' must be an object.",
                param="response_format.json_schema.schema",
                code="invalid_value",
            )
        return schema_grammar(schema, "response_format.json_schema.schema")
    return None
