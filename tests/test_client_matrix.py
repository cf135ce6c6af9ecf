"""The client libraries apps really use, run as their users run them, against a real gateway
process serving the real local model with no cloud: the Vercel AI SDK and the official
TypeScript SDK through node (tests/clients/js, installed by `make test`), instructor,
pydantic-ai and the OpenAI Agents SDK in Python.

Each client gets a multi-turn conversation, a nested tool, a bounded-integer schema and a
stream. The model is 135M parameters, so what is asserted is what the gateway guarantees, not
the quality of an answer: the call completes, a structured answer parses and validates against
the schema the client sent (the grammar enforces it), a second turn is accepted and answered,
a stream delivers text, an agent run finishes. Greedy decoding throughout, so a pass is a pass
on every run; token budgets leave room for the whole answer, since these clients raise on a
structured answer cut short and that would be a failure here, not noise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.conftest import ROOT, GatewayProcess, local_only_gateway

pytestmark = pytest.mark.clients

JS = ROOT / "tests" / "clients" / "js"
# A generous bound for one node case (a few model calls) on a contended CI box.
NODE_TIMEOUT_S = 600
CLIENT_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def gw() -> Iterator[GatewayProcess]:
    yield from local_only_gateway()


# -- node clients ---------------------------------------------------------------------------


def run_node(gw: GatewayProcess, script: str, case: str) -> dict[str, Any]:
    """One case of a node script: its JSON line, with every request body the client sent."""
    node = shutil.which("node")
    if node is None or not (JS / "node_modules").is_dir():
        pytest.fail("node or tests/clients/js/node_modules is missing: run `make test`")
    proc = subprocess.run(
        [node, script, case],
        cwd=JS,
        env={**os.environ, "GATEWAY_BASE_URL": gw.base_url},
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"node {script} {case} exited {proc.returncode}:\n{proc.stderr}"
    lines = proc.stdout.strip().splitlines()
    assert lines, f"node {script} {case} printed nothing:\n{proc.stderr}"
    out: dict[str, Any] = json.loads(lines[-1])
    assert out["ok"], f"{script} {case}: {json.dumps(out['error'])}"
    return out


def sent_schema(body: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema a client derived from its zod schema, as it went over the wire."""
    if "text" in body:  # /v1/responses
        return body["text"]["format"]["schema"]  # type: ignore[no-any-return]
    return body["response_format"]["json_schema"]["schema"]  # type: ignore[no-any-return]


def tool_schema(tool: dict[str, Any]) -> dict[str, Any]:
    return tool.get("parameters") or tool["function"]["parameters"]  # type: ignore[no-any-return]


def assert_zod_int_bounds(schema: dict[str, Any]) -> None:
    """The case the clients really produce: zod's `.int()` alone emits +-(2**53 - 1)."""
    floor = schema["properties"]["address"]["properties"]["floor"]
    assert floor["type"] == "integer"
    assert (floor["minimum"], floor["maximum"]) == (-(2**53 - 1), 2**53 - 1)
    age = schema["properties"]["age"]
    assert (age["minimum"], age["maximum"]) == (0, 150)


@pytest.mark.parametrize("store", [True, False], ids=["store", "nostore"])
@pytest.mark.parametrize("call", ["generate", "stream"])
def test_ai_sdk_two_turns_on_responses(gw: GatewayProcess, call: str, store: bool) -> None:
    """`generateText` / `streamText` on `@ai-sdk/openai`: turn two carries turn one back, as
    an `item_reference` to the stored response's message when storing, in full when not."""
    out = run_node(gw, "aisdk.mjs", f"responses-{call}-{'store' if store else 'nostore'}")
    turns = out["result"]["turns"]
    assert len(turns) == 2
    for turn in turns:
        assert turn["text"].strip(), turn
        assert turn["finishReason"] in ("stop", "length"), turn
        assert turn["responseId"].startswith("resp_")
        if call == "stream":
            assert turn["deltas"] >= 1, turn
    bodies = [s["body"] for s in out["sent"]]
    assert [s["url"].rsplit("/", 1)[-1] for s in out["sent"]] == ["responses", "responses"]
    assert all(b["store"] is store for b in bodies)
    earlier = bodies[1]["input"][1]
    if store:
        assert earlier == {"type": "item_reference", "id": earlier["id"]}
        assert earlier["id"].startswith("msg_")
    else:
        assert earlier["role"] == "assistant"


