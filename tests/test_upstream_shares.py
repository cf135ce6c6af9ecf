"""One key's streams cannot take the upstream connections from another (issue 33).

The probe: 250 cloud streams that read nothing held 250 of the 256 pooled upstream
connections until the request timeout, and another client's request to a different, idle
upstream got a 504 after 80 s. Now a key has at most `limits.max_concurrent_per_key`
requests in progress (past it a 429 naming the bound), and one upstream at most half the
pool: another key's request to another upstream is answered at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import RunningGateway, free_port
from tests.fakes.server import sse, upstream

CAP = 20


class Upstream:
    def __init__(self, *, slow: bool) -> None:
        self.slow = slow
        self.port = free_port()
        self.open = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "c",
                    "object": "chat.completion",
                    "created": 1,
                    "model": "m",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "fast", "refusal": None},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.open += 1
        try:
            for _ in range(600):  # a minute of a slow answer
                delta = {"index": 0, "delta": {"content": " x"}, "finish_reason": None}
                await resp.write(sse({**base, "choices": [delta]}))
                await asyncio.sleep(0.1)
        finally:
            self.open -= 1
        return resp


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstream, Upstream]]:
    slow, fast = Upstream(slow=True), Upstream(slow=False)
    async with upstream(slow.chat, slow.port), upstream(fast.chat, fast.port):
        yield slow, fast


async def test_one_keys_streams_leave_room_for_another_key_and_upstream(
    gateway_factory: Any, upstreams: tuple[Upstream, Upstream]
) -> None:
    slow, fast = upstreams

    def model(name: str, up: Upstream) -> dict[str, Any]:
        return {"name": name, "model": "openai/m", "api_base": f"http://127.0.0.1:{up.port}/v1"}

    gw: RunningGateway = await gateway_factory(
        server={"api_keys": ["sk-a", "sk-b"]},
        cloud={"models": [model("slow", slow), model("fast", fast)], "probe_interval_s": 0.2},
        limits={"max_concurrent_per_key": CAP},
    )
    url = f"{gw.base_url}/chat/completions"
    body = {"model": "slow", "messages": [{"role": "user", "content": "go"}], "stream": True}
    held: list[tuple[aiohttp.ClientSession, aiohttp.ClientResponse]] = []
    refused = []
    for _ in range(CAP + 10):
        s = aiohttp.ClientSession(headers={"Authorization": "Bearer sk-a"})
        r = await s.post(url, json=body)
        if r.status == 200:
            held.append((s, r))  # and never read
        else:
            refused.append((r.status, (await r.json())["error"]["code"]))
            r.release()
            await s.close()
    try:
        assert len(held) == CAP, (len(held), refused)
        assert refused == [(429, "too_many_concurrent_requests")] * 10
        # Another key, another upstream: answered at once.
        t0 = time.monotonic()
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-b"}) as s:
            fast_body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}
            async with s.post(url, json=fast_body) as r:
                assert r.status == 200, await r.text()
        assert time.monotonic() - t0 < 2.0
    finally:
        for s, r in held:
            r.close()
            await s.close()
    # Once they are gone the key may open streams again.
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-a"}) as s:
        deadline = time.monotonic() + 10
        while True:
            async with s.post(url, json={**body, "stream": False, "model": "fast"}) as r:
                if r.status == 200:
                    break
            assert time.monotonic() < deadline, "the key's slots were never given back"
            await asyncio.sleep(0.2)
