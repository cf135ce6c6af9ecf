"""The continuous-batching local engine, on the real GGUF: isolation, sampling, stops, logprobs."""

from __future__ import annotations

import asyncio
import functools
import json
import math
from typing import Any

import pytest
from openai import AsyncOpenAI

from gateway.errors import ContextLengthExceeded
from gateway.local import LocalBackend
from gateway.schemas import ChatRequest, CompletionRequest
from tests.conftest import Factory, RunningGateway, until

WORDS = ["apple", "zebra", "kettle", "violin", "marble", "falcon", "copper", "tundra"]


def chat(content: str, **kw: Any) -> ChatRequest:
    body = {"model": "local", "temperature": 0.0, "max_tokens": 24, **kw}
    body["messages"] = [{"role": "user", "content": content}]
    return ChatRequest.model_validate(body)


def code_word(word: str, **kw: Any) -> ChatRequest:
    return chat(f"Repeat this code word exactly, nothing else: {word}", **kw)


async def answer(b: LocalBackend, req: ChatRequest) -> tuple[str, dict[str, Any]]:
    obj = (await b.complete(req, "chat")).obj
    return obj["choices"][0]["message"]["content"], obj


async def streamed(b: LocalBackend, req: ChatRequest) -> tuple[list[str], str | None]:
    pieces: list[str] = []
    finish = None
    async for chunk in b.stream(req, "chat"):
        if chunk.sse is not None:
            for line in chunk.sse.split(b"\n\n"):
                if line.startswith(b"data: "):
                    pieces.append(json.loads(line[6:])["choices"][0]["delta"]["content"])
            continue
        for choice in chunk.obj.get("choices", []):
            if choice["delta"].get("content"):
                pieces.append(choice["delta"]["content"])
            finish = choice["finish_reason"] or finish
    return pieces, finish


until = functools.partial(until, timeout=120.0)  # a busy box decodes slowly


async def alone(factory: Factory, reqs: list[ChatRequest]) -> list[str]:
    """Each prompt decoded on its own, one after the other, on a one-slot engine."""
    b = await factory(parallel=1)
    out = []
    for r in reqs:
        text, _ = await answer(b, r)
        out.append(text)
    return out


async def test_eight_concurrent_code_words_no_cross_talk(backend_factory: Factory) -> None:
    reqs = [code_word(w) for w in WORDS]
    # The 135M model does not repeat a word reliably, so each batched answer is compared with
    # the same prompt decoded alone: any cross-talk between slots would change it.
    solo = await alone(backend_factory, reqs)
    b = await backend_factory(parallel=8)
    together = [t for t, _ in await asyncio.gather(*[answer(b, r) for r in reqs])]
    assert together == solo
    for i, text in enumerate(together):
        others = [w for j, w in enumerate(WORDS) if j != i]
        assert not any(w in text.lower() for w in others), (WORDS[i], text)
    assert b.in_flight == 0 and b.queue_depth == 0


async def test_same_prompt_same_text_alone_and_alongside_seven(backend_factory: Factory) -> None:
    probe = chat("Write a short poem about the sea.", max_tokens=48)
    others = [
        chat("Count from one to twenty in words." * (k + 1), max_tokens=40 + 4 * k)
        for k in range(7)
    ]
    b = await backend_factory(parallel=8, prefill_chunk=32)
    first, _ = await answer(b, probe)
    # Seven others of different lengths: prefill chunks and decode steps mix in every batch.
    results = await asyncio.gather(answer(b, probe), *[answer(b, r) for r in others])
    assert results[0][0] == first
    fresh = await backend_factory(parallel=1)
    assert (await answer(fresh, probe))[0] == first


async def test_walked_away_request_frees_its_slot_within_one_step(
    backend_factory: Factory,
) -> None:
    b = await backend_factory(parallel=2)
    assert b.engine is not None
    keep = asyncio.ensure_future(answer(b, chat("Tell me a story about a cat.", max_tokens=64)))
    gen = b.stream(chat("Write a very long story about a lighthouse.", max_tokens=1000), "chat")
    for _ in range(3):
        await anext(gen)
    job = next(s.job for s in b.engine.slots if s.job is not None and s.job.params.max_tokens > 64)
    await gen.aclose()  # the client walks away
    assert job.cancelled and job.cancelled_at_step is not None
    await until(lambda: job.freed_at_step is not None)
    assert job.freed_at_step is not None
    # Cancelled during step N (its decode may be running): freed before step N+1 decodes.
    assert job.freed_at_step - job.cancelled_at_step <= 1
    text, obj = await keep  # the other slot is unaffected
    assert obj["choices"][0]["finish_reason"] in ("stop", "length") and text
    assert b.in_flight == 0


async def test_stop_strings_and_max_tokens_hold_per_slot(backend_factory: Factory) -> None:
    prompt = "Describe a sunny day at the beach in three sentences."
    b = await backend_factory(parallel=4)
    full, _ = await answer(b, chat(prompt, max_tokens=40))
    assert len(full) > 30, full
    # A stop string from the middle of the answer, likely spanning a token boundary.
    stop = full[15:22]
    cut = full.index(stop)
    reqs = [
        chat(prompt, max_tokens=40, stop=[stop]),
        chat(prompt, max_tokens=5),
        chat(prompt, max_tokens=40),
        chat(prompt, max_tokens=40, stop=["\u2603 never"]),
    ]
    (stopped, o1), (short, o2), (same, _), (unstopped, _) = await asyncio.gather(
        *[answer(b, r) for r in reqs]
    )
    assert stopped == full[:cut] and o1["choices"][0]["finish_reason"] == "stop"
    assert o2["usage"]["completion_tokens"] == 5 and o2["choices"][0]["finish_reason"] == "length"
    assert full.startswith(short)
    assert same == full and unstopped == full
    # Streamed, the stop string never leaks, not even a part of it.
    pieces, finish = await streamed(b, chat(prompt, max_tokens=40, stop=[stop]))
    assert "".join(pieces) == full[:cut] and finish == "stop"


