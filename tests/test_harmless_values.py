"""Values OpenAI accepts that ask nothing of the answer are accepted locally too; the same
fields with a value the local model cannot honour are still refused by name. And a Responses
stream names one model, the one chat completions report, in every event."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.conftest import RunningGateway

ASK = [{"role": "user", "content": "Say hello in French."}]


async def test_harmless_values_are_accepted_on_the_local_model(gateway: RunningGateway) -> None:
    c = gateway.client()
    chat = await c.chat.completions.create(
        model="local",
        messages=ASK,  # type: ignore[arg-type]
        max_tokens=4,
        modalities=["text"],
        logit_bias={},
        prompt_cache_retention="24h",
    )
    assert chat.choices[0].message.content is not None
    for stream in (False, True):
        chat = await c.chat.completions.create(
            model="local",
            messages=ASK,  # type: ignore[arg-type]
            max_tokens=4,
            prompt_cache_retention="in_memory",
            stream=stream,
        )
        if stream:
            assert [ch async for ch in chat]  # type: ignore[union-attr]
    done = await c.completions.create(model="local", prompt="Hello", max_tokens=2, logit_bias={})
    assert done.choices[0].text is not None
    r = await c.responses.create(
        model="local",
        input="Say hello in French.",
        max_output_tokens=4,
        top_logprobs=0,
        prompt_cache_retention="24h",
    )
    assert r.status in ("completed", "incomplete")


async def test_values_the_local_model_cannot_honour_are_still_refused(
    gateway: RunningGateway,
) -> None:
    c = gateway.client()
    cases: list[dict[str, Any]] = [
        {"modalities": ["audio"]},
        {"modalities": ["text", "audio"]},
        {"logit_bias": {"42": 5}},
        {"prompt_cache_retention": "forever"},
    ]
    for extra in cases:
        with pytest.raises(openai.BadRequestError) as err:
            await c.chat.completions.create(
                model="local",
                messages=ASK,  # type: ignore[arg-type]
                max_tokens=2,
                extra_body=extra,
            )
        body: Any = err.value.body
        assert body["param"] == next(iter(extra)), (extra, body)
        assert body["code"] == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError) as err:
        await c.responses.create(model="local", input="Hi.", max_output_tokens=2, top_logprobs=2)
    assert err.value.body["param"] == "top_logprobs"  # type: ignore[index]


async def test_a_responses_stream_names_one_model_throughout(gateway: RunningGateway) -> None:
    c = gateway.client()
    chat = await c.chat.completions.create(model="local", messages=ASK, max_tokens=2)  # type: ignore[arg-type]
    whole = await c.responses.create(model="local", input="Hi.", max_output_tokens=2)
    stream = await c.responses.create(model="local", input="Hi.", max_output_tokens=4, stream=True)
    events = [e async for e in stream]
    named = {e.response.model for e in events if hasattr(e, "response")}
    kinds = [e.type for e in events if hasattr(e, "response")]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert named == {chat.model} == {whole.model}, named
    assert chat.model != "local"  # the model that answered, not the alias asked for
