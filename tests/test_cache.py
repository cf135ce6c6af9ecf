"""The response cache against a real redis-server: hits, streams, tenants, outages."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import openai

from tests.conftest import RedisServer, RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

Q = [{"role": "user", "content": "What is the capital of France?"}]


async def cached_gateway(
    factory: Any, cloud: FakeCloud, redis_url: str | None, **cache: Any
) -> RunningGateway:
    # A generous Redis timeout: these tests are about what is cached, not about a loaded
    # runner's 50 ms hiccup making the cache step aside for its retry interval.
    settings = {"redis_url": redis_url, "timeout_ms": 500, **cache}
    return await factory(**cloud_settings(cloud), cache=settings)  # type: ignore[no-any-return]


async def _ask(c: openai.AsyncOpenAI, **kw: Any) -> Any:
    return await c.chat.completions.with_raw_response.create(
        # temperature 0: only deterministic requests are cached (the default policy)
        **{"model": "cloud", "messages": Q, "temperature": 0, **kw}
    )


async def test_second_identical_request_is_a_hit(
    gateway_factory: Any, fake_cloud: FakeCloud, redis_server: RedisServer
) -> None:
    gw = await cached_gateway(gateway_factory, fake_cloud, redis_server.url)
    c = gw.client("sk-tenant-a")
    first = await _ask(c)
    assert first.headers["x-gateway-route"] == "cloud"
    assert first.headers["x-gateway-cache"] == "miss"
    await gw.settled()  # stored in the background
    second = await _ask(c)
    assert second.headers["x-gateway-route"] == "cache"
    assert second.headers["x-gateway-cache"] == "hit"
    assert fake_cloud.chat_calls == 1
    a, b = first.parse(), second.parse()
    assert a.choices[0].message.content == b.choices[0].message.content
    assert b.usage.prompt_tokens == a.usage.prompt_tokens  # honest usage of the answer
    assert b.usage.prompt_tokens_details.cached_tokens == a.usage.prompt_tokens
    r = redis_server.client()
    try:
        keys = r.keys("egw:cache:*")
        assert len(keys) >= 1
        assert r.ttl(keys[0]) > 0
    finally:
        r.close()


async def test_stream_is_stored_and_replayed(
    gateway_factory: Any, fake_cloud: FakeCloud, redis_server: RedisServer
) -> None:
    gw = await cached_gateway(gateway_factory, fake_cloud, redis_server.url)
    c = gw.client("sk-stream-tenant")
    q = [{"role": "user", "content": "Stream me the capital of Italy."}]

    async def stream() -> tuple[str, int, str]:
        raw = await c.chat.completions.with_raw_response.create(
            model="cloud", messages=q, stream=True, temperature=0
        )
        chunks = [ch async for ch in raw.parse()]
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        return text, len(chunks), raw.headers["x-gateway-route"]

    text1, _, route1 = await stream()
    await gw.settled()
    text2, n2, route2 = await stream()
    assert (route1, route2) == ("cloud", "cache")
    assert text2 == text1 and n2 >= 2
    assert fake_cloud.chat_calls == 1
    # An entry stored from a stream answers a plain request too.
    plain = await c.chat.completions.with_raw_response.create(
        model="cloud", messages=q, temperature=0
    )
    assert plain.headers["x-gateway-route"] == "cache"
    assert plain.parse().choices[0].message.content == text1


async def _stored(r: Any, n: int) -> None:
    """Wait (bounded) until the background store has written `n` entries."""
    for _ in range(60):
        if len(r.keys("egw:cache:*")) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the cache never held {n} entries")


async def test_other_api_key_misses(
    gateway_factory: Any, fake_cloud: FakeCloud, redis_server: RedisServer
) -> None:
    gw = await cached_gateway(gateway_factory, fake_cloud, redis_server.url)
    q = {"messages": [{"role": "user", "content": "Tenant isolation question."}]}
    r = redis_server.client()
    before = len(r.keys("egw:cache:*"))
    await _ask(gw.client("sk-one"), **q)
    await _stored(r, before + 1)
    other = await _ask(gw.client("sk-two"), **q)
    assert other.headers["x-gateway-cache"] == "miss"
    assert other.headers["x-gateway-route"] == "cloud"
    same = await _ask(gw.client("sk-one"), **q)
    assert same.headers["x-gateway-route"] == "cache"


async def test_cache_control_and_cacheability(
    gateway_factory: Any, fake_cloud: FakeCloud, redis_server: RedisServer
) -> None:
    gw = await cached_gateway(gateway_factory, fake_cloud, redis_server.url)
    c = gw.client("sk-cc")
    q = {"messages": [{"role": "user", "content": "Cache control question."}]}
    r = await _ask(c, **q, extra_headers={"Cache-Control": "no-store"})
    assert r.headers["x-gateway-cache"] == "miss"
    await gw.settled()
    r = await _ask(c, **q)
    assert r.headers["x-gateway-route"] == "cloud"  # nothing was stored
    await gw.settled()
    r = await _ask(c, **q, extra_headers={"Cache-Control": "no-cache"})
    assert r.headers["x-gateway-cache"] == "skip" and r.headers["x-gateway-route"] == "cloud"
    r = await _ask(c, **q, temperature=0.9)  # sampled: not cacheable in deterministic mode
    assert r.headers["x-gateway-cache"] == "skip"
    r = await _ask(c, **q)
    assert r.headers["x-gateway-route"] == "cache"


async def test_hit_served_while_cloud_fails(
    gateway_factory: Any, fake_cloud: FakeCloud, redis_server: RedisServer
) -> None:
    gw = await cached_gateway(gateway_factory, fake_cloud, redis_server.url)
    c = gw.client("sk-offline")
    await _ask(c)
    await gw.settled()
    await fake_cloud.set_mode("fail500")
    for _ in range(5):
        r = await _ask(c)
        assert r.headers["x-gateway-route"] == "cache"
    await fake_cloud.set_mode("refuse")
    r = await _ask(c, stream=True)
    assert r.headers["x-gateway-route"] == "cache"
    # A client that asked for a fresh answer never gets a cached one, offline or not.
    r = await _ask(c, max_tokens=4, extra_headers={"Cache-Control": "no-cache"})
    assert r.headers["x-gateway-route"] == "local"
    assert r.headers["x-gateway-degraded"] == "true"


async def test_redis_outage_never_fails_requests(
    gateway_factory: Any, fake_cloud: FakeCloud, own_redis: RedisServer
) -> None:
    gw = await cached_gateway(gateway_factory, fake_cloud, own_redis.url, retry_interval_s=0.3)
    c = gw.client("sk-outage")
    q = lambda i: {"messages": [{"role": "user", "content": f"outage question {i}"}]}  # noqa: E731
    r = await _ask(c, **q(0))
    assert r.http_response.status_code == 200
    own_redis.kill()
    for i in range(1, 6):
        r = await _ask(c, **q(i))
        assert r.http_response.status_code == 200
        assert r.headers["x-gateway-route"] == "cloud"
    async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics") as m:
        text = await m.text()
    assert "edge_gateway_cache_up 0.0" in text  # the outage is visible to operators
    assert re.search(r'edge_gateway_cache_errors_total\{op="(get|set)"\} [1-9]', text)
    own_redis.start()  # same port: the gateway reconnects by itself
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        await _ask(c, **q(99))
        await gw.settled()
        r = await _ask(c, **q(99))
        if r.headers["x-gateway-route"] == "cache":
            break
        assert asyncio.get_running_loop().time() < deadline, "caching did not resume"


async def test_in_process_lru_when_no_redis(gateway_factory: Any, fake_cloud: FakeCloud) -> None:
    gw = await cached_gateway(gateway_factory, fake_cloud, None)
    c = gw.client("sk-tenant-a")
    await _ask(c)
    await gw.settled()
    assert (await _ask(c)).headers["x-gateway-route"] == "cache"
