"""Per-key limits under concurrency, shared by real gateway processes on real Redis servers.

Issue 24: 16 concurrent cloud requests under a 100 tokens/minute limit were all admitted
(limits checked before and charged after). Now admission reserves prompt + max_tokens (and
their cloud price on the daily budget) atomically, so however many replicas serve a burst,
what is admitted exceeds a limit by at most one request's reservation. The same holds on one
Redis, a Redis Cluster of three masters and a master behind Sentinels; the response cache
works on the Cluster and behind Sentinel; a Redis that is down or paused fails open or closed
as configured, counted by `edge_gateway_limits_unenforced_total`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from gateway.costs import Prices
from gateway.http.auth import tenant_id
from gateway.limits import Limiter, MemoryCounters, estimate_prompt_tokens
from gateway.redis_client import connect, parse, redacted
from gateway.schemas import ChatRequest
from gateway.settings import LimitSettings
from tests.conftest import GatewayProcess, RedisServer, RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud
from tests.redis_servers import RedisCluster, SentinelGroup

N = 16
MAX_TOKENS = 16
TPM = 100
MESSAGES = [{"role": "user", "content": "Say OK."}]
SHAPES = ["single", "cluster", "sentinel"]


def reservation_tokens() -> int:
    req = ChatRequest.model_validate(
        {"model": "cloud", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    )
    return estimate_prompt_tokens(req) + MAX_TOKENS


def reservation_usd() -> float:
    prompt = reservation_tokens() - MAX_TOKENS
    return Prices(["openai/gpt-4o-mini"]).cost("openai/gpt-4o-mini", prompt, MAX_TOKENS)


def shape_url(request: pytest.FixtureRequest, shape: str) -> str:
    fixture = {"single": "redis_server", "cluster": "redis_cluster", "sentinel": "redis_sentinel"}
    server = request.getfixturevalue(fixture[shape])
    return str(server.url)


def sync_client(request: pytest.FixtureRequest, shape: str) -> Any:
    """A synchronous client on the shape's data, for reading the counters back."""
    if shape == "single":
        return request.getfixturevalue("redis_server").client()
    if shape == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.client()
    group: SentinelGroup = request.getfixturevalue("redis_sentinel")
    return group.master()


@pytest.fixture
def slow_cloud() -> Iterator[FakeCloud]:
    """A cloud that takes a second to answer, in its own thread: a burst is all in flight
    together, and the test's loop blocking on a process start never starves it."""
    cloud = FakeCloud(slow_s=1.0).start_in_thread()
    cloud.set_mode_threadsafe("slow")
    yield cloud
    cloud.stop_thread()


def two_gateways(cloud: FakeCloud, key: str, limits: dict[str, Any]) -> list[GatewayProcess]:
    env = {
        "FAKE_CLOUD_KEY": "sk-fake-cloud-secret-123",
        "GATEWAY_CLOUD__MODELS": json.dumps([cloud.model_entry()]),
        "GATEWAY_SERVER__API_KEYS": json.dumps([key]),
        "GATEWAY_SERVER__LOG_LEVEL": "WARNING",
        **{f"GATEWAY_LIMITS__{k.upper()}": str(v) for k, v in limits.items()},
    }
    procs = [GatewayProcess(env=env), GatewayProcess(env=env)]
    try:
        for p in procs:
            p.wait_ready(timeout=120)
    except BaseException:
        for p in procs:
            print(p.stop())
        raise
    return procs


async def burst(gateways: list[GatewayProcess], key: str) -> list[tuple[int, dict[str, Any]]]:
    """N concurrent cloud requests, round-robin over the gateways, as a load balancer would."""
    headers = {"Authorization": f"Bearer {key}", "Cache-Control": "no-store"}
    body = {"model": "cloud", "messages": MESSAGES, "max_tokens": MAX_TOKENS}

    async def one(s: aiohttp.ClientSession, i: int) -> tuple[int, dict[str, Any]]:
        url = gateways[i % len(gateways)].base_url + "/chat/completions"
        async with s.post(url, json=body, headers=headers) as r:
            return r.status, await r.json()

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        return await asyncio.gather(*(one(s, i) for i in range(N)))