async def test_context_overflow_is_per_slot(backend_factory: Factory) -> None:
    b = await backend_factory(parallel=2, n_ctx=256)
    assert b.n_ctx == 256
    with pytest.raises(ContextLengthExceeded):
        await b.complete(chat("word " * 400), "chat")
    near = chat("word " * 200, max_tokens=500)  # fits, but leaves little room to answer
    other = chat("Say hi.", max_tokens=16)
    (_, o1), (_, o2) = await asyncio.gather(answer(b, near), answer(b, other))
    u = o1["usage"]
    assert u["prompt_tokens"] + u["completion_tokens"] <= 256
    assert o2["usage"]["completion_tokens"] <= 16


async def test_same_seed_same_text(backend_factory: Factory) -> None:
    b = await backend_factory(parallel=4)
    req = chat("Invent a name for a new color.", temperature=1.0, seed=1234, max_tokens=24)
    first, _ = await answer(b, req)
    busy = [chat(f"Tell me about {w}s.", temperature=1.0, max_tokens=24) for w in WORDS[:3]]
    again = await asyncio.gather(answer(b, req), *[answer(b, r) for r in busy])
    assert again[0][0] == first
    other_seed, _ = await answer(b, chat(req.messages[0].text(), temperature=1.0, seed=99))
    assert isinstance(other_seed, str)


async def test_prefix_reuse_on_second_turn(backend_factory: Factory) -> None:
    b = await backend_factory(parallel=2)
    history = [
        {"role": "system", "content": "You are a helpful assistant. " * 20},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    body = {"model": "local", "temperature": 0.0, "max_tokens": 12}
    first = ChatRequest.model_validate({**body, "messages": history})
    text, o1 = await answer(b, first)
    assert o1["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    turn2 = [
        *history,
        {"role": "assistant", "content": text},
        {"role": "user", "content": "And of Italy?"},
    ]
    _, o2 = await answer(b, ChatRequest.model_validate({**body, "messages": turn2}))
    reused = o2["usage"]["prompt_tokens_details"]["cached_tokens"]
    # Everything up to the first turn's prompt is reused; only the new turn is prefilled.
    assert reused >= o1["usage"]["prompt_tokens"] - 1
    assert reused < o2["usage"]["prompt_tokens"]


async def test_queue_bound_counts_slots_and_waiting(backend_factory: Factory) -> None:
    b = await backend_factory(parallel=2, max_queue=1)
    long = [chat("Write a long story.", max_tokens=200) for _ in range(3)]
    tasks = [asyncio.ensure_future(answer(b, r)) for r in long]
    await until(lambda: b.in_flight == 2 and b.queue_depth == 1)
    assert not b.has_room()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await until(lambda: b.in_flight == 0 and b.queue_depth == 0)
    assert b.has_room()


def _check_chat_logprobs(content: list[Any], text: str, k: int) -> None:
    assert "".join(e.token for e in content) == text
    for e in content:
        assert e.logprob <= 0 and len(e.top_logprobs) == k
        assert bytes(e.bytes or []).decode("utf-8", "replace") == e.token
        tops = [t.logprob for t in e.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert math.isclose(e.logprob, tops[0], abs_tol=1e-6)  # greedy: the top token
        assert e.top_logprobs[0].token == e.token


async def test_logprobs_chat_and_completions_openai_shape(gateway: RunningGateway) -> None:
    client = AsyncOpenAI(base_url=gateway.base_url, api_key="unused")
    msgs = [{"role": "user", "content": "Name three fruits."}]
    chat_resp = await client.chat.completions.create(
        model="local", messages=msgs, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = chat_resp.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    _check_chat_logprobs(choice.logprobs.content, choice.message.content or "", 3)
    assert chat_resp.usage is not None
    assert len(choice.logprobs.content) <= chat_resp.usage.completion_tokens

    stream = await client.chat.completions.create(
        model="local",
        messages=msgs,
        max_tokens=12,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        stream=True,
    )
    content = []
    text = ""
    async for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            if c.logprobs and c.logprobs.content:
                content += c.logprobs.content
    assert text == choice.message.content
    _check_chat_logprobs(content, text, 3)

    prompt = "The capital of France is"
    comp = await client.completions.create(
        model="local", prompt=prompt, max_tokens=8, temperature=0, logprobs=2
    )
    lp = comp.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert lp.text_offset is not None
    assert "".join(lp.tokens) == comp.choices[0].text
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
    assert lp.text_offset[0] == len(prompt)
    for tok, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) <= 2 and math.isclose(max(top.values()), logprob, abs_tol=1e-6)
        assert top[tok] == logprob

    stream2 = await client.completions.create(
        model="local", prompt=prompt, max_tokens=8, temperature=0, logprobs=2, stream=True
    )
    toks: list[str] = []
    async for chunk in stream2:
        for c in chunk.choices:
            if c.logprobs and c.logprobs.tokens:
                toks += c.logprobs.tokens
    assert "".join(toks) == comp.choices[0].text


async def test_engine_job_counts(backend_factory: Factory) -> None:
    b = await backend_factory(parallel=2)
    req = CompletionRequest.model_validate(
        {"model": "local", "prompt": "Once upon a time", "max_tokens": 6, "temperature": 0}
    )
    obj = (await b.complete(req, "completion")).obj
    assert obj["usage"]["completion_tokens"] == 6 and obj["choices"][0]["finish_reason"] == "length"
