"""/v1/responses with the official OpenAI SDK against a real gateway: local model, fake cloud."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import jsonschema
import openai
import pydantic
import pytest

from gateway.responses.in_process import ResponseStore, Stored
from gateway.settings import ResponsesSettings
from tests.conftest import RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

HELLO = "Say hello in French."
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
    "required": ["city", "country"],
    "additionalProperties": False,
}
WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": WEATHER_PARAMS,
}
ASK_WEATHER = "What is the weather in Oslo right now?"


class City(pydantic.BaseModel):
    city: str
    country: str


@pytest.fixture
async def hybrid(gateway_factory: Any, fake_cloud: FakeCloud) -> RunningGateway:
    return await gateway_factory(**cloud_settings(fake_cloud))  # type: ignore[no-any-return]


def _calls(response: Any) -> list[Any]:
    return [item for item in response.output if item.type == "function_call"]


# -- the local model ---------------------------------------------------------------------------


async def test_plain_response_on_the_local_model(gateway: RunningGateway) -> None:
    c = gateway.client()
    raw = await c.responses.with_raw_response.create(
        model="local", input=HELLO, max_output_tokens=24, metadata={"ticket": "42"}
    )
    assert raw.headers["x-gateway-route"] == "local"
    r = raw.parse()
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status in ("completed", "incomplete")
    assert r.output_text
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.output[0].content[0].type == "output_text"
    assert r.metadata == {"ticket": "42"}
    assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    if r.status == "incomplete":
        assert r.incomplete_details is not None
        assert r.incomplete_details.reason == "max_output_tokens"


async def test_streamed_with_the_sdk_stream_helper(gateway: RunningGateway) -> None:
    c = gateway.client()
    events: list[Any] = []
    async with c.responses.stream(
        model="local", input=HELLO, max_output_tokens=200, temperature=0
    ) as stream:
        async for event in stream:
            events.append(event)
        final = await stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for expected in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert expected in kinds, expected
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and final.output_text == deltas
    assert final.id == events[0].response.id
    assert final.usage is not None and final.usage.output_tokens > 0


async def test_create_stream_true_yields_the_same_events(gateway: RunningGateway) -> None:
    c = gateway.client()
    stream = await c.responses.create(model="local", input=HELLO, max_output_tokens=8, stream=True)
    events = [e async for e in stream]
    assert events[0].type == "response.created"
    assert events[-1].type in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-1].response.output_text == text


async def test_instructions_reach_the_model(gateway: RunningGateway) -> None:
    c = gateway.client()
    bare = await c.responses.create(model="local", input=HELLO, max_output_tokens=4, store=False)
    told = await c.responses.create(
        model="local",
        instructions="You are a terse assistant for a warehouse. Answer in one word.",
        input=HELLO,
        max_output_tokens=4,
    )
    assert told.instructions.startswith("You are a terse")  # type: ignore[union-attr]
    assert bare.usage is not None and told.usage is not None
    assert told.usage.input_tokens > bare.usage.input_tokens + 10


async def test_json_schema_text_format_validates(gateway: RunningGateway) -> None:
    c = gateway.client()
    r = await c.responses.create(
        model="local",
        input="Name a city and its country as JSON.",
        text={"format": {"type": "json_schema", "name": "city", "schema": CITY, "strict": True}},
        max_output_tokens=200,
        temperature=0,
    )
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), CITY)
    assert r.text is not None and r.text.format is not None
    assert r.text.format.type == "json_schema"

    # The SDK's parse helper: a pydantic model as the format, the answer as that model.
    parsed = await c.responses.parse(
        model="local",
        input="Name a city and its country.",
        text_format=City,
        max_output_tokens=200,
        temperature=0,
    )
    assert isinstance(parsed.output_parsed, City) and parsed.output_parsed.city


async def test_function_tool_returns_a_well_formed_call(gateway: RunningGateway) -> None:
    c = gateway.client()
    # Greedy: a sampled call of the 135M model now and then runs past 48 tokens and is cut
    # (an incomplete call is no call); the call's shape is what this test is about.
    r = await c.responses.create(
        model="local", input=ASK_WEATHER, tools=[WEATHER], max_output_tokens=48, temperature=0
    )
    calls = _calls(r)
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.call_id and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMS)

    # The tool's result goes back as function_call_output; the answer is then plain text.
    after = await c.responses.create(
        model="local",
        previous_response_id=r.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "12 C, sunny"}],
        tools=[WEATHER],
        max_output_tokens=16,
    )
    assert not _calls(after) and after.output_text

    # The same call streamed: the SDK helper accumulates its arguments.
    async with c.responses.stream(
        model="local", input=ASK_WEATHER, tools=[WEATHER], tool_choice="required",
        max_output_tokens=48,
    ) as stream:  # fmt: skip
        kinds = [e.type async for e in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    jsonschema.validate(json.loads(_calls(final)[0].arguments), WEATHER_PARAMS)


async def test_history_as_input_items(gateway: RunningGateway) -> None:
    # A client that keeps its own history sends prior output items back as input.
    c = gateway.client()
    first = await c.responses.create(
        model="local", input=ASK_WEATHER, tools=[WEATHER], max_output_tokens=48, store=False
    )
    call = _calls(first)[0]
    # The Agents SDK's way: the previous output items, as the SDK dumps them, back as input.
    items: list[Any] = [
        {"role": "user", "content": [{"type": "input_text", "text": ASK_WEATHER}]},
        *[item.model_dump(exclude_none=True) for item in first.output],
        {"type": "function_call_output", "call_id": call.call_id, "output": "12 C, sunny"},
    ]
    r = await c.responses.create(model="local", input=items, tools=[WEATHER], max_output_tokens=16)
    assert r.output_text and not _calls(r)


async def test_previous_response_id_continues_and_is_per_tenant(gateway: RunningGateway) -> None:
    c = gateway.client()
    first = await c.responses.create(
        model="local", input="My name is Ada and I repair pumps.", max_output_tokens=16
    )
    alone = await c.responses.create(
        model="local", input="What is my name?", max_output_tokens=4, store=False
    )
    follow = await c.responses.create(
        model="local",
        previous_response_id=first.id,
        input="What is my name?",
        max_output_tokens=4,
    )
    assert follow.previous_response_id == first.id
    assert alone.usage is not None and first.usage is not None and follow.usage is not None
    # The follow-up's prompt holds the first turn and its answer.
    assert follow.usage.input_tokens >= alone.usage.input_tokens + first.usage.output_tokens

    got = await c.responses.retrieve(first.id)
    assert got.id == first.id and got.output_text == first.output_text

    other = gateway.client(key="sk-someone-else")
    with pytest.raises(openai.NotFoundError) as nf:
        await other.responses.create(
            model="local", previous_response_id=first.id, input="hi", max_output_tokens=4
        )
    assert nf.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(first.id)

    with pytest.raises(openai.NotFoundError):  # store=False kept nothing
        await c.responses.retrieve(alone.id)
    await c.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await c.responses.retrieve(first.id)


async def test_what_cannot_be_honoured_is_a_400_naming_it(gateway: RunningGateway) -> None:
    c = gateway.client()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type"),
        ({"background": True}, "background"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"reasoning": {"effort": "high"}}, "reasoning.effort"),
        ({"truncation": "auto"}, "truncation"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"text": {"verbosity": "low"}}, "text.verbosity"),
        ({"some_future_field": 1}, "some_future_field"),
        (
            {
                "text": {
                    "format": {
                        "type": "json_schema",
                        "name": "n",
                        "schema": {"type": "array", "uniqueItems": True},
                    }
                }
            },
            "text.format.schema.uniqueItems",
        ),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "What is this?"},
                            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                        ],
                    }
                ]
            },
            "input[0].content[1].image_url",
        ),
        ({"input": [{"type": "computer_call_output", "call_id": "c"}]}, "input[0].type"),
        ({"input": []}, "input"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as br:
            await c.responses.create(
                model="local", input=HELLO, max_output_tokens=4, extra_body=extra
            )
        assert br.value.status_code == 400
        assert br.value.body["param"] == param, (extra, br.value.body)  # type: ignore[index]
        assert br.value.body["message"]  # type: ignore[index]


# -- a cloud route -----------------------------------------------------------------------------


async def test_cloud_route_reaches_the_fake_cloud(
    hybrid: RunningGateway, fake_cloud: FakeCloud
) -> None:
    c = hybrid.client()
    raw = await c.responses.with_raw_response.create(
        model="gpt-fake", instructions="Be brief.", input=HELLO, max_output_tokens=32
    )
    assert raw.headers["x-gateway-route"] == "cloud"
    r = raw.parse()
    assert r.output_text == f"cloud answer to: {HELLO}"
    assert r.usage is not None and r.usage.input_tokens == 11
    sent = fake_cloud.requests[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": HELLO},
    ]
    assert sent["max_tokens"] == 32
    assert "input" not in sent and "instructions" not in sent

    async with c.responses.stream(model="gpt-fake", input=HELLO) as stream:
        kinds = [e.type async for e in stream]
        final = await stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == f"cloud answer to: {HELLO}"
    assert fake_cloud.requests[-1]["stream"] is True
    # A streamed response is stored once complete, and continues like any other.
    await c.responses.create(model="gpt-fake", previous_response_id=final.id, input="More.")
    assert fake_cloud.requests[-1]["messages"][-2:] == [
        {"role": "assistant", "content": f"cloud answer to: {HELLO}"},
        {"role": "user", "content": "More."},
    ]

    await c.responses.create(
        model="gpt-fake",
        input="Name a city.",
        text={"format": {"type": "json_schema", "name": "city", "schema": CITY}},
    )
    assert fake_cloud.requests[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "city", "schema": CITY},
    }

    # Continued on the cloud: the stored turn travels as chat history.
    follow = await c.responses.create(
        model="gpt-fake", previous_response_id=r.id, input="And in Spanish?"
    )
    assert follow.output_text == "cloud answer to: And in Spanish?"
    assert fake_cloud.requests[-1]["messages"] == [
        {"role": "user", "content": HELLO},
        {"role": "assistant", "content": f"cloud answer to: {HELLO}"},
        {"role": "user", "content": "And in Spanish?"},
    ]

    # An image the local model could not read goes to the cloud as an image part.
    await c.responses.create(
        model="gpt-fake",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "https://example.com/a.png"},
                ],
            }
        ],
    )
    assert fake_cloud.requests[-1]["messages"][0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://example.com/a.png"},
    }


async def test_cloud_function_calls_plain_and_streamed(
    hybrid: RunningGateway, fake_cloud: FakeCloud
) -> None:
    c = hybrid.client()
    r = await c.responses.create(
        model="gpt-fake", input=ASK_WEATHER, tools=[WEATHER], tool_choice="required"
    )
    sent = fake_cloud.requests[-1]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city.",
                "parameters": WEATHER_PARAMS,
            },
        }
    ]
    assert sent["tool_choice"] == "required"
    (call,) = _calls(r)
    assert call.name == "get_weather" and call.call_id == "call_fake"
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMS)

    async with c.responses.stream(
        model="gpt-fake",
        input=ASK_WEATHER,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    ) as stream:
        events = [e async for e in stream]
        final = await stream.get_final_response()
    assert fake_cloud.requests[-1]["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    assert len(deltas) == 2  # the upstream's pieces, relayed as they came
    (call,) = _calls(final)
    assert call.arguments == "".join(deltas) == json.dumps({"city": "Oslo"})


async def test_cloud_answers_are_cached(
    hybrid: RunningGateway, fake_cloud: FakeCloud, http: aiohttp.ClientSession
) -> None:
    c = hybrid.client()
    kw: dict[str, Any] = {"model": "gpt-fake", "input": "Cache me.", "temperature": 0}
    first = await c.responses.with_raw_response.create(**kw)
    second = await c.responses.with_raw_response.create(**kw)
    assert first.headers["x-gateway-cache"] == "miss"
    assert second.headers["x-gateway-cache"] == "hit"
    assert second.headers["x-gateway-route"] == "cache"
    assert second.parse().output_text == first.parse().output_text
    assert second.parse().id != first.parse().id  # each response is its own
    assert sum(1 for b in fake_cloud.requests if b["messages"][-1]["content"] == "Cache me.") == 1

    # Streamed, the stored answer is replayed as Responses events (same key: same tenant).
    async with http.post(
        f"{hybrid.base_url}/responses",
        json={**kw, "stream": True},
        headers={"Authorization": "Bearer sk-client"},
    ) as r:
        assert r.headers["x-gateway-cache"] == "hit"
        body = await r.text()
    kinds = [line[7:] for line in body.splitlines() if line.startswith("event: ")]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    done = json.loads(body.strip().splitlines()[-1][6:])
    assert done["response"]["output"][0]["content"][0]["text"] == first.parse().output_text


async def test_cloud_dropping_mid_stream_ends_with_response_failed(
    hybrid: RunningGateway, fake_cloud: FakeCloud
) -> None:
    c = hybrid.client()
    await fake_cloud.set_mode("drop")
    stream = await c.responses.create(
        model="gpt-fake", input="one two three four five six", stream=True
    )
    events = [e async for e in stream]
    assert events[0].type == "response.created"
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.status == "failed"
    # The error event names the gateway's cause; the response's error keeps to the spec's
    # codes (ResponseErrorCode): a failure on the server's side.
    assert events[-2].code == "upstream_stream_interrupted"
    assert events[-1].response.error.code == "server_error"
    assert "stream" in events[-1].response.error.message


async def test_cloud_down_degrades_to_the_local_model(
    hybrid: RunningGateway, fake_cloud: FakeCloud
) -> None:
    c = hybrid.client()
    await fake_cloud.set_mode("fail500")
    raw = await c.responses.with_raw_response.create(
        model="auto", input=HELLO, tools=[WEATHER], max_output_tokens=48
    )
    assert raw.headers["x-gateway-route"] == "local"
    assert raw.headers["x-gateway-degraded"] == "true"
    assert "needs=tools" in raw.headers["x-gateway-reason"]
    (call,) = _calls(raw.parse())
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMS)


# -- security rules and bounds, as on chat ----------------------------------------------------


async def test_upstream_key_never_comes_back(
    hybrid: RunningGateway, fake_cloud: FakeCloud, http: aiohttp.ClientSession
) -> None:
    key = "sk-fake-cloud-secret-123"  # tests/conftest.py's fake_cloud key
    url = f"{hybrid.base_url}/responses"
    await fake_cloud.set_mode("echo400")
    async with http.post(url, json={"model": "gpt-fake", "input": HELLO}) as r:
        text = await r.text()
        assert r.status == 400 and key not in text, text
    await fake_cloud.set_mode("echo_stream")
    for stream in (False, True):
        body = {"model": "gpt-fake", "input": HELLO, "stream": stream}
        async with http.post(url, json=body) as r:
            text = await r.text()
            assert r.status == 200, text
            assert "you sent Bearer" in text and key not in text


async def test_bounds_name_the_setting(gateway_factory: Any, http: aiohttp.ClientSession) -> None:
    gw = await gateway_factory(
        server={"max_messages": 2, "max_content_parts": 2, "max_content_chars": 10, "max_tools": 0}
    )
    url = f"{gw.base_url}/responses"
    text = {"type": "input_text", "text": "x"}
    for body, setting in (
        ({"input": [{"role": "user", "content": "hi"}] * 3}, "max_messages"),
        ({"input": [{"role": "user", "content": [text] * 3}]}, "max_content_parts"),
        ({"input": "eleven chars"}, "max_content_chars"),
        ({"input": "hi", "tools": [WEATHER]}, "max_tools"),
    ):
        async with http.post(url, json={"model": "local", **body}) as r:
            err = (await r.json())["error"]
            assert r.status == 400, (setting, err)
            assert f"server.{setting}" in err["message"], (setting, err)
            assert err["param"] in ("input", "tools"), err
    async with http.post(url, json={"model": "local", "input": "hi", "max_output_tokens": 2}) as r:
        assert r.status == 200


async def test_metadata_and_identifiers_have_openais_length_bounds(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    """Unbounded, one key's metadata (echoed and stored with each response) filled the store."""
    url = f"{gateway.base_url}/responses"
    long_key = "k" * 1000
    for extra, param in (
        ({"metadata": {"note": "x" * 513}}, "metadata.note"),
        ({"metadata": {long_key: "x"}}, "metadata"),
        ({"metadata": {f"k{i}": "x" for i in range(17)}}, "metadata"),
        ({"user": "u" * 257}, "user"),
        ({"safety_identifier": "s" * 65}, "safety_identifier"),
        ({"prompt_cache_key": "p" * 65}, "prompt_cache_key"),
    ):
        async with http.post(url, json={"model": "local", "input": "hi", **extra}) as r:
            err = (await r.json())["error"]
            assert r.status == 400, (param, err)
            assert err["param"] == param and f"'{param}'" in err["message"], err
            assert err["type"] == "invalid_request_error", err
            assert long_key not in err["message"], err  # a long key is not echoed back
    async with http.post(url, json={"model": "local", "input": "hi", "metadata": "no"}) as r:
        assert r.status == 400 and (await r.json())["error"]["param"] == "metadata"
    at_bounds = {
        "metadata": {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)},
        "user": "u" * 256,
        "safety_identifier": "s" * 64,
        "prompt_cache_key": "p" * 64,
    }
    body = {"model": "local", "input": "hi", "max_output_tokens": 2, **at_bounds}
    async with http.post(url, json=body) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["metadata"] == at_bounds["metadata"]