def test_ai_sdk_two_turns_on_chat_streamed(gw: GatewayProcess) -> None:
    """`streamText` on `@ai-sdk/openai-compatible` (chat completions), two turns."""
    out = run_node(gw, "aisdk.mjs", "chat-stream-two-turn")
    turns = out["result"]["turns"]
    assert len(turns) == 2
    for turn in turns:
        assert turn["text"].strip() and turn["deltas"] >= 1, turn
    assert [len(s["body"]["messages"]) for s in out["sent"]] == [1, 3]


@pytest.mark.parametrize("api", ["responses", "chat"])
def test_ai_sdk_generate_object_int_and_nested(gw: GatewayProcess, api: str) -> None:
    """`generateObject` with a zod schema using `.int()` and a nested object; the SDK itself
    parses and validates the answer with zod, and it is checked here against what was sent."""
    out = run_node(gw, "aisdk.mjs", f"{api}-object")
    schema = sent_schema(out["sent"][0]["body"])
    assert_zod_int_bounds(schema)
    result = out["result"]
    assert result["finishReason"] == "stop"
    jsonschema.validate(result["object"], schema)


@pytest.mark.parametrize("api", ["responses-tool-store", "chat-tool"])
def test_ai_sdk_nested_tool_then_answer(gw: GatewayProcess, api: str) -> None:
    """A tool whose zod input is nested and bounded: called, executed, then answered."""
    out = run_node(gw, "aisdk.mjs", api)
    steps = out["result"]["steps"]
    assert len(steps) == 2, steps
    first, second = steps
    assert first["finishReason"] == "tool-calls" and not first["errors"], first
    assert [c["name"] for c in first["toolCalls"]] == ["record_person"]
    assert first["toolResults"] == [{"saved": True}]
    schema = tool_schema(out["sent"][0]["body"]["tools"][0])
    assert_zod_int_bounds(schema)
    jsonschema.validate(first["toolCalls"][0]["input"], schema)
    assert second["text"].strip() and not second["toolCalls"], second


def test_ts_sdk_parse_zod_response_format(gw: GatewayProcess) -> None:
    """`chat.completions.parse` with `zodResponseFormat` on a nested schema."""
    out = run_node(gw, "openai_sdk.mjs", "parse-response-format")
    schema = sent_schema(out["sent"][0]["body"])
    assert_zod_int_bounds(schema)
    result = out["result"]
    assert result["finishReason"] == "stop"
    assert result["parsed"] == json.loads(result["content"])
    jsonschema.validate(result["parsed"], schema)


def test_ts_sdk_parse_zod_function_then_answer(gw: GatewayProcess) -> None:
    """`chat.completions.parse` with a strict `zodFunction` on a nested schema; its result sent
    back, the second turn is answered in text."""
    out = run_node(gw, "openai_sdk.mjs", "parse-function")
    tool = out["sent"][0]["body"]["tools"][0]
    assert tool["function"]["strict"] is True
    schema = tool_schema(tool)
    assert_zod_int_bounds(schema)
    result = out["result"]
    assert result["finishReason"] == "tool_calls" and result["name"] == "record_person"
    jsonschema.validate(result["parsedArguments"], schema)
    assert result["answer"] and result["answerFinishReason"] in ("stop", "length"), result


