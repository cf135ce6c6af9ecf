"""`item_reference` input items: earlier turns by id, as the Vercel AI SDK sends them.

`@ai-sdk/openai` talks to /v1/responses, stores by default and sends each earlier assistant
turn as `{"type": "item_reference", "id": "msg_..."}`. The gateway resolves the ids from its
response store (the caller's key only) before routing, so the local model, the cloud (pass-
through and litellm) and the cache all see the whole conversation as chat messages.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from gateway.responses.in_process import ResponseStore, Stored
from gateway.settings import ResponsesSettings
from tests.conftest import RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

FIRST = "Say hello in French."
SECOND = "Now say it in German."
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "input_text", "text": text}]}


def ref(item_id: str) -> dict[str, Any]:
    return {"type": "item_reference", "id": item_id}


# -- the local model ---------------------------------------------------------------------------


async def test_turn_two_by_reference_is_turn_two_in_full(gateway: RunningGateway) -> None:
    c = gateway.client()
    first = await c.responses.create(
        model="local", input=[user(FIRST)], max_output_tokens=12, temperature=0
    )
    (msg,) = first.output
    assert msg.id.startswith("msg_") and first.output_text

    raw = await c.responses.with_raw_response.create(
        model="local",
        input=[user(FIRST), ref(msg.id), user(SECOND)],  # type: ignore[list-item]
        max_output_tokens=12,
        temperature=0,
    )
    assert raw.headers["x-gateway-route"] == "local"
    by_ref = raw.parse()
    # The same conversation with the assistant turn written out: the same prompt, token for
    # token, so the same answer at temperature 0.
    in_full = await c.responses.create(
        model="local",
        input=[
            user(FIRST),
            {"role": "assistant", "content": [{"type": "output_text", "text": first.output_text}]},
            user(SECOND),
        ],  # type: ignore[list-item]
        max_output_tokens=12,
        temperature=0,
        store=False,
    )
    assert by_ref.usage is not None and in_full.usage is not None
    assert by_ref.usage.input_tokens == in_full.usage.input_tokens
    assert by_ref.output_text == in_full.output_text
    # A third turn references the second answer and, through it, nothing is lost.
    third = await c.responses.create(
        model="local",
        input=[user(FIRST), ref(msg.id), user(SECOND), ref(by_ref.output[0].id), user("Thanks!")],  # type: ignore[list-item]
        max_output_tokens=4,
        temperature=0,
    )
    assert third.usage is not None and third.usage.input_tokens > by_ref.usage.input_tokens


async def test_streamed_turn_two_by_reference_streams_text(gateway: RunningGateway) -> None:
    """streamText's case: both turns streamed, the id taken from the stream's events."""
    c = gateway.client()
    stream = await c.responses.create(
        model="local", input=[user(FIRST)], max_output_tokens=12, temperature=0, stream=True
    )
    events = [e async for e in stream]
    added = [e.item.id for e in events if e.type == "response.output_item.added"]
    assert added == [events[-1].response.output[0].id]

    stream = await c.responses.create(
        model="local",
        input=[user(FIRST), ref(added[0]), user(SECOND)],  # type: ignore[list-item]
        max_output_tokens=12,
        temperature=0,
        stream=True,
    )
    events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created"
    assert kinds[-1] in ("response.completed", "response.incomplete")
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and events[-1].response.output_text == text


async def test_unknown_or_another_keys_item_is_a_404_naming_it(gateway: RunningGateway) -> None:
    mine = gateway.client("sk-alice")
    first = await mine.responses.create(model="local", input=FIRST, max_output_tokens=4)
    unstored = await mine.responses.create(
        model="local", input=FIRST, max_output_tokens=4, store=False
    )
    cases = [
        (gateway.client("sk-bob"), first.output[0].id),  # another key's item
        (mine, "msg_does_not_exist"),
        (mine, unstored.output[0].id),  # `store: false` keeps nothing
    ]
    for c, item_id in cases:
        with pytest.raises(openai.NotFoundError) as nf:
            await c.responses.create(
                model="local",
                input=[user(FIRST), ref(item_id), user(SECOND)],  # type: ignore[list-item]
                max_output_tokens=4,
            )
        body: Any = nf.value.body
        assert body["code"] == "item_not_found" and body["param"] == "input[1].id"
        assert item_id in body["message"]
    # The owner can still use it.
    ok = await mine.responses.create(
        model="local",
        input=[user(FIRST), ref(first.output[0].id), user(SECOND)],  # type: ignore[list-item]
        max_output_tokens=4,
    )
    assert ok.status in ("completed", "incomplete")


async def test_a_deleted_response_takes_its_items_along(gateway: RunningGateway) -> None:
    c = gateway.client()
    first = await c.responses.create(model="local", input=FIRST, max_output_tokens=4)
    await c.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        await c.responses.create(
            model="local", input=[ref(first.output[0].id), user(SECOND)], max_output_tokens=4
        )


# -- every route ------------------------------------------------------------------------------


@pytest.mark.parametrize("passthrough", [True, False], ids=["passthrough", "litellm"])
async def test_the_cloud_gets_the_conversation_as_chat_messages(
    gateway_factory: Any, fake_cloud: FakeCloud, passthrough: bool
) -> None:
    gw = await gateway_factory(**cloud_settings(fake_cloud, passthrough=passthrough))
    c = gw.client()
    first = await c.responses.create(model="gpt-fake", input=[user(FIRST)])
    await c.responses.create(
        model="gpt-fake",
        input=[user(FIRST), ref(first.output[0].id), user(SECOND)],  # type: ignore[list-item]
    )
    assert fake_cloud.requests[-1]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": FIRST}]},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": [{"type": "text", "text": SECOND}]},
    ]

    # A function call by reference, its output by call id (as the AI SDK sends tool turns).
    call_turn = await c.responses.create(
        model="gpt-fake", input="Weather in Oslo?", tools=[WEATHER], tool_choice="required"
    )
    (fc,) = call_turn.output
    assert fc.type == "function_call" and fc.id.startswith("fc_")
    streamed = await c.responses.create(
        model="gpt-fake",
        input=[
            user("Weather in Oslo?"),
            ref(fc.id),
            {"type": "function_call_output", "call_id": fc.call_id, "output": "sunny"},
        ],  # type: ignore[list-item]
        tools=[WEATHER],  # type: ignore[list-item]
        stream=True,
    )
    events = [e async for e in streamed]
    assert events[-1].type == "response.completed" and events[-1].response.output_text
    assert fake_cloud.requests[-1]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {
            "role": "assistant",  # content None: left out of the body, as every None is
            "tool_calls": [
                {
                    "id": "call_fake",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": "Oslo"})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_fake", "content": "sunny"},
    ]


async def test_a_referenced_turn_is_a_cache_hit(
    gateway_factory: Any, fake_cloud: FakeCloud
) -> None:
    gw = await gateway_factory(**cloud_settings(fake_cloud))
    c = gw.client()
    first = await c.responses.create(model="gpt-fake", input=[user(FIRST)], temperature=0)
    turn = [user(FIRST), ref(first.output[0].id), user(SECOND)]
    kw: dict[str, Any] = {"model": "gpt-fake", "input": turn, "temperature": 0}
    miss = await c.responses.with_raw_response.create(**kw)
    hit = await c.responses.with_raw_response.create(**kw)
    assert miss.headers["x-gateway-cache"] == "miss"
    assert hit.headers["x-gateway-cache"] == "hit" and hit.headers["x-gateway-route"] == "cache"
    assert hit.parse().output_text == miss.parse().output_text
    # The same conversation written out is the same key: references are expanded before it.
    in_full = [
        user(FIRST),
        {"role": "assistant", "content": [{"type": "output_text", "text": first.output_text}]},
        user(SECOND),
    ]
    again = await c.responses.with_raw_response.create(**{**kw, "input": in_full})
    assert again.headers["x-gateway-cache"] == "hit"


async def test_input_items_with_an_id_are_referable(
    gateway_factory: Any, fake_cloud: FakeCloud
) -> None:
    """As on OpenAI, an earlier response's input items are items too (here: those the client
    gave an id), and a referenced item stays referable through the response that used it."""
    gw = await gateway_factory(**cloud_settings(fake_cloud))
    c = gw.client()
    given = {"type": "message", "id": "msg_client_1", **user("Remember the number 7.")}
    first = await c.responses.create(model="gpt-fake", input=[given])  # type: ignore[list-item]
    second = await c.responses.create(
        model="gpt-fake",
        input=[ref("msg_client_1"), ref(first.output[0].id), user(SECOND)],  # type: ignore[list-item]
    )
    assert fake_cloud.requests[-1]["messages"][0] == {
        "role": "user",
        "content": [{"type": "text", "text": "Remember the number 7."}],
    }
    await c.responses.delete(first.id)
    await c.responses.create(
        model="gpt-fake",
        input=[ref("msg_client_1"), user("And now?")],  # type: ignore[list-item]
        store=False,  # keeps nothing: the second response is the item's last holder
    )
    assert fake_cloud.requests[-1]["messages"][0]["content"][0]["text"] == (
        "Remember the number 7."
    )
    await c.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError):
        await c.responses.create(model="gpt-fake", input=[ref("msg_client_1"), user("?")])  # type: ignore[list-item]


# -- the store's item index --------------------------------------------------------------------


def _stored(rid: str, *item_ids: str, pad: int = 0) -> Stored:
    items = {
        i: {"id": i, "type": "message", "role": "assistant", "content": "x" * pad} for i in item_ids
    }
    return Stored({"id": rid}, [{"role": "user", "content": "hi"}], items)


def test_store_finds_items_per_tenant_while_a_holder_lives() -> None:
    now = [0.0]
    store = ResponseStore(ResponsesSettings(store_ttl_s=60), clock=lambda: now[0])
    store.put("a", "resp_1", _stored("resp_1", "msg_1"))
    assert store.items("a", ["msg_1", "msg_x"]) == {"msg_1": _stored("r", "msg_1").items["msg_1"]}
    assert store.items("b", ["msg_1"]) == {} and store.items(None, ["msg_1"]) == {}
    assert store.get("a", "resp_1") == _stored("resp_1", "msg_1")
    now[0] = 30
    store.put("a", "resp_2", _stored("resp_2", "msg_1", "msg_2"))  # msg_1 referenced again
    now[0] = 70  # resp_1 expired, resp_2 holds msg_1 still
    assert set(store.items("a", ["msg_1", "msg_2"])) == {"msg_1", "msg_2"}
    assert store.delete("a", "resp_2")
    assert store.items("a", ["msg_1", "msg_2"]) == {}
    assert len(store) == 0 and store.bytes == 0 and store.tenant_bytes("a") == 0


def test_item_bytes_count_against_the_tenants_share() -> None:
    store = ResponseStore(ResponsesSettings(store_max_bytes=4000, store_max_bytes_per_tenant=2000))
    assert not store.put("a", "resp_big", _stored("resp_big", "msg_1", pad=2500))
    assert store.put("a", "resp_1", _stored("resp_1", "msg_1", pad=600))
    assert store.put("a", "resp_2", _stored("resp_2", "msg_2", pad=600))
    assert set(store.items("a", ["msg_1", "msg_2"])) == {"msg_1", "msg_2"}
    assert 1200 < store.tenant_bytes("a") <= 2000  # the items' bytes are counted
    # Over the share the oldest went, and its item with it.
    assert store.put("a", "resp_3", _stored("resp_3", "msg_3", pad=600))
    assert store.items("a", ["msg_1"]) == {} and set(store.items("a", ["msg_2", "msg_3"])) == {
        "msg_2",
        "msg_3",
    }
