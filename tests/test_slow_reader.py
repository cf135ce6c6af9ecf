"""A client that stops reading an answer without closing it, then sends its next turn at once.

The first answer is still being generated in the slot that holds the conversation's KV; the
next turn must not prefill the history cold in another slot (the busy slot's prefix is copied).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from gateway.schemas import ChatRequest
from tests.conftest import Factory, RunningGateway

TEXT = re.compile(rb'"content":\s?"(?!")')  # a chunk with text (not the role's empty one)
# Long enough that turn 1 is still generating when turn 2 arrives, on any box.
TURN1_MAX_TOKENS = 400


def history() -> list[dict[str, str]]:
    """About 600 tokens: a system prompt and five exchanges."""
    msgs = [
        {
            "role": "system",
            "content": "You are a patient assistant for a small bakery's staff. Answer in "
            "detail, use the shop's terms, and never invent prices. " * 3,
        }
    ]
    for t in range(5):
        msgs.append(
            {
                "role": "user",
                "content": f"Question {t + 1}: how should we store sourdough batch {t + 1} "
                "overnight, and what should the closing shift check before leaving the "
                "kitchen? Please be specific about temperatures and covers.",
            }
        )
        msgs.append(
            {
                "role": "assistant",
                "content": f"For batch {t + 1}: cover the tubs with damp cloths, keep them at 4 "
                "to 6 degrees in the walk-in fridge, label them with the time, and check that "
                "the ovens are off, the proofer is empty and the back door is locked.",
            }
        )
    msgs.append({"role": "user", "content": "Write the full closing checklist, step by step."})
    return msgs


def turn2(first: list[dict[str, str]]) -> list[dict[str, str]]:
    return [
        *first,
        {"role": "assistant", "content": "Step 1:"},
        {"role": "user", "content": "Never mind. What about croissant dough?"},
    ]


def request(msgs: list[dict[str, str]], **kw: Any) -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": "local", "temperature": 0.0, "max_tokens": 8, "messages": msgs, **kw}
    )


async def test_next_turn_copies_the_prefix_from_the_slot_still_generating(
    backend_factory: Factory,
) -> None:
    b = await backend_factory(parallel=2)
    engine = b.engine
    assert engine is not None
    first = history()
    stream = b.stream(request(first, max_tokens=TURN1_MAX_TOKENS, stream=True), "chat")
    it = stream.__aiter__()
    async with asyncio.timeout(300):
        while True:  # read until the first text, then stop reading (the stream stays open)
            chunk = await it.__anext__()
            if chunk.sse is not None and TEXT.search(chunk.sse):
                break
    busy = next(s for s in engine.slots if s.job is not None)
    assert busy.job is not None and busy.job.finish is None, "turn 1 already done"
    history_tokens = busy.job.prompt_tokens
    assert history_tokens >= 580
    probe = {"max_tokens": 1, "logprobs": True, "top_logprobs": 1}
    obj = (await b.complete(request(turn2(first), **probe), "chat")).obj
    cached = obj["usage"]["prompt_tokens_details"]["cached_tokens"]
    # Everything before turn 1's answer (its prompt, less the assistant header that differs
    # from here on at most) came from the busy slot's KV.
    assert cached >= history_tokens - 8
    assert engine.prefix_copies == 1
    await stream.aclose()
    # The copy is the same K/V: the first token and its logprob match a free slot that
    # computed the history itself (later tokens may drift by the batch's composition).
    ref = await backend_factory(parallel=2)
    await ref.complete(request(first, max_tokens=4), "chat")
    again = (await ref.complete(request(turn2(first), **probe), "chat")).obj
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == cached
    mine, theirs = (o["choices"][0]["logprobs"]["content"][0] for o in (obj, again))
    assert mine["token"] == theirs["token"]
    assert abs(mine["logprob"] - theirs["logprob"]) < 1e-3


async def test_stalled_http_reader_next_turn_reuses_history(
    gateway_factory: Callable[..., Awaitable[RunningGateway]],
) -> None:
    gw = await gateway_factory(local={"parallel": 2})
    url = f"{gw.url}/v1/chat/completions"
    first = history()
    body = {"model": "local", "temperature": 0, "messages": first}
    timeout = aiohttp.ClientTimeout(total=300)
    async with (
        aiohttp.ClientSession(timeout=timeout) as reader,
        aiohttp.ClientSession(timeout=timeout) as sender,
    ):
        resp = await reader.post(url, json={**body, "stream": True, "max_tokens": TURN1_MAX_TOKENS})
        assert resp.status == 200
        async for line in resp.content:  # one token, then no more reading; not closed
            if line.startswith(b"data: ") and TEXT.search(line):
                break
        async with sender.post(url, json={**body, "messages": turn2(first), "max_tokens": 8}) as r:
            assert r.status == 200, await r.text()
            obj = json.loads(await r.read())
        resp.close()
    usage = obj["usage"]
    # The shared history is about 615 tokens and turn 2 adds about 25 of its own: all of the
    # history is reused (a cold prefill in another slot reuses nothing).
    assert usage["prompt_tokens"] >= 610
    assert usage["prompt_tokens_details"]["cached_tokens"] >= usage["prompt_tokens"] - 32
