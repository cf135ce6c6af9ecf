"""Small corners of the OpenAI surface: model lookup, headers on streams and errors, prompts."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.conftest import RunningGateway

HELLO = [{"role": "user", "content": "Say hello in French."}]


async def test_models_retrieve(gateway: RunningGateway) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    for mid in ("local", "auto", "smollm2-135m-instruct"):
        model = await client.models.retrieve(mid)
        assert model.id == mid and model.object == "model" and model.owned_by
    with pytest.raises(openai.NotFoundError) as err:
        await client.models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"


async def test_stream_carries_request_id(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"model": "local", "messages": HELLO, "max_tokens": 4, "stream": True}
    async with http.post(
        f"{gateway.base_url}/chat/completions", json=body, headers={"x-request-id": "abc-123"}
    ) as r:
        assert r.status == 200
        assert r.headers["x-request-id"] == "abc-123"
        await r.read()
    async with http.post(f"{gateway.base_url}/completions", json={**body, "prompt": "Hi"}) as r:
        assert r.headers["x-request-id"].startswith("req_")
        await r.read()


async def test_errors_after_a_decision_say_where(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"model": "local", "messages": [{"role": "user", "content": "lorem ipsum " * 2000}]}
    async with http.post(f"{gateway.base_url}/chat/completions", json=body) as r:
        assert r.status == 400
        assert r.headers["x-gateway-route"] == "local"
        assert r.headers["x-gateway-reason"]
        assert r.headers["x-request-id"]


async def test_developer_is_system_and_no_default_system_prompt(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async def prompt_tokens(messages: list[dict[str, str]]) -> int:
        body = {"model": "local", "messages": messages, "max_tokens": 1}
        async with http.post(f"{gateway.base_url}/chat/completions", json=body) as r:
            assert r.status == 200
            return int((await r.json())["usage"]["prompt_tokens"])

    sys_msg = {"role": "system", "content": "Be terse."}
    dev_msg = {"role": "developer", "content": "Be terse."}
    user = {"role": "user", "content": "hi"}
    assert await prompt_tokens([dev_msg, user]) == await prompt_tokens([sys_msg, user])
    # Without a system message, only an empty system turn: SmolLM2's template would
    # otherwise add "You are a helpful AI assistant named SmolLM, trained by Hugging Face".
    assert await prompt_tokens([user]) < await prompt_tokens([sys_msg, user])


@pytest.mark.parametrize("stream", [False, True])
async def test_empty_prompt_is_answered(
    gateway: RunningGateway, http: aiohttp.ClientSession, stream: bool
) -> None:
    body = {"model": "local", "prompt": "", "max_tokens": 4, "stream": stream}
    async with http.post(f"{gateway.base_url}/completions", json=body) as r:
        assert r.status == 200, await r.text()
        await r.read()
