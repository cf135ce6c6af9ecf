"""Chaos: the gateway process against every fault of the fake cloud, Redis dying, a saturated
local queue and clients walking away. Nothing may hang, be lost or take the gateway down."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import aiohttp
import psutil
import pytest

from tests.conftest import GatewayProcess, RedisServer
from tests.fakes.cloud import FakeCloud

pytestmark = pytest.mark.chaos

MODES = ["flaky", "fail500", "fail429", "hang", "drop", "slow", "refuse"]
BOUND_S = 30.0  # no request may outlive this
PROMPTS = [
    "Say hello in French.",
    "Prove step by step that sqrt(2) is irrational, then write Python code that checks "
    "the first 1000 fractions and explain its complexity.",
    "What is the capital of Spain?",
]


@pytest.fixture
def chaos_env(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[GatewayProcess, FakeCloud, RedisServer]]:
    cloud = FakeCloud(slow_s=1.0).start_in_thread()
    redis = RedisServer().start()
    env = {
        "FAKE_CLOUD_KEY": "sk-chaos-secret",
        "GATEWAY_CLOUD__MODELS": json.dumps([cloud.model_entry()]),
        "GATEWAY_CLOUD__FIRST_BYTE_TIMEOUT_S": "3",
        "GATEWAY_CLOUD__CONNECT_TIMEOUT_S": "1",
        "GATEWAY_CLOUD__READ_TIMEOUT_S": "5",
        "GATEWAY_CLOUD__PROBE_INTERVAL_S": "0.5",
        "GATEWAY_CACHE__REDIS_URL": redis.url,
        "GATEWAY_CACHE__RETRY_INTERVAL_S": "0.5",
        "GATEWAY_LOCAL__MAX_QUEUE": "8",
        "GATEWAY_SERVER__LOG_LEVEL": "WARNING",
    }
    gp = GatewayProcess(env=env)
    try:
        gp.wait_ready()
        yield gp, cloud, redis
    finally:
        log = gp.stop()
        cloud.stop_thread()
        redis.kill()
        assert "sk-chaos-secret" not in log  # secrets never reach the logs


async def one(
    session: aiohttp.ClientSession,
    url: str,
    *,
    model: str,
    stream: bool,
    prompt: str,
    walk_away: bool,
    seed: int,
    max_tokens: int = 12,
) -> str:
    """One request, classified: ok, error (OpenAI-shaped), stream_error, walked_away."""
    body = {
        "model": model,
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": f"{prompt} #{seed % 5}"}],
    }
    async with session.post(f"{url}/v1/chat/completions", json=body) as r:
        if r.status != 200:
            err = (await r.json())["error"]
            assert set(err) == {"message", "type", "param", "code"}, err
            assert r.status in (400, 404, 429, 502, 503, 504), (r.status, err)
            return f"error_{r.status}"
        if not stream:
            data = await r.json()
            assert data["choices"][0]["message"]["content"] is not None
            assert data["usage"]["total_tokens"] >= 0
            return "ok"
        frames = []
        async for line in r.content:
            if line.startswith(b"data:"):
                frames.append(line.strip())
                if walk_away and len(frames) >= 2:
                    return "walked_away"  # the context manager closes the connection
        assert frames, "an empty stream"
        if frames[-1] == b"data: [DONE]":
            return "ok"
        last = json.loads(frames[-1][5:])
        assert set(last["error"]) == {"message", "type", "param", "code"}, last
        return "stream_error"


async def _metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    async with session.get(f"{url}/metrics") as r:
        text = await r.text()
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


async def test_chaos_nothing_hangs_or_is_lost(
    chaos_env: tuple[GatewayProcess, FakeCloud, RedisServer],
) -> None:
    gp, cloud, redis = chaos_env
    rng = random.Random(7)
    proc = psutil.Process(gp.proc.pid)
    outcomes: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=BOUND_S)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        # Warm up every path once, then take the memory baseline.
        for model in ("local", "cloud"):
            await one(
                s, gp.url, model=model, stream=False, prompt=PROMPTS[0], walk_away=False, seed=0
            )
        rss_start = proc.memory_info().rss

        sem = asyncio.Semaphore(6)

        async def bounded(**kw: Any) -> str:
            async with sem:
                t0 = time.monotonic()
                try:
                    return await one(s, gp.url, **kw)
                except TimeoutError:
                    pytest.fail(f"request outlived {BOUND_S} s: {kw}")
                finally:
                    assert time.monotonic() - t0 < BOUND_S + 1

        seed = 0
        for i, mode in enumerate(MODES):
            cloud.set_mode_threadsafe(mode)
            if i == 2:
                redis.kill()  # Redis dies mid-run ...
            if i == 5:
                redis.start()  # ... and comes back on the same port
            jobs = []
            for _ in range(19):
                seed += 1
                jobs.append(
                    bounded(
                        model=rng.choice(["auto", "cloud", "auto", "local"]),
                        stream=rng.random() < 0.5,
                        prompt=rng.choice(PROMPTS),
                        walk_away=rng.random() < 0.15,
                        seed=seed,
                    )
                )
            results = await asyncio.gather(*jobs)
            outcomes.update(results)
            print(mode, dict(Counter(results)))
            async with s.get(f"{gp.url}/healthz") as r:
                assert r.status == 200, f"gateway down after mode {mode}"

        # Saturate the local queue: the excess gets a clean 429, nothing waits unbounded.
        cloud.set_mode_threadsafe("ok")
        burst = await asyncio.gather(
            *[
                one(
                    s,
                    gp.url,
                    model="local",
                    stream=False,
                    walk_away=False,
                    max_tokens=64,
                    prompt="Write a long story about a lighthouse.",
                    seed=100 + k,
                )
                for k in range(30)
            ]
        )
        assert "error_429" in burst and "ok" in burst
        outcomes.update(burst)

        # Afterwards: up, ready, the local worker idle again, memory bounded.
        async with s.get(f"{gp.url}/readyz") as r:
            assert r.status == 200
        deadline = time.monotonic() + 10
        while await _metric(s, gp.url, "edge_gateway_local_in_flight") > 0:
            assert time.monotonic() < deadline, "local generation kept running"
            await asyncio.sleep(0.2)
        growth_mb = (proc.memory_info().rss - rss_start) / 2**20
        assert growth_mb < 300, f"RSS grew by {growth_mb:.0f} MB"
        assert gp.proc.poll() is None

    total = sum(outcomes.values())
    assert total >= 130, outcomes
    assert outcomes["ok"] > total / 3, outcomes  # degraded, not dead
    print(
        f"\nchaos outcomes over {total} requests: {dict(outcomes)}; RSS growth {growth_mb:.1f} MB"
    )