def counter_total(client: Any, pattern: str) -> float:
    return sum(float(client.get(k) or 0) for k in client.scan_iter(match=pattern, count=1000))


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_burst_on_two_replicas_stays_within_tokens_per_minute(
    shape: str, request: pytest.FixtureRequest, slow_cloud: FakeCloud
) -> None:
    url = shape_url(request, shape)
    key = f"sk-tpm-{uuid.uuid4().hex[:8]}"
    gateways = two_gateways(slow_cloud, key, {"tokens_per_minute": TPM, "redis_url": url})
    try:
        results = await burst(gateways, key)
    finally:
        logs = [g.stop() for g in gateways]
    admitted = [body for status, body in results if status == 200]
    refused = [body for status, body in results if status == 429]
    assert len(admitted) + len(refused) == N, (results, logs)
    assert {b["error"]["code"] for b in refused} == {"tokens_rate_limit_exceeded"}, logs
    each = reservation_tokens()
    # Admitted while used + reserved < limit: at most one reservation past it.
    assert 1 <= len(admitted) <= math.ceil(TPM / each), (len(admitted), each)
    assert len(admitted) * each <= TPM + each
    # Settled: the window holds what the admitted answers used, not what they reserved.
    used = sum(b["usage"]["total_tokens"] for b in admitted)
    client = sync_client(request, shape)
    pattern = f"egw:lim:{{{tenant_id(key)}}}:tok:*"
    deadline = time.monotonic() + 10
    # The gateways settle in the background, in other processes: nothing here to wait on.
    while counter_total(client, pattern) != used and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    assert counter_total(client, pattern) == used
    print(f"{shape}: {len(admitted)}/{N} admitted, reservation {each}, limit {TPM}")


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_burst_on_two_replicas_stays_within_the_daily_budget(
    shape: str, request: pytest.FixtureRequest, slow_cloud: FakeCloud
) -> None:
    url = shape_url(request, shape)
    key = f"sk-usd-{uuid.uuid4().hex[:8]}"
    each = reservation_usd()
    budget = 2.5 * each  # three admitted at most (0, 1 and 2 reservations are below it)
    limits = {"daily_cloud_budget_usd": budget, "budget_exceeded": "refuse", "redis_url": url}
    gateways = two_gateways(slow_cloud, key, limits)
    try:
        results = await burst(gateways, key)
    finally:
        logs = [g.stop() for g in gateways]
    admitted = [b for status, b in results if status == 200]
    refused = [b for status, b in results if status == 429]
    assert len(admitted) + len(refused) == N, (results, logs)
    assert {b["error"]["code"] for b in refused} == {"budget_exceeded"}, logs
    assert 1 <= len(admitted) <= math.ceil(budget / each) == 3, len(admitted)
    print(f"{shape}: {len(admitted)}/{N} admitted, reservation ${each:.3g}, budget ${budget:.3g}")


# -- the same rules in process -------------------------------------------------------------------