# -- the store's bounds (no model needed) -------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _entry(n: int = 0) -> Stored:
    return Stored({"id": f"resp_{n}", "pad": "x" * n}, [{"role": "user", "content": "hi"}])


def _size(entry: Stored) -> int:
    """The bytes the store counts for an entry (its compact JSON)."""
    obj = {"response": entry.response, "history": entry.history}
    return len(json.dumps(obj, separators=(",", ":")))


def test_store_is_per_tenant_and_expires() -> None:
    clock = _Clock()
    store = ResponseStore(ResponsesSettings(store_ttl_s=60), clock=clock)
    store.put("a", "resp_1", _entry())
    assert store.get("a", "resp_1") == _entry()
    assert store.get("b", "resp_1") is None  # another tenant's id is unknown
    assert store.get(None, "resp_1") is None
    assert not store.delete("b", "resp_1")
    clock.now = 61
    assert store.get("a", "resp_1") is None and len(store) == 0
    store.put("a", "resp_2", _entry())
    assert store.delete("a", "resp_2") and store.get("a", "resp_2") is None


def test_store_bounds_entries_per_tenant_and_bytes() -> None:
    store = ResponseStore(
        ResponsesSettings(
            store_max_entries=5,
            store_max_per_tenant=2,
            store_max_bytes=2000,
            store_max_bytes_per_tenant=2000,
        )
    )
    for i in range(3):
        store.put("a", f"resp_{i}", _entry())
    assert store.get("a", "resp_0") is None  # the tenant's oldest went first
    assert store.get("a", "resp_1") is not None and store.get("a", "resp_2") is not None
    for t in "bcd":
        store.put(t, "resp_x", _entry())
    assert len(store) == 5
    store.put("e", "resp_x", _entry())
    assert len(store) == 5 and store.get("a", "resp_1") is None  # least recently used overall
    assert not store.put("f", "resp_big", _entry(5000))  # larger than the whole store
    for i in range(10):
        store.put(f"t{i}", "resp_y", _entry(500))
    assert store.bytes <= 2000


