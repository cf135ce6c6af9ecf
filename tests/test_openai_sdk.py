"""The official OpenAI SDK, sync and async, against a real gateway and the real model."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import GatewayProcess, RunningGateway

HELLO = [{"role": "user", "content": "Say hello in French."}]


def test_sync_client_against_the_cli_process(gateway_process: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway_process.base_url, api_key="unused", max_retries=0)
    ids = {m.id for m in client.models.list()}
    assert {"auto", "local"} <= ids

    raw = client.chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, max_tokens=24
    )
    assert raw.headers["x-gateway-route"] == "local"
    assert raw.headers["x-request-id"]
    chat = raw.parse()
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.prompt_tokens > 0
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens

    chunks = list(
        client.chat.completions.create(model="local", messages=HELLO, max_tokens=24, stream=True)
    )
    assert len(chunks) >= 3
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "".join(c.choices[0].delta.content or "" for c in chunks)

    done = client.completions.create(model="local", prompt="The capital of France is", max_tokens=8)
    assert done.choices[0].text
    assert done.usage is not None and done.usage.completion_tokens > 0


async def test_async_client(gateway: RunningGateway) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    models = await client.models.list()
    assert {"auto", "local"} <= {m.id for m in models.data}

    raw = await client.chat.completions.with_raw_response.create(
        model="local", messages=HELLO, max_tokens=16
    )
    assert raw.headers["x-gateway-route"] == "local"
    chat = raw.parse()
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.completion_tokens > 0

    stream = await client.chat.completions.create(
        model="auto",
        messages=HELLO,
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert len(chunks) >= 3
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[0].choices[0].delta.role == "assistant"

    comp_stream = await client.completions.create(
        model="local", prompt="Once upon a time", max_tokens=8, stream=True
    )
    texts = [c.choices[0].text async for c in comp_stream if c.choices]
    assert len(texts) >= 3


async def test_unknown_fields_are_refused_locally_never_dropped(gateway: RunningGateway) -> None:
    # The local model cannot honour a field it does not know: a 400 naming it, not a silent
    # drop. Fields that only describe the caller (metadata, user) change no answer.
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as br:
        await client.chat.completions.create(
            model="local", messages=HELLO, max_tokens=4, extra_body={"some_future_field": 1}
        )
    assert "some_future_field" in str(br.value)
    chat = await client.chat.completions.create(
        model="local", messages=HELLO, max_tokens=4, extra_body={"metadata": {"app": "t"}}
    )
    assert chat.choices[0].message.content is not None


async def test_sdk_raises_typed_errors(gateway: RunningGateway) -> None:
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as nf:
        await client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as br:
        await client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "word " * 3000}]
        )
    assert br.value.code == "context_length_exceeded"