async def test_in_process_limits_reserve_and_settle_alike() -> None:
    limiter = Limiter(LimitSettings(tokens_per_minute=TPM), MemoryCounters())
    req = ChatRequest.model_validate(
        {"model": "cloud", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
    )
    results = await asyncio.gather(
        *(limiter.admit("t", req) for _ in range(N)), return_exceptions=True
    )
    admitted = [a for a in results if not isinstance(a, BaseException)]
    each = reservation_tokens()
    assert len(admitted) == math.ceil(TPM / each)
    key = admitted[0].token_key
    assert key is not None
    assert await limiter.counters.get(key) == len(admitted) * each
    limiter.record("t", 5, 0.0, admitted[0])  # used 5 of its reservation: the rest back
    limiter.release(admitted[1])  # failed before any answer: all back
    limiter.release(admitted[0])  # settled once only
    await limiter.drain()  # the settles run in the background
    assert await limiter.counters.get(key) == (len(admitted) - 2) * each + 5
    await limiter.close()


async def test_a_request_without_max_tokens_reserves_the_default() -> None:
    settings = LimitSettings(tokens_per_minute=1_000, default_max_tokens=300)
    limiter = Limiter(settings, MemoryCounters())
    req = ChatRequest.model_validate({"model": "cloud", "messages": MESSAGES})
    admission = await limiter.admit("t", req)
    assert admission.tokens == estimate_prompt_tokens(req) + 300


# -- Redis down or slow --------------------------------------------------------------------------


async def _metric(http: aiohttp.ClientSession, gw: RunningGateway, stage: str) -> float:
    async with http.get(gw.url + "/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("edge_gateway_limits_unenforced_total{") and f'stage="{stage}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("fail_mode", ["open", "closed"])
async def test_a_paused_redis_fails_open_or_closed_and_is_counted(
    fail_mode: str,
    gateway_factory: Any,
    http: aiohttp.ClientSession,
    own_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = await gateway_factory(
        limits={
            "requests_per_minute": 1_000,
            "redis_url": own_redis.url,
            "timeout_s": 0.2,
            "fail_mode": fail_mode,
        }
    )
    url = gw.base_url + "/chat/completions"
    body = {"model": "no-such-model", "messages": MESSAGES}  # admitted, then a cheap 404
    async with http.post(url, json=body) as r:
        assert r.status == 404  # Redis up: limits checked
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # a Redis that accepts and never answers
    try:
        async with http.post(url, json=body) as r:
            status, err = r.status, (await r.json())["error"]
            retry_after = r.headers.get("Retry-After")
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    if fail_mode == "open":
        assert status == 404  # went on, unchecked
    else:
        assert status == 503 and err["code"] == "limits_unavailable", err
        assert err["type"] == "service_unavailable" and retry_after == "1"
    assert await _metric(http, gw, "admit") >= 1
    assert any("limit counters unavailable" in rec.getMessage() for rec in caplog.records)
    async with http.post(url, json=body) as r:
        assert r.status == 404  # back to normal once Redis answers again


async def test_a_redis_that_is_down_is_an_error_not_a_timeout(
    gateway_factory: Any, http: aiohttp.ClientSession, own_redis: RedisServer
) -> None:
    gw = await gateway_factory(
        limits={"requests_per_minute": 1_000, "redis_url": own_redis.url, "fail_mode": "closed"}
    )
    own_redis.kill()
    body = {"model": "no-such-model", "messages": MESSAGES}
    async with http.post(gw.base_url + "/chat/completions", json=body) as r:
        assert r.status == 503
        assert (await r.json())["error"]["code"] == "limits_unavailable"
    async with http.get(gw.url + "/metrics") as r:
        text = await r.text()
    assert 'edge_gateway_limits_unenforced_total{reason="error",stage="admit"} 1.0' in text


# -- the response cache on a Cluster and behind Sentinel ---------------------------------------


@pytest.mark.parametrize("shape", ["cluster", "sentinel"])
async def test_the_cache_works_on_a_cluster_and_behind_sentinel(
    shape: str, request: pytest.FixtureRequest, gateway_factory: Any, fake_cloud: FakeCloud
) -> None:
    url = shape_url(request, shape)
    prefix = f"egw:cache:{uuid.uuid4().hex[:8]}:"
    gw = await gateway_factory(
        **cloud_settings(fake_cloud),
        cache={"redis_url": url, "timeout_ms": 1000, "key_prefix": prefix},
    )
    body = {"model": "cloud", "messages": MESSAGES, "temperature": 0, "max_tokens": 8}
    async with aiohttp.ClientSession() as s:
        seen = []
        for _ in range(2):
            async with s.post(gw.base_url + "/chat/completions", json=body) as r:
                assert r.status == 200
                seen.append(r.headers["x-gateway-cache"])
    assert seen == ["miss", "hit"]
    assert fake_cloud.chat_calls == 1
    assert list(sync_client(request, shape).scan_iter(match=prefix + "*"))


async def test_limits_keep_working_after_a_sentinel_failover(
    own_redis_sentinel: SentinelGroup,
) -> None:
    counters_url = own_redis_sentinel.url
    from gateway.limits import RedisCounters

    limiter = Limiter(
        LimitSettings(requests_per_minute=3),
        RedisCounters(counters_url, timeout_s=2.0),
    )
    try:
        await limiter.admit("t")
        own_redis_sentinel.failover()
        # The first command after the switch may meet the demoted master once.
        for _ in range(20):
            try:
                await limiter.admit("t")
                break
            except Exception:
                await asyncio.sleep(0.25)
        await limiter.admit("t")
        with pytest.raises(Exception) as refused:
            await limiter.admit("t")
        assert getattr(refused.value, "code", None) == "rate_limit_exceeded"
    finally:
        await limiter.close()


# -- URL forms ---------------------------------------------------------------------------------


def test_url_forms_parse_to_their_shapes() -> None:
    assert parse("redis://h:1/2").kind == "single"
    assert parse("rediss://h:1/2").tls
    assert parse("unix:///run/redis.sock?db=1").kind == "single"
    s = parse("redis+sentinel://:pw@a:26379,b/mymaster/3?sentinel_password=sp")
    assert (s.kind, s.hosts, s.service, s.db) == (
        "sentinel",
        (("a", 26379), ("b", 26379)),
        "mymaster",
        3,
    )
    assert (s.password, s.sentinel_password) == ("pw", "sp")
    c = parse("rediss+cluster://u:pw@a:7000,[::1]:7001")
    assert (c.kind, c.hosts, c.tls, c.username) == (
        "cluster",
        (("a", 7000), ("::1", 7001)),
        True,
        "u",
    )
    assert parse("redis+cluster://a:7000/0").db == 0
    assert "pw" not in redacted("redis+sentinel://:pw@a:1/m") and "pw" not in repr(s)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://a:7000/1", "only database 0"),
        ("redis+sentinel://a:26379", "service_name"),
        ("memcached://a", "unsupported"),
        ("redis+cluster://a:x", "bad port"),
    ],
)
def test_urls_a_shape_cannot_take_are_refused_at_start_up(url: str, why: str) -> None:
    from gateway.settings import SettingsError, load_settings

    with pytest.raises((ValueError, SettingsError)) as err:
        load_settings(limits={"redis_url": url})
    assert why in str(err.value)
    with pytest.raises(ValueError):
        connect(url)


async def test_a_settle_that_cannot_reach_the_counters_is_counted() -> None:
    class Failing(MemoryCounters):
        async def add(self, key: str, amount: float, ttl_s: int) -> float:
            raise ConnectionError("down")

    seen: list[tuple[str, str]] = []
    limiter = Limiter(
        LimitSettings(tokens_per_minute=TPM),
        Failing(),
        on_unenforced=lambda stage, reason: seen.append((stage, reason)),
    )
    req = ChatRequest.model_validate({"model": "cloud", "messages": MESSAGES, "max_tokens": 4})
    admission = await limiter.admit("t", req)
    limiter.record("t", 1, 0.0, admission)
    await limiter.close()
    assert seen == [("settle", "error")]
