"""Auth, per-key limits, input limits, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import aiohttp
import openai
import pytest

from tests.conftest import GatewayProcess, RedisServer, RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

HELLO = [{"role": "user", "content": "Say hello in French."}]
CHAT = {"model": "local", "messages": HELLO, "max_tokens": 4}


@pytest.fixture
async def locked(gateway_factory: Any) -> RunningGateway:
    return await gateway_factory(  # type: ignore[no-any-return]
        server={"api_keys": ["sk-good"], "admin_key": "sk-admin"}
    )


async def test_api_keys(locked: RunningGateway, http: aiohttp.ClientSession) -> None:
    url = f"{locked.base_url}/chat/completions"
    for headers in ({}, {"Authorization": "Bearer sk-bad"}, {"Authorization": "Basic x"}):
        async with http.post(url, json=CHAT, headers=headers) as r:
            assert r.status == 401
            body = await r.json()
            assert body["error"]["type"] == "authentication_error"
            assert "sk-bad" not in json.dumps(body)
    async with http.post(url, json=CHAT, headers={"Authorization": "Bearer sk-good"}) as r:
        assert r.status == 200
    async with http.get(f"{locked.base_url}/models") as r:
        assert r.status == 401
    for path in ("/healthz", "/readyz", "/metrics"):
        async with http.get(locked.url + path) as r:
            assert r.status == 200, path


async def test_admin_key(locked: RunningGateway, http: aiohttp.ClientSession) -> None:
    url = f"{locked.url}/admin/reload"
    async with http.post(url, headers={"Authorization": "Bearer sk-good"}) as r:
        assert r.status in (401, 403)
    async with http.post(url) as r:
        assert r.status == 401
    async with http.post(url, headers={"Authorization": "Bearer sk-admin"}) as r:
        assert r.status == 200


async def test_sdk_sees_authentication_error(locked: RunningGateway) -> None:
    c = openai.AsyncOpenAI(base_url=locked.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await c.models.list()


async def test_body_too_large(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    body = (
        b'{"model": "local", "messages": [{"role": "user", "content": "'
        + b"a" * (20 * 1024 * 1024)
        + b'"}]}'
    )
    async with http.post(
        f"{gateway.base_url}/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    ) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "request_too_large"


MALFORMED: list[Any] = [
    None,
    0,
    "x",
    [],
    {},
    {"model": None},
    {"model": "local", "messages": None},
    {"model": "local", "messages": [None]},
    {"model": "local", "messages": [{}]},
    {"model": "local", "messages": [{"role": "user"}]},
    {"model": "local", "messages": [{"role": "user", "content": [{"type": 5}]}]},
    {"model": "local", "messages": [{"role": "user", "content": [{}]}]},
    {"model": "local", "messages": HELLO, "max_tokens": 1.5},
    {"model": "local", "messages": HELLO, "max_tokens": True},
    {"model": "local", "messages": HELLO, "n": 1000},
    {"model": "local", "messages": HELLO, "n": 50},
    {"model": "local", "messages": HELLO, "stop": [1, 2]},
    {"model": "local", "messages": HELLO, "temperature": "hot"},
    {"model": "local", "messages": HELLO, "top_p": -1},
    # (`"stream": null` is no longer here: the spec marks it nullable, null is absent.)
    {"model": "local", "messages": HELLO, "stream_options": "x"},
    {"model": "local", "messages": HELLO, "response_format": "json"},
    {"model": "local", "messages": HELLO, "tools": {"a": 1}},
    {"model": "local", "messages": [{"role": "user", "content": "hi"}] * 2000},
    {"model": "x" * 10000, "messages": HELLO},
    {"model": "local", "messages": HELLO, "seed": "abc"},
    {"model": "local", "messages": HELLO, "logprobs": "yes"},
]


async def test_malformed_bodies_never_5xx(
    locked: RunningGateway, http: aiohttp.ClientSession
) -> None:
    h = {"Authorization": "Bearer sk-good"}
    for body in MALFORMED:
        for path in ("/chat/completions", "/completions", "/route"):
            async with http.post(locked.base_url + path, data=json.dumps(body), headers=h) as r:
                assert 400 <= r.status < 500, (path, body, r.status)
                err = (await r.json())["error"]
                assert set(err) == {"message", "type", "param", "code"}
    for raw in (b"\x00\x01", b"{" * 100000, b'{"a":' * 5000, b"\xff"):
        async with http.post(f"{locked.base_url}/chat/completions", data=raw, headers=h) as r:
            assert 400 <= r.status < 500


async def test_requests_per_minute(gateway_factory: Any, http: aiohttp.ClientSession) -> None:
    # Limits are per configured key; without keys every caller shares one set of counters.
    gw = await gateway_factory(limits={"requests_per_minute": 2}, server={"api_keys": ["a", "b"]})
    url = f"{gw.base_url}/chat/completions"
    statuses = []
    # Admission comes before routing: an unknown model (404) is counted without generating,
    # which keeps all four requests well inside one minute window.
    body = {**CHAT, "model": "no-such-model"}
    for key in ("a", "a", "a", "b"):
        async with http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert (await r.json())["error"]["code"] == "rate_limit_exceeded"
    assert statuses == [404, 404, 429, 404]


async def test_tokens_per_minute_shared_through_redis(
    gateway_factory: Any, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    limits = {"tokens_per_minute": 10, "redis_url": redis_server.url}
    gw1 = await gateway_factory(limits=limits)
    gw2 = await gateway_factory(limits=limits)
    h = {"Authorization": f"Bearer tpm-{time.time()}"}
    body = {**CHAT, "max_tokens": 8}
    async with http.post(f"{gw1.base_url}/chat/completions", json=body, headers=h) as r:
        assert r.status == 200  # 20-odd tokens used: over the limit from now on
    await gw1.settled()
    async with http.post(f"{gw2.base_url}/chat/completions", json=body, headers=h) as r:
        assert r.status == 429  # the other gateway sees the same counter
        assert (await r.json())["error"]["code"] == "tokens_rate_limit_exceeded"


async def test_daily_budget_routes_local(gateway_factory: Any, fake_cloud: FakeCloud) -> None:
    gw = await gateway_factory(
        **cloud_settings(fake_cloud), limits={"daily_cloud_budget_usd": 1e-9}
    )
    c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="sk-budget", max_retries=0)
    first = await c.chat.completions.with_raw_response.create(
        model="cloud", messages=HELLO, extra_headers={"Cache-Control": "no-store"}
    )
    assert first.headers["x-gateway-route"] == "cloud"
    await gw.settled()
    second = await c.chat.completions.with_raw_response.create(
        model="cloud", messages=HELLO, max_tokens=4, extra_headers={"Cache-Control": "no-store"}
    )
    assert second.headers["x-gateway-route"] == "local"
    assert "budget-exceeded" in second.headers["x-gateway-reason"]


def test_sigterm_drains_in_flight_then_exits() -> None:
    gp = GatewayProcess(env={"GATEWAY_SERVER__SHUTDOWN_GRACE_S": "20"})
    try:
        gp.wait_ready()

        async def run() -> tuple[int, bytes]:
            async with aiohttp.ClientSession() as s:
                body = {
                    **CHAT,
                    "max_tokens": 200,
                    "stream": True,
                    "messages": [{"role": "user", "content": "Tell me a long story."}],
                }
                async with s.post(f"{gp.base_url}/chat/completions", json=body) as r:
                    first = await r.content.readline()
                    assert first.startswith(b"data:")
                    os.kill(gp.proc.pid, signal.SIGTERM)
                    rest = await r.content.read()
                    return r.status, rest

        status, rest = asyncio.run(run())
        assert status == 200
        assert rest.rstrip().endswith(b"data: [DONE]")  # the in-flight stream was finished
        assert gp.proc.wait(timeout=30) == 0
    finally:
        gp.stop()


async def test_hashed_keys_file(
    gateway_factory: Any, http: aiohttp.ClientSession, tmp_path: Any
) -> None:
    import hashlib

    keys = tmp_path / "keys.txt"
    keys.write_text("# client keys, sha256 hex\n" + hashlib.sha256(b"sk-filed").hexdigest() + "\n")
    gw = await gateway_factory(server={"api_keys_file": str(keys)})
    url = f"{gw.base_url}/chat/completions"
    async with http.post(url, json=CHAT, headers={"Authorization": "Bearer sk-filed"}) as r:
        assert r.status == 200
    async with http.post(url, json=CHAT, headers={"Authorization": "Bearer sk-other"}) as r:
        assert r.status == 401
