"""A thousand references to one large stored item are not a thousand copies of it (issue 33).

The probe stored a response whose `function_call` item carried 250 KB of `arguments`, then
sent one ~45 KB request holding 1,022 references to it: the cloud received a 255 MB body,
RSS went 397 -> 914 MiB and /healthz stalled 21.7 s; on the state Redis its script returned
the item once per reference. Now the store is asked for each distinct id once, and the input's
size with every reference expanded is bounded by `server.max_body_bytes` before anything is
built from it: a 413 naming the reference, at once, the cloud not called, /healthz answering.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import psutil
import pytest

from tests.conftest import RedisServer, RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

BIG = "x" * 250_000


def call_item() -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": "fc_big",
        "call_id": "call_big",
        "name": "lookup",
        "arguments": '{"q": "' + BIG + '"}',
    }


@pytest.mark.parametrize("shape", ["in_process", "redis"])
async def test_a_thousand_references_to_a_large_item_are_refused_at_once(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
    shape: str,
) -> None:
    settings: dict[str, Any] = {
        **cloud_settings(fake_cloud),
        "server": {"max_body_bytes": 2 * 2**20},
    }
    if shape == "redis":
        settings["state"] = {"redis_url": redis_server.url}
    gw: RunningGateway = await gateway_factory(**settings)
    url = f"{gw.base_url}/responses"
    first = {
        "model": "gpt-fake",
        "input": [
            call_item(),
            {"type": "function_call_output", "call_id": "call_big", "output": "ok"},
            {"role": "user", "content": "thanks"},
        ],
        "max_output_tokens": 4,
    }
    async with http.post(url, json=first) as r:
        assert r.status == 200, await r.text()
    sent_before = len(fake_cloud.received)
    rss = psutil.Process().memory_info().rss

    stalls: list[float] = []
    done = asyncio.Event()

    async def probe() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            async with http.get(f"{gw.url}/healthz") as r:
                assert r.status == 200
            stalls.append(time.monotonic() - t0)
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(probe())
    refs = [{"type": "item_reference", "id": "fc_big"} for _ in range(1000)]
    body = {"model": "gpt-fake", "input": [*refs, {"role": "user", "content": "again"}]}
    t0 = time.monotonic()
    async with http.post(url, json=body) as r:
        err = await r.json()
    seconds = time.monotonic() - t0
    done.set()
    await watcher

    assert r.status == 413, err
    assert err["error"]["code"] == "request_too_large" and err["error"]["param"].startswith(
        "input["
    ), err
    assert seconds < 2.0, seconds
    assert len(fake_cloud.received) == sent_before  # the cloud was not called
    assert max(stalls) < 0.5, max(stalls)
    assert psutil.Process().memory_info().rss - rss < 64 * 2**20

    # A few references to it, within the bound, still work: each expands to the item.
    few = {"model": "gpt-fake", "input": [*refs[:3], {"role": "user", "content": "again"}]}
    async with http.post(url, json=few) as r:
        assert r.status == 200, await r.text()
    assert fake_cloud.received[-1].count(b'"' + BIG[:1000].encode()) == 3