def test_ts_sdk_stream_parses_structured_answer(gw: GatewayProcess) -> None:
    """`chat.completions.stream` with `zodResponseFormat`: deltas, then the parsed answer."""
    out = run_node(gw, "openai_sdk.mjs", "stream-parsed")
    result = out["result"]
    assert result["deltas"] >= 1 and result["finishReason"] == "stop", result
    jsonschema.validate(result["parsed"], sent_schema(out["sent"][0]["body"]))


def test_ts_sdk_responses_two_turns_streamed(gw: GatewayProcess) -> None:
    """`responses.create` twice, the second by `previous_response_id` and streamed."""
    out = run_node(gw, "openai_sdk.mjs", "responses-two-turns")
    first, second = out["result"]["first"], out["result"]["second"]
    assert first["text"].strip() and first["status"] in ("completed", "incomplete")
    assert second["text"].strip() and second["deltas"] >= 1, second
    assert second["status"] in ("completed", "incomplete")


# -- Python clients -------------------------------------------------------------------------


class Address(BaseModel):
    city: str = Field(max_length=24)
    floor: int = Field(ge=-5, le=200)


class Person(BaseModel):
    """Nested, bounded: what every structured-output client turns into `$defs`/`$ref`."""

    name: str = Field(max_length=20)
    age: int = Field(ge=0, le=150)
    address: Address


PERSON_SCHEMA = Person.model_json_schema()
INVENT = "Invent a person and the address where they live."
# A second turn: an earlier question and answer before the request.
CONVERSATION: list[Any] = [
    {"role": "user", "content": "Invent a person."},
    {"role": "assistant", "content": "Where should they live?"},
    {"role": "user", "content": "In Paris, on the second floor."},
]


def check_person(got: Any) -> None:
    assert isinstance(got, Person)
    jsonschema.validate(got.model_dump(), PERSON_SCHEMA)


@pytest.fixture(scope="module")
def sync_client(gw: GatewayProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gw.base_url, api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S
    ) as c:
        yield c


@pytest.fixture
async def async_client(gw: GatewayProcess) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=gw.base_url, api_key="unused", max_retries=0, timeout=CLIENT_TIMEOUT_S
    ) as c:
        yield c


@pytest.mark.parametrize("mode", ["TOOLS", "JSON_SCHEMA"])
def test_instructor_nested_bounded_model_multi_turn(sync_client: openai.OpenAI, mode: str) -> None:
    """instructor's TOOLS (a tool call) and JSON_SCHEMA (response_format) modes, on a second
    turn; max_retries=0, so an answer the schema refuses fails instead of being asked again."""
    import instructor

    client = instructor.from_openai(sync_client, mode=instructor.Mode[mode])
    got = client.chat.completions.create(
        model="local",
        response_model=Person,
        messages=CONVERSATION,
        max_retries=0,
        temperature=0,
        max_tokens=160,
    )
    check_person(got)


@pytest.mark.parametrize("mode", ["TOOLS", "JSON_SCHEMA"])
def test_instructor_streams_partial_objects(sync_client: openai.OpenAI, mode: str) -> None:
    """`create_partial`: a stream of partial objects whose last one is the whole answer."""
    import instructor

    client = instructor.from_openai(sync_client, mode=instructor.Mode[mode])
    parts = list(
        client.chat.completions.create_partial(
            model="local",
            response_model=Person,
            messages=[{"role": "user", "content": INVENT}],
            max_retries=0,
            temperature=0,
            max_tokens=160,
        )
    )
    # JSON_SCHEMA streams the answer's text token by token; the local path sends a tool call's
    # arguments in one delta once the call is whole, so TOOLS mode may yield a single object.
    assert len(parts) > 1 if mode == "JSON_SCHEMA" else parts
    check_person(Person.model_validate(parts[-1].model_dump()))


