"""A client that reads nothing holds nothing for long (issue 33).

The probe: 100 connections asked for a stored response holding 7 MB of `tools` and read
nothing; RSS went 405 -> 1,623 MiB and every connection was still held after 100 s; 250 cloud
streams that read nothing held 250 pooled upstream connections for 300 s. Now a connection
whose client takes nothing for `server.send_timeout_s` is cut and its buffer freed, a stream's
upstream connection with it, while other clients are served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from typing import Any

import aiohttp
import psutil
import pytest
from aiohttp import web

from tests.conftest import RunningGateway, cloud_settings, free_port, until
from tests.fakes.cloud import FakeCloud
from tests.fakes.server import sse, upstream

SEND_TIMEOUT_S = 1.0
CONNECTIONS = 100


async def unread(
    port: int, request: bytes, n: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """`n` connections that each send `request` and then read nothing."""
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**10)
        # The smallest receive buffer the kernel allows: the answer backs up at once.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(request)
        conns.append((reader, writer))
    return conns


def tools(total: int) -> list[dict[str, Any]]:
    n = 16
    return [
        {
            "type": "function",
            "name": f"tool_{i}",
            "description": "d" * (total // n),
            "parameters": {"type": "object", "properties": {}},
        }
        for i in range(n)
    ]


async def test_clients_that_read_nothing_are_cut_after_the_send_timeout(
    gateway_factory: Any, fake_cloud: FakeCloud, http: aiohttp.ClientSession
) -> None:
    gw: RunningGateway = await gateway_factory(
        **cloud_settings(fake_cloud),
        server={
            "send_timeout_s": SEND_TIMEOUT_S,
            "max_connections_per_address": 1024,
            "max_body_bytes": 4 * 2**20,
        },
    )
    body = {"model": "gpt-fake", "input": "hi", "tools": tools(800_000), "max_output_tokens": 4}
    async with http.post(f"{gw.base_url}/responses", json=body) as r:
        assert r.status == 200, await r.text()
        rid = (await r.json())["id"]
    request = f"GET /v1/responses/{rid} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()

    rss = psutil.Process().memory_info().rss
    before = gw.metric("edge_gateway_connections_open")
    conns = await unread(gw.port, request, CONNECTIONS)
    t0 = time.monotonic()

    # Meanwhile another client is answered, promptly.
    async with http.get(f"{gw.url}/healthz") as r:
        assert r.status == 200
    async with http.get(f"{gw.base_url}/models") as r:
        assert r.status == 200

    async def closed(reader: asyncio.StreamReader) -> None:
        # Drain slowly now: the server must have cut the connection (EOF or reset) before the
        # whole answer could have been read.
        got = 0
        try:
            while chunk := await reader.read(2**16):
                got += len(chunk)
        except ConnectionError:
            pass
        assert got < 800_000, got  # not the whole answer: it was cut

    # Every one cut by the gateway: its connection count back to where it was.
    await until(
        lambda: gw.metric("edge_gateway_connections_open") <= before,
        "the unread connections to be cut",
        timeout=SEND_TIMEOUT_S + 30,
    )
    cut_by = time.monotonic() - t0
    grown = psutil.Process().memory_info().rss - rss
    await asyncio.wait_for(asyncio.gather(*(closed(r) for r, _ in conns)), 10)
    for _, w in conns:
        w.close()
    assert cut_by < SEND_TIMEOUT_S + 3
    # Each connection buffered at most its answer (under 1 MiB) until it was cut.
    assert grown < CONNECTIONS * 2 * 2**20, grown


class EndlessUpstream:
    """A cloud that streams as fast as it is read, until its reader goes: 16 KB a chunk."""

    def __init__(self) -> None:
        self.port = free_port()
        self.open = 0
        self.opened = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
        if not body.get("stream"):
            msg = {"role": "assistant", "content": "fast", "refusal": None}
            return web.json_response(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {"index": 0, "message": msg, "logprobs": None, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        self.open += 1
        self.opened += 1
        delta = {"index": 0, "delta": {"content": "x" * 16_000}, "finish_reason": None}
        chunk = sse({**base, "choices": [delta]})
        try:
            for _ in range(10_000):  # 160 MB: far more than any buffer on the way
                await resp.write(chunk)
        except ConnectionError:
            pass
        finally:
            self.open -= 1
        return resp


STREAMS = 250


@pytest.mark.slow
async def test_cloud_streams_that_nobody_reads_are_cut_and_release_the_upstream(
    gateway_factory: Any,
) -> None:
    endless, other = EndlessUpstream(), EndlessUpstream()

    def model(name: str, up: EndlessUpstream) -> dict[str, Any]:
        return {"name": name, "model": "openai/m", "api_base": f"http://127.0.0.1:{up.port}/v1"}

    async with upstream(endless.chat, endless.port), upstream(other.chat, other.port):
        gw: RunningGateway = await gateway_factory(
            server={
                "api_keys": ["sk-a", "sk-b"],
                "send_timeout_s": SEND_TIMEOUT_S,
                "max_connections_per_address": 1024,
            },
            cloud={"models": [model("endless", endless), model("other", other)]},
            limits={"max_concurrent_per_key": 1024},
        )
        payload = json.dumps(
            {"model": "endless", "stream": True, "messages": [{"role": "user", "content": "go"}]}
        ).encode()
        request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer sk-a\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        rss = psutil.Process().memory_info().rss
        conns = await unread(gw.port, request, STREAMS)
        peak = 0
        try:
            # Meanwhile another key's request to another upstream is answered at once.
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-b"}) as s:
                body = {"model": "other", "messages": [{"role": "user", "content": "hi"}]}
                t0 = time.monotonic()
                async with s.post(f"{gw.base_url}/chat/completions", json=body) as r:
                    assert r.status == 200, await r.text()
                assert time.monotonic() - t0 < 2.0
            # Every stream fills what lies between the cloud and its reader, stalls, and is
            # cut send_timeout_s later; half the pool at a time (128 upstream connections),
            # so the second half is cut one round after the first.
            deadline = time.monotonic() + 4 * (SEND_TIMEOUT_S + 3)
            while endless.opened < STREAMS or endless.open > 0:
                peak = max(peak, psutil.Process().memory_info().rss - rss)
                assert time.monotonic() < deadline, (endless.opened, endless.open)
                await asyncio.sleep(0.1)
            assert endless.opened == STREAMS
        finally:
            for _, w in conns:
                w.close()
        # Each stream held at most about a megabyte in the gateway while it lived.
        assert peak < STREAMS * 2**20, peak
        # The streams' clients were cut: what each got is far from the 160 MB the cloud had.
        for reader, _ in conns:
            got = 0
            with contextlib.suppress(ConnectionError):
                while chunk := await asyncio.wait_for(reader.read(2**16), 5):
                    got += len(chunk)
            assert got < 8 * 2**20, got
