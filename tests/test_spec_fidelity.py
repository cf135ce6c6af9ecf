"""Answers and refusals as OpenAI's published spec says (issue 35's ten points), each tried as
a client generated from the spec would: the real local model, a fake cloud on loopback."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import ROOT, RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

SPEC = ROOT / "tests" / "spec" / "openai_responses.json"
HELLO = [{"role": "user", "content": "Say hello."}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')} of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    for name in ("get_weather", "get_time")
]


@pytest.fixture
async def hybrid(gateway_factory: Any, fake_cloud: FakeCloud) -> RunningGateway:
    return await gateway_factory(**cloud_settings(fake_cloud))  # type: ignore[no-any-return]


async def post(http: aiohttp.ClientSession, gw: RunningGateway, path: str, body: Any) -> Any:
    async with http.post(f"{gw.base_url}{path}", json=body) as r:
        return r.status, r.headers, await r.read()


def sse_objects(raw: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[5:])
        for line in raw.splitlines()
        if line.startswith(b"data:") and line[5:].strip() != b"[DONE]"
    ]


# 1. null is absent wherever the spec marks a field nullable ----------------------------------


@pytest.mark.parametrize("model", ["local", "gpt-fake"])
async def test_null_optional_fields_are_read_as_absent(
    hybrid: RunningGateway, http: aiohttp.ClientSession, fake_cloud: FakeCloud, model: str
) -> None:
    nulls = {"stream": None, "stream_options": None, "temperature": None, "n": None}
    chat = {"model": model, "messages": HELLO, "max_tokens": 3, **nulls}
    status, headers, body = await post(http, hybrid, "/chat/completions", chat)
    assert status == 200, body
    assert headers["Content-Type"].startswith("application/json")  # null stream: not a stream
    text = {"model": model, "prompt": "Hello", "max_tokens": 3, "echo": None, **nulls}
    status, _, body = await post(http, hybrid, "/completions", text)
    assert status == 200, body
    responses = {"model": model, "input": "Say hello.", "max_output_tokens": 16, "stream": None}
    status, _, body = await post(http, hybrid, "/responses", responses)
    assert status == 200, body
    if model != "local":  # the cloud is sent the request without them
        assert not {k for k in fake_cloud.requests[-1] if fake_cloud.requests[-1][k] is None}


async def test_a_null_prompt_is_the_specs_default(
    hybrid: RunningGateway, http: aiohttp.ClientSession, fake_cloud: FakeCloud
) -> None:
    for model in ("local", "gpt-fake"):
        body = {"model": model, "prompt": None, "max_tokens": 2}
        status, _, raw = await post(http, hybrid, "/completions", body)
        assert status == 200, raw
    assert fake_cloud.requests[-1]["prompt"] == "<|endoftext|>"  # the spec's default
    # Absent is not null: the spec requires the field.
    status, _, raw = await post(http, hybrid, "/completions", {"model": "local", "max_tokens": 2})
    assert status == 400 and json.loads(raw)["error"]["param"] == "prompt"


# 2-3. local chat answers: message.refusal present, no null system_fingerprint ---------------


async def test_local_chat_answers_have_refusal_and_no_null_fingerprint(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"model": "local", "messages": HELLO, "max_tokens": 3}
    status, _, raw = await post(http, gateway, "/chat/completions", body)
    answer = json.loads(raw)
    assert status == 200
    assert answer["choices"][0]["message"]["refusal"] is None
    assert answer.get("system_fingerprint", "") is not None
    status, _, raw = await post(http, gateway, "/chat/completions", {**body, "stream": True})
    chunks = sse_objects(raw)
    assert status == 200 and chunks
    assert all(c.get("system_fingerprint", "") is not None for c in chunks)


# 4. Responses usage names cache writes -------------------------------------------------------


async def test_responses_usage_has_cache_write_tokens(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"model": "local", "input": "Say hello.", "max_output_tokens": 8}
    status, _, raw = await post(http, gateway, "/responses", body)
    assert status == 200
    details = json.loads(raw)["usage"]["input_tokens_details"]
    assert details == {"cached_tokens": 0, "cache_write_tokens": 0}


# 5. allowed_tools is honoured on the local route, chat and Responses alike --------------------


async def test_allowed_tools_restricts_the_local_models_calls(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "get_time"}}],
        },
    }
    ask = [{"role": "user", "content": "What is the weather in Oslo?"}]
    body = {"model": "local", "messages": ask, "tools": TOOLS, "tool_choice": choice}
    status, _, raw = await post(http, gateway, "/chat/completions", {**body, "temperature": 0})
    assert status == 200, raw
    calls = json.loads(raw)["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_time"]
    rtools = [{"type": "function", **t["function"]} for t in TOOLS]
    rchoice = {
        "type": "allowed_tools",
        "mode": "required",
        "tools": [{"type": "function", "name": "get_time"}],
    }
    rbody = {"model": "local", "input": "What is the weather in Oslo?", "tools": rtools,
             "tool_choice": rchoice, "temperature": 0}  # fmt: skip
    status, _, raw = await post(http, gateway, "/responses", rbody)
    assert status == 200, raw
    assert [i["name"] for i in json.loads(raw)["output"] if i["type"] == "function_call"] == [
        "get_time"
    ]
    # A name not in `tools` is the client's mistake, said by name.
    bad = {
        **choice,
        "allowed_tools": {
            "mode": "auto",
            "tools": [{"type": "function", "function": {"name": "nope"}}],
        },
    }
    status, _, raw = await post(http, gateway, "/chat/completions", {**body, "tool_choice": bad})
    err = json.loads(raw)["error"]
    assert status == 400 and err["param"] == "tool_choice" and "nope" in err["message"]


# 6. prompt_cache_options: accepted with the spec's values, refused by name otherwise ----------


async def test_prompt_cache_options_on_the_local_route(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"model": "local", "messages": HELLO, "max_tokens": 2}
    for opts in ({"ttl": "30m"}, {"mode": "explicit"}, {"ttl": "30m", "mode": "implicit"}):
        status, _, raw = await post(
            http, gateway, "/chat/completions", {**body, "prompt_cache_options": opts}
        )
        assert status == 200, (opts, raw)
    status, _, raw = await post(
        http, gateway, "/chat/completions", {**body, "prompt_cache_options": {"ttl": "7d"}}
    )
    err = json.loads(raw)["error"]
    assert status == 400 and err["param"] == "prompt_cache_options", err


# 7. a stored response replayed as its event stream; include[] refused by name ----------------


async def test_stored_response_replays_as_an_event_stream(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"model": "local", "input": "Say hello.", "max_output_tokens": 8}
    status, _, raw = await post(http, gateway, "/responses", body)
    assert status == 200, raw
    stored = json.loads(raw)
    url = f"{gateway.base_url}/responses/{stored['id']}"
    async with http.get(url, params={"stream": "true"}) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        events = sse_objects(await r.read())
    kinds = [e["type"] for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == f"response.{stored['status']}"  # completed, or incomplete (length)
    assert events[-1]["response"] == stored
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == stored["output"][0]["content"][0]["text"]
    async with http.get(url, params={"stream": "true", "starting_after": "2"}) as r:
        assert sse_objects(await r.read())[0]["sequence_number"] == 3
    async with http.get(url, params={"include[]": "message.output_text.logprobs"}) as r:
        err = (await r.json())["error"]
        assert r.status == 400 and err["param"] == "include"
    async with http.get(url, params={"stream": "maybe"}) as r:
        assert r.status == 400 and (await r.json())["error"]["param"] == "stream"
    async with http.get(url) as r:  # plain JSON as before
        assert r.status == 200 and await r.json() == stored


# 8. completions max_tokens 0 reaches the cloud; the local model says why it cannot -----------


async def test_completions_max_tokens_zero(
    hybrid: RunningGateway, http: aiohttp.ClientSession, fake_cloud: FakeCloud
) -> None:
    body = {"prompt": "Hello", "max_tokens": 0, "echo": True}
    status, _, raw = await post(http, hybrid, "/completions", {**body, "model": "gpt-fake"})
    assert status == 200, raw
    assert fake_cloud.requests[-1]["max_tokens"] == 0
    status, _, raw = await post(http, hybrid, "/completions", {**body, "model": "local"})
    err = json.loads(raw)["error"]
    assert status == 400 and err["param"] == "max_tokens", err


# 9. a negative token id is named -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "named"), [([5, -1], "input[1]"), ([[1, 2], [3, -7]], "input[1][1]")]
)
async def test_embeddings_name_an_out_of_range_token_id(
    gateway: RunningGateway, http: aiohttp.ClientSession, given: Any, named: str
) -> None:
    status, _, raw = await post(http, gateway, "/embeddings", {"model": "local", "input": given})
    err = json.loads(raw)["error"]
    assert status == 400 and err["param"] == "input"
    assert f"'{named}'" in err["message"] and "token id" in err["message"], err


# 10. the document lists every operation served ------------------------------------------------


async def test_openapi_lists_model_retrieval(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.url}/openapi.json") as r:
        doc = await r.json()
    assert doc["paths"]["/v1/models/{model}"]["get"]["operationId"] == "retrieveModel"
    async with http.get(f"{gateway.base_url}/models/local") as r:
        assert r.status == 200 and (await r.json())["object"] == "model"


# The property behind point 1, from the spec itself: every field its request schemas let be
# null, nulled one at a time and all at once, on the local model and the cloud.

NULLABLE = json.loads(SPEC.read_text(encoding="utf-8"))["nullable_request_fields"]
BASES = {
    "CreateChatCompletionRequest": ("/chat/completions", {"messages": HELLO, "max_tokens": 2}),
    "CreateCompletionRequest": ("/completions", {"prompt": "Hello", "max_tokens": 2}),
    "CreateResponse": ("/responses", {"input": "Say hello.", "max_output_tokens": 16}),
}


@pytest.mark.parametrize("model", ["local", "gpt-fake"])
@pytest.mark.parametrize("operation", sorted(BASES))
async def test_every_nullable_field_may_be_null(
    hybrid: RunningGateway, http: aiohttp.ClientSession, operation: str, model: str
) -> None:
    path, base = BASES[operation]
    fields = NULLABLE[operation]
    assert fields, operation
    nulls = [{f: None} for f in fields] + [dict.fromkeys(fields)]
    for null in nulls:
        body = {**base, "model": model, **null}
        status, _, raw = await post(http, hybrid, path, body)
        assert status == 200, (operation, model, sorted(null)[:3], raw[:300])