def pydantic_ai_agent(client: openai.AsyncOpenAI, api: str, native: bool) -> Any:
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.settings import ModelSettings

    provider = OpenAIProvider(openai_client=client)
    model_cls = OpenAIResponsesModel if api == "responses" else OpenAIChatModel
    return Agent(
        model_cls("local", provider=provider),
        # Tool output (the default) is a call of the `final_result` tool; native output is
        # the JSON schema as response_format / text.format.
        output_type=NativeOutput(Person) if native else Person,
        retries=0,  # an answer the schema refuses is a failure, not a retry
        model_settings=ModelSettings(temperature=0, max_tokens=160),
    )


@pytest.mark.parametrize("output", ["tool", "native"])
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_pydantic_ai_nested_output_two_turns(
    async_client: openai.AsyncOpenAI, api: str, output: str
) -> None:
    """A nested output type on OpenAIChatModel and OpenAIResponsesModel, then a second run on
    the first one's message history."""
    agent = pydantic_ai_agent(async_client, api, native=output == "native")
    first = await agent.run(INVENT)
    check_person(first.output)
    second = await agent.run("Now invent their neighbour.", message_history=first.all_messages())
    check_person(second.output)
    assert len(second.all_messages()) > len(first.all_messages())


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_pydantic_ai_streams_nested_output(
    async_client: openai.AsyncOpenAI, api: str
) -> None:
    agent = pydantic_ai_agent(async_client, api, native=False)
    async with agent.run_stream(INVENT) as run:
        outputs = [o async for o in run.stream_output(debounce_by=None)]
    assert outputs
    check_person(outputs[-1])


def agents_sdk_agent(client: openai.AsyncOpenAI, api: str, recorded: list[Person]) -> Any:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)  # no trace export: nothing leaves the box

    @function_tool
    def record_person(person: Person) -> str:
        """Record a person and their address."""
        recorded.append(person)
        return "saved"

    model_cls = OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel
    return Agent(
        name="clerk",
        instructions="You record the people the user tells you about.",
        tools=[record_person],
        model=model_cls(model="local", openai_client=client),
        # The run ends with the tool's output. A text answer after it is not asked for: greedy,
        # the 135M model's answer to a tool result ran past 512 tokens on /v1/responses, and
        # the SDK (rightly) raises on a Responses answer that ends incomplete.
        tool_use_behavior="stop_on_first_tool",
        model_settings=ModelSettings(temperature=0, max_tokens=160, tool_choice="required"),
    )


def assert_ran_tool(result: Any, recorded: list[Person]) -> None:
    from agents import ToolCallItem, ToolCallOutputItem

    kinds = [type(item) for item in result.new_items]
    assert ToolCallItem in kinds and ToolCallOutputItem in kinds, kinds
    assert result.final_output == "saved"
    assert recorded
    for person in recorded:
        check_person(person)


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_agents_sdk_function_tool_with_model_two_runs(
    async_client: openai.AsyncOpenAI, api: str
) -> None:
    """An Agents SDK agent whose function_tool takes a pydantic model, run to completion, then
    run again on the first run's items plus a new user message."""
    from agents import Runner

    recorded: list[Person] = []
    agent = agents_sdk_agent(async_client, api, recorded)
    first = await Runner.run(agent, "Record Ada, aged 36, on floor 2 in Paris.", max_turns=4)
    assert_ran_tool(first, recorded)
    follow_up = [*first.to_input_list(), {"role": "user", "content": "Now record Bob, 40, Rome."}]
    second = await Runner.run(agent, follow_up, max_turns=4)
    assert_ran_tool(second, recorded)
    assert len(recorded) >= 2


@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_agents_sdk_streamed_run(async_client: openai.AsyncOpenAI, api: str) -> None:
    from agents import Runner

    recorded: list[Person] = []
    agent = agents_sdk_agent(async_client, api, recorded)
    run = Runner.run_streamed(agent, "Record Ada, aged 36, on floor 2 in Paris.", max_turns=4)
    raw = 0
    async for event in run.stream_events():
        if event.type == "raw_response_event":
            raw += 1
    assert raw >= 1
    assert_ran_tool(run, recorded)
