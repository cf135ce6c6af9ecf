"""The upstream key is scrubbed over the stream, not chunk by chunk (issue 33).

A model that echoes the box's key for its upstream streams it a few characters a chunk; a
search of each chunk never sees it whole, and the client, joining the deltas, did. An
upstream here streams its Authorization header back three characters at a time, through the
pass-through and through litellm: the client's text holds `[redacted]`, never the key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.backends.scrub import REDACTED, StreamScrub
from gateway.settings import CloudModel
from tests.conftest import RunningGateway, free_port
from tests.fakes.server import sse, upstream

KEY = "sk-upstream-secret-0123456789"


class Echo:
    def __init__(self) -> None:
        self.port = free_port()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        said = "your key is " + request.headers.get("Authorization", "")[len("Bearer ") :] + " ok"
        pieces = [said[i : i + 3] for i in range(0, len(said), 3)]
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        for i, p in enumerate(pieces):
            last = i == len(pieces) - 1
            choice = {
                "index": 0,
                "delta": {"content": p},
                "finish_reason": "stop" if last else None,
            }
            await resp.write(sse({**base, "choices": [choice]}))
        await resp.write(b"data: [DONE]\n\n")
        return resp


@pytest.fixture
async def echo(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Echo]:
    monkeypatch.setenv("ECHO_KEY", KEY)
    up = Echo()
    async with upstream(up.chat, up.port):
        yield up


def streamed_text(raw: str) -> str:
    parts = []
    for line in raw.splitlines():
        if line.startswith("data: {"):
            for c in json.loads(line[6:]).get("choices") or []:
                parts.append((c.get("delta") or {}).get("content") or "")
    return "".join(parts)


@pytest.mark.parametrize("passthrough", [True, False])
async def test_a_key_streamed_in_pieces_never_reaches_the_client(
    gateway_factory: Any, echo: Echo, http: aiohttp.ClientSession, passthrough: bool
) -> None:
    model = {
        "name": "echo",
        "model": "openai/m",
        "api_base": f"http://127.0.0.1:{echo.port}/v1",
        "api_key_env": "ECHO_KEY",
    }
    gw: RunningGateway = await gateway_factory(
        cloud={"models": [model], "passthrough": passthrough, "probe_interval_s": 0.2}
    )
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with http.post(f"{gw.base_url}/chat/completions", json=body) as r:
        raw = await r.text()
        assert r.status == 200, raw
    assert KEY not in raw
    assert streamed_text(raw) == f"your key is {REDACTED} ok", streamed_text(raw)


def test_the_scrubber_holds_back_only_what_may_start_the_key() -> None:
    scrub = StreamScrub(CloudModel(name="x", model="openai/m", api_key_env="ECHO_KEY"))
    scrub.key = KEY

    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}

    out = []
    for piece in ["the s", "k-up", "stream-secret-0123", "456789 and s", "o on"]:
        c = chunk(piece)
        scrub.obj(c)
        out.append(c["choices"][0]["delta"]["content"])
    end = chunk("", "stop")
    scrub.obj(end)
    out.append(end["choices"][0]["delta"]["content"])
    assert "".join(out) == f"the {REDACTED} and so on"
    assert out[0] == "the "  # "s" held: it may start the key
    # A stream cut before it finished still gets what was held.
    scrub.obj(chunk("bye s"))
    tail = scrub.tail()
    assert tail is not None and tail["choices"][0]["delta"]["content"] == "s"
