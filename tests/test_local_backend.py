"""The local model runs off the event loop behind a bounded queue and stops when abandoned."""

from __future__ import annotations

import asyncio
import statistics
import time

import aiohttp

from gateway.services import SERVICES
from tests.conftest import RunningGateway

LONG = {
    "model": "local",
    "stream": True,
    "max_tokens": 1500,
    "temperature": 0.9,
    "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}],
}


async def _read_some(resp: aiohttp.ClientResponse, frames: int) -> None:
    seen = 0
    async for line in resp.content:
        if line.startswith(b"data:"):
            seen += 1
            if seen >= frames:
                return


async def test_healthz_answers_while_generating(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{gateway.base_url}/chat/completions", json=LONG) as stream:
        assert stream.status == 200
        await _read_some(stream, 3)  # generation is under way
        timings = []
        for _ in range(10):
            t0 = time.perf_counter()
            async with http.get(f"{gateway.url}/healthz") as r:
                assert r.status == 200
            timings.append(time.perf_counter() - t0)
            await asyncio.sleep(0.02)
        # The bar: /healthz under 50 ms while the model generates (loop not blocked).
        assert statistics.median(timings) < 0.05, timings


async def test_full_queue_answers_429_with_retry_after(gateway_factory, http) -> None:  # type: ignore[no-untyped-def]
    gw: RunningGateway = await gateway_factory(local={"max_queue": 1, "parallel": 1})
    url = f"{gw.base_url}/chat/completions"
    first = await http.post(url, json=LONG)  # generating
    await _read_some(first, 2)
    second = asyncio.ensure_future(
        http.post(url, json={**LONG, "stream": False, "max_tokens": 4})
    )  # waits in the queue
    local = gw.app[SERVICES].local
    deadline = time.monotonic() + 30
    while local.queue_depth < 1:
        assert time.monotonic() < deadline, "the second request never queued"
        await asyncio.sleep(0.01)
    async with http.post(url, json=LONG) as third:
        assert third.status == 429
        assert int(third.headers["Retry-After"]) >= 1
        err = (await third.json())["error"]
        assert err["code"] == "local_queue_full" and err["type"] == "rate_limit_error"
    first.close()  # walk away: frees the worker for the queued request
    resp = await asyncio.wait_for(second, 30)
    assert resp.status == 200
    resp.close()


async def test_abandoned_stream_stops_generation(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    from gateway.services import SERVICES

    local = gateway.app[SERVICES].local
    resp = await http.post(f"{gateway.base_url}/chat/completions", json=LONG)
    await _read_some(resp, 3)
    resp.close()  # the client walks away mid-stream
    t0 = time.monotonic()
    while local.in_flight or local.queue_depth:
        assert time.monotonic() - t0 < 10, "generation kept running after the client left"
        await asyncio.sleep(0.05)
    body = {"model": "local", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}
    async with http.post(
        f"{gateway.base_url}/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=10)
    ) as r:
        assert r.status == 200