def test_a_tenant_filling_its_quota_evicts_only_its_own() -> None:
    size = _size(_entry(400))
    store = ResponseStore(
        ResponsesSettings(store_max_bytes=10 * size, store_max_bytes_per_tenant=3 * size)
    )
    assert store.put("victim", "resp_v", _entry(400))
    for i in range(50):  # the reported attack: one key storing response after response
        assert store.put("attacker", f"resp_{i}", _entry(400))
        assert store.tenant_bytes("attacker") <= 3 * size
        assert store.get("victim", "resp_v") is not None  # never pushed out
    # The attacker lost its own least recently used: its three newest are what it keeps.
    assert [i for i in range(50) if store.get("attacker", f"resp_{i}")] == [47, 48, 49]
    assert store.bytes == 4 * size and len(store) == 4
    # Reading an entry makes it the tenant's most recently used: the next put drops another.
    assert store.get("attacker", "resp_47") is not None
    store.put("attacker", "resp_50", _entry(400))
    assert store.get("attacker", "resp_47") and not store.get("attacker", "resp_48")
    # One response larger than a tenant's quota is not kept, and drops nothing to make room.
    assert not store.put("attacker", "resp_huge", _entry(4 * size))
    assert store.get("attacker", "resp_huge") is None
    assert store.tenant_bytes("attacker") == 3 * size
    # A deleted entry frees its tenant's bytes.
    assert store.delete("victim", "resp_v") and store.tenant_bytes("victim") == 0
    assert store.bytes == 3 * size


