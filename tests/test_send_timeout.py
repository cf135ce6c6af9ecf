"""A client that reads nothing holds nothing for long (issue 33).

The probe: 100 connections asked for a stored response holding 7 MB of `tools` and read
nothing; RSS went 405 -> 1,623 MiB and every connection was still held after 100 s. Now a
connection whose client takes nothing for `server.send_timeout_s` is cut and its buffer
freed, while other clients are served.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aiohttp
import psutil

from tests.conftest import RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

SEND_TIMEOUT_S = 1.0
CONNECTIONS = 100


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
    conns = []
    for _ in range(CONNECTIONS):
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, limit=2**10)
        # The smallest receive buffer the kernel allows: the answer backs up at once.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writer.write(request)
        conns.append((reader, writer))
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

    await asyncio.sleep(SEND_TIMEOUT_S + 1.5)
    cut_by = time.monotonic() - t0
    grown = psutil.Process().memory_info().rss - rss
    await asyncio.wait_for(asyncio.gather(*(closed(r) for r, _ in conns)), 10)
    for _, w in conns:
        w.close()
    assert cut_by < SEND_TIMEOUT_S + 3
    # Each connection buffered at most its answer (under 1 MiB) until it was cut.
    assert grown < CONNECTIONS * 2 * 2**20, grown