def test_the_whole_store_stays_bounded_when_every_tenant_is_within_its_quota() -> None:
    size = _size(_entry(400))
    store = ResponseStore(
        ResponsesSettings(store_max_bytes=5 * size, store_max_bytes_per_tenant=2 * size)
    )
    for t in "abc":
        for i in range(2):
            store.put(t, f"resp_{i}", _entry(400))
    # Six entries, each tenant at its quota, five fit: the least recently used overall went.
    assert store.bytes == 5 * size and store.get("a", "resp_0") is None
    assert all(store.get(t, f"resp_{i}") for t, i in (("a", 1), ("b", 0), ("c", 1)))


def test_a_tenant_quota_above_the_whole_store_is_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="store_max_bytes_per_tenant"):
        ResponsesSettings(store_max_bytes=1000, store_max_bytes_per_tenant=2000)


async def test_cloud_through_litellm(gateway_factory: Any, fake_cloud: FakeCloud) -> None:
    gw = await gateway_factory(**cloud_settings(fake_cloud, passthrough=False))
    c = gw.client()
    r = await c.responses.create(model="gpt-fake", input=HELLO, max_output_tokens=32)
    assert r.output_text == f"cloud answer to: {HELLO}"
    assert fake_cloud.requests[-1]["messages"] == [{"role": "user", "content": HELLO}]
    async with c.responses.stream(
        model="gpt-fake", input=ASK_WEATHER, tools=[WEATHER], tool_choice="required"
    ) as stream:
        kinds = [e.type async for e in stream]
        final = await stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds
    (call,) = _calls(final)
    assert call.name == "get_weather"
    jsonschema.validate(json.loads(call.arguments), WEATHER_PARAMS)


async def test_store_settings_reach_the_gateway(gateway_factory: Any) -> None:
    gw = await gateway_factory(responses={"store_max_per_tenant": 1})
    c = gw.client()
    first = await c.responses.create(model="local", input="hi", max_output_tokens=2)
    second = await c.responses.create(model="local", input="hello", max_output_tokens=2)
    assert (await c.responses.retrieve(second.id)).id == second.id
    with pytest.raises(openai.NotFoundError):  # one per key: the older one went
        await c.responses.retrieve(first.id)
