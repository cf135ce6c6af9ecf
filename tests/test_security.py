"""Clients cannot steer the cloud call, leak the upstream key, or stall the event loop.

One test (or parametrised case) per finding of the adversarial probe in issue 10.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.limits import MemoryCounters
from gateway.routing.live_policy import PolicyStore
from tests.conftest import GatewayProcess, RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

KEY = "sk-fake-cloud-secret-123"  # what the fake_cloud fixture puts in FAKE_CLOUD_KEY
HELLO = [{"role": "user", "content": "Say hello in French."}]
LONG_STORY = {
    "model": "local",
    "stream": True,
    "max_tokens": 2000,
    # Greedy: SmolLM2 then runs the full 2000 tokens (~20 s here); sampled, it sometimes
    # stops within a second or two, and the drain and timeout tests need a stream still going.
    "temperature": 0,
    "messages": [{"role": "user", "content": "Write a very long story about a lighthouse."}],
}


@pytest.fixture
async def attacker() -> AsyncIterator[FakeCloud]:
    """A host the operator never configured; every request that reaches it is recorded."""
    host = await FakeCloud().start()
    yield host
    await host.stop()


def _hostile_fields(attacker: FakeCloud) -> dict[str, Any]:
    """litellm call options a client might smuggle in as request fields."""
    evil = attacker.base_url
    return {
        "base_url": evil,
        "api_base": evil,
        "api_key": "sk-attacker",
        "headers": {"X-Injected": "1", "Authorization": "Bearer sk-attacker"},
        "extra_headers": {"X-Injected": "1", "Authorization": "Bearer sk-attacker"},
        "custom_llm_provider": "openai",
        "mock_response": "pwned by the client",
        "timeout": 0.001,
        "num_retries": 7,
        "metadata": {"x": 1},
        "litellm_logging_obj": None,
        "callbacks": ["langfuse"],
        "api_version": "evil",
        "organization": "evil-org",
        "model_list": [{"model_name": "x", "litellm_params": {"api_base": evil}}],
        "proxy_server_request": {"url": evil},
        "litellm_params": {"api_base": evil},
    }


@pytest.mark.parametrize("passthrough", [True, False], ids=["passthrough", "litellm"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_client_fields_never_steer_the_cloud_call(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    attacker: FakeCloud,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    passthrough: bool,
    stream: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = await gateway_factory(**cloud_settings(fake_cloud, passthrough=passthrough))
    body = {
        "model": "gpt-fake",
        "messages": HELLO,
        "stream": stream,
        **_hostile_fields(attacker),
    }
    async with http.post(f"{gw.base_url}/chat/completions", json=body) as r:
        text = await r.text()
        assert r.status == 200, text
        assert r.headers["x-gateway-route"] == "cloud"
    assert _content(text, stream).startswith("cloud answer to: Say hello")
    assert "pwned" not in text
    assert attacker.hits == [], "a client field sent the call to a host it chose"
    assert len(fake_cloud.requests) == 1
    sent = {k.lower(): v for k, v in fake_cloud.headers[-1].items()}
    assert sent["authorization"] == f"Bearer {KEY}"
    assert "x-injected" not in sent
    assert KEY not in text
    assert all(KEY not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("passthrough", [True, False], ids=["passthrough", "litellm"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_upstream_key_scrubbed_from_relayed_errors(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    passthrough: bool,
    stream: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    gw = await gateway_factory(**cloud_settings(fake_cloud, passthrough=passthrough))
    await fake_cloud.set_mode("echo400")
    body = {"model": "gpt-fake", "messages": HELLO, "stream": stream}
    async with http.post(f"{gw.base_url}/chat/completions", json=body) as r:
        text = await r.text()
        assert r.status == 400, text
        assert r.headers["Content-Type"].startswith("application/json")
    assert fake_cloud.requests, "the upstream was called"
    assert KEY not in text
    assert "[redacted]" in text or "rejected" in text
    assert all(KEY not in r.getMessage() for r in caplog.records)


async def test_upstream_key_scrubbed_from_relayed_stream(
    gateway_factory: Any, fake_cloud: FakeCloud, http: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(**cloud_settings(fake_cloud))
    await fake_cloud.set_mode("echo_stream")
    for stream in (True, False):
        body = {"model": "gpt-fake", "messages": HELLO, "stream": stream}
        async with http.post(f"{gw.base_url}/chat/completions", json=body) as r:
            text = await r.text()
            assert r.status == 200, text
        assert _content(text, stream).startswith("you sent Bearer ") and KEY not in text


def _content(text: str, stream: bool) -> str:
    """The answer's text from a chat response body or its SSE stream."""
    if not stream:
        return str(json.loads(text)["choices"][0]["message"]["content"])
    parts = []
    for line in text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices") or []:
                parts.append(choice["delta"].get("content") or "")
    return "".join(parts)


# -- hostile bodies never stall the loop ------------------------------------------------------

MIB8 = 8 * 1024 * 1024 - 4096  # an 8 MiB body, JSON framing included


def _hostile_bodies() -> dict[str, bytes]:
    def chat(content: Any, **extra: Any) -> bytes:
        return json.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": content}], **extra}
        ).encode()

    return {
        "quadratic_email": chat("a" * (MIB8 - 200) + "@b"),
        "email_within_limit": chat("a" * 999_000 + "@b.co"),
        "many_at_signs": chat("a@" * 499_000),
        "million_messages": json.dumps(
            {"model": "auto", "messages": [{"role": "user", "content": "x"}] * 500_000}
        )
        .encode()[:MIB8]
        .rsplit(b",", 1)[0]
        + b"]}",
        "huge_prompt": chat("lorem ipsum " * (MIB8 // 12 - 20)),
        "million_parts": chat([{"type": "text", "text": "x"}] * 250_000),
        "many_stops": chat("hi", stop=["s"] * 1_000_000),
        "long_stop": chat("hi", stop=["s" * (MIB8 - 300)]),
        "huge_integer": b'{"model": "auto", "max_tokens": ' + b"9" * 100_000 + b', "messages": []}',
        "deep_nesting": b'{"model": "auto", "x": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        "many_tools": chat("hi", tools=[{}] * 1_000_000),
        "nan": b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "x": NaN}',
    }


@pytest.fixture(scope="module")
def hostile_bodies() -> dict[str, bytes]:
    return _hostile_bodies()


async def _worst_healthz(
    http: aiohttp.ClientSession, url: str, done: asyncio.Event, probing: asyncio.Event
) -> float:
    """Poll /healthz until `done` (`probing` set once the first answer came); the slowest
    answer seen."""
    worst = 0.0
    while not done.is_set():
        t0 = time.perf_counter()
        async with http.get(f"{url}/healthz") as r:
            assert r.status == 200
        worst = max(worst, time.perf_counter() - t0)
        probing.set()
        await asyncio.sleep(0.02)
    return worst


@pytest.mark.parametrize("path", ["/v1/route", "/v1/chat/completions"])
async def test_hostile_bodies_get_4xx_and_never_stall_the_loop(
    gateway: RunningGateway,
    http: aiohttp.ClientSession,
    hostile_bodies: dict[str, bytes],
    path: str,
) -> None:
    for name, raw in hostile_bodies.items():
        assert len(raw) <= 8 * 1024 * 1024, name
        done, probing = asyncio.Event(), asyncio.Event()
        prober = asyncio.create_task(_worst_healthz(http, gateway.url, done, probing))
        await probing.wait()
        async with http.post(
            f"{gateway.url}{path}", data=raw, headers={"Content-Type": "application/json"}
        ) as r:
            status = r.status
            body = await r.json()
        done.set()
        worst = await prober
        if path == "/v1/route" and status == 200:
            # Explaining a prompt within the limits is an answer, not a failure.
            assert name in ("email_within_limit", "many_at_signs"), name
            assert body["features"]["pii"] == (["email"] if "email" in name else [])
            assert worst < 0.5, (name, worst)
            continue
        assert 400 <= status < 500, (name, status, body)
        assert set(body["error"]) >= {"message", "type", "param", "code"}, name
        # The bar: /healthz answers within 0.5 s while the hostile request is handled.
        assert worst < 0.5, (name, worst)


async def test_limits_name_the_setting(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    url = f"{gateway.base_url}/chat/completions"
    cases = {
        "max_messages": {"messages": [{"role": "user", "content": "x"}] * 1025},
        "max_stop": {"messages": HELLO, "stop": ["a"] * 17},
        "max_stop_chars": {"messages": HELLO, "stop": ["a" * 257]},
        "max_content_chars": {"messages": [{"role": "user", "content": "a" * 1_000_001}]},
        "max_tools": {"messages": HELLO, "tools": [{"type": "function"}] * 129},
        "max_content_parts": {
            "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}] * 4097}]
        },
    }
    for setting, body in cases.items():
        async with http.post(url, json={"model": "local", **body}) as r:
            err = (await r.json())["error"]
            assert r.status == 400, (setting, err)
            assert f"server.{setting}" in err["message"], (setting, err)


async def test_limits_are_settings(gateway_factory: Any, http: aiohttp.ClientSession) -> None:
    gw = await gateway_factory(
        server={"max_stop": 1, "max_messages": 2, "max_content_chars": 10, "max_tools": 0}
    )
    url = f"{gw.base_url}/chat/completions"
    for body, setting in (
        ({"messages": HELLO, "stop": ["a", "b"]}, "max_stop"),
        ({"messages": [{"role": "user", "content": "hi"}] * 3}, "max_messages"),
        ({"messages": [{"role": "user", "content": "eleven char"}]}, "max_content_chars"),
        ({"messages": HELLO, "tools": [{"type": "function"}]}, "max_tools"),
    ):
        async with http.post(url, json={"model": "local", **body}) as r:
            assert r.status == 400
            assert f"server.{setting}" in (await r.json())["error"]["message"]
    async with http.post(
        url, json={"model": "local", "messages": [HELLO[0] | {"content": "hi"}]}
    ) as r:
        assert r.status == 200


# -- limiter state stays bounded ----------------------------------------------------------------


async def test_random_bearer_tokens_leave_limiter_state_bounded(
    gateway_factory: Any, http: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(limits={"requests_per_minute": 1_000_000})
    counters = gw.app[_services_key()].limiter.counters
    assert isinstance(counters, MemoryCounters)
    url = f"{gw.base_url}/chat/completions"
    body = {"model": "no-such-model", "messages": HELLO}  # admitted, counted, then 404: cheap

    async def one(i: int) -> int:
        async with http.post(url, json=body, headers={"Authorization": f"Bearer rnd-{i}"}) as r:
            return r.status

    for start in range(0, 2000, 100):
        statuses = await asyncio.gather(*(one(i) for i in range(start, start + 100)))
        assert set(statuses) == {404}
    # Without configured keys a token is not an identity: one counter for everyone.
    assert len(counters) <= 2, len(counters)
    steady = {"model": "local", "messages": HELLO, "max_tokens": 2}
    async with http.post(url, json=steady, headers={"Authorization": "Bearer steady"}) as r:
        assert r.status == 200


async def test_unknown_tokens_never_reach_the_limiter_when_keys_are_set(
    gateway_factory: Any, http: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(
        limits={"requests_per_minute": 1_000_000}, server={"api_keys": ["sk-steady"]}
    )
    counters = gw.app[_services_key()].limiter.counters
    url = f"{gw.base_url}/chat/completions"
    for i in range(200):
        async with http.post(url, json={}, headers={"Authorization": f"Bearer rnd-{i}"}) as r:
            assert r.status == 401
    assert len(counters) == 0
    body = {"model": "local", "messages": HELLO, "max_tokens": 2}
    async with http.post(url, json=body, headers={"Authorization": "Bearer sk-steady"}) as r:
        assert r.status == 200
    assert len(counters) == 1


async def test_memory_counters_expire_in_order_and_cap_keys() -> None:
    now = [1000.0]
    c = MemoryCounters(max_keys=100, clock=lambda: now[0])
    for i in range(1000):
        await c.add(f"k{i}", 1, ttl_s=120)
        assert len(c) <= 101
    assert await c.get("k999") == 1  # the newest keys survive the cap
    await c.add("day", 5, ttl_s=86400)
    now[0] += 121
    await c.add("fresh", 1, ttl_s=120)
    assert len(c) == 2  # every expired minute window went, the day counter stayed
    assert await c.get("day") == 5 and await c.get("k999") == 0


def _services_key() -> Any:
    from gateway.services import SERVICES

    return SERVICES


# -- breaker, timeouts, disconnects, shutdown ---------------------------------------------------


async def test_breaker_stays_open_while_chat_hangs_but_models_answers(
    gateway_factory: Any, fake_cloud: FakeCloud, http: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(**cloud_settings(fake_cloud, first_byte_timeout_s=1.5))
    await fake_cloud.set_mode("hang_chat")
    body = {"model": "gpt-fake", "messages": HELLO, "max_tokens": 4}
    url = f"{gw.base_url}/chat/completions"
    async with http.post(url, json=body) as r:  # the timeout that opens the breaker
        assert r.status == 200 and r.headers["x-gateway-degraded"] == "true"
    for _ in range(6):
        await asyncio.sleep(0.3)  # probes run every 0.2 s; /models answers all along
        async with http.post(url, json=body) as r:
            assert r.status == 200
            assert r.headers["x-gateway-route"] == "local"
            assert "unreachable" in r.headers["x-gateway-reason"]
    clients = [
        b for b in fake_cloud.requests if b.get("messages") != [{"role": "user", "content": "ping"}]
    ]
    assert len(clients) == 1, "a client waited on the hanging chat endpoint again"
    await fake_cloud.set_mode("ok")
    deadline = time.monotonic() + 15
    while True:
        async with http.post(url, json=body) as r:
            if r.headers["x-gateway-route"] == "cloud":
                break
        assert time.monotonic() < deadline, "the deep probe never closed the breaker"
        await asyncio.sleep(0.3)


async def test_request_timeout_bounds_plain_and_streamed_requests(
    gateway_factory: Any, fake_cloud: FakeCloud, http: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(
        server={"request_timeout_s": 3.0}, **cloud_settings(fake_cloud, first_byte_timeout_s=30)
    )
    await fake_cloud.set_mode("hang")
    t0 = time.monotonic()
    body = {"model": "gpt-fake", "messages": HELLO}
    async with http.post(f"{gw.base_url}/chat/completions", json=body) as r:
        err = (await r.json())["error"]
        assert r.status == 504 and err["code"] == "request_timeout", err
    assert time.monotonic() - t0 < 10
    async with http.post(f"{gw.base_url}/chat/completions", json=LONG_STORY) as r:
        assert r.status == 200
        text = await r.text()
    last = [line for line in text.splitlines() if line.startswith("data:")][-1]
    assert json.loads(last[5:])["error"]["code"] == "request_timeout"


async def test_client_walking_away_is_499_not_an_error(
    gateway: RunningGateway, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(3):
        async with http.post(f"{gateway.base_url}/chat/completions", json=LONG_STORY) as r:
            seen = 0
            async for line in r.content:
                seen += line.startswith(b"data:")
                if seen >= 3:
                    break
            r.close()  # walk away mid-stream

    async def walked_away() -> tuple[str, list[str]]:
        async with http.get(f"{gateway.url}/metrics") as r:
            metrics = await r.text()
        return metrics, [
            line
            for line in metrics.splitlines()
            if line.startswith("edge_gateway_requests_total{") and 'status_class="499"' in line
        ]

    # Each walk-away is counted once its handler has noticed (it ends on its own).
    deadline = time.monotonic() + 30
    metrics, walked = await walked_away()
    while not walked or float(walked[0].split()[-1]) < 3:
        assert time.monotonic() < deadline, walked
        await asyncio.sleep(0.05)
        metrics, walked = await walked_away()
    assert walked and float(walked[0].split()[-1]) == 3, walked
    assert 'status_class="5xx"' not in metrics
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_sigterm_readyz_503_while_draining_and_cut_streams_get_an_error_event() -> None:
    gp = GatewayProcess(env={"GATEWAY_SERVER__SHUTDOWN_GRACE_S": "2"})
    try:
        gp.wait_ready()

        async def run() -> tuple[int, bytes]:
            async with aiohttp.ClientSession() as s:
                async with s.post(f"{gp.base_url}/chat/completions", json=LONG_STORY) as r:
                    assert (await r.content.readline()).startswith(b"data:")
                    os.kill(gp.proc.pid, signal.SIGTERM)
                    # Until the signal is handled /readyz says 200; then 503 while the stream
                    # drains, before the listener closes (a refused connection fails here).
                    async with asyncio.timeout(10):
                        while True:
                            async with s.get(f"{gp.url}/readyz") as ready:
                                ready_status = ready.status
                            if ready_status != 200:
                                break
                            await asyncio.sleep(0.02)
                    rest = await r.content.read()
                    return ready_status, rest

        ready_status, rest = asyncio.run(run())
        assert ready_status == 503  # balancers see the drain before the listener closes
        last = [line for line in rest.splitlines() if line.startswith(b"data:")][-1]
        assert json.loads(last[5:])["error"]["code"] == "shutting_down"
        assert gp.proc.wait(timeout=30) == 0
    finally:
        gp.stop()


# -- the low findings ---------------------------------------------------------------------------


async def test_unknown_model_with_private_data_is_404(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "mail a@b.com"}]}
    async with http.post(f"{gateway.base_url}/chat/completions", json=body) as r:
        assert r.status == 404
        assert (await r.json())["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("text", [42, {"a": 1}, None, ["x"]])
async def test_text_part_must_be_a_string(
    gateway: RunningGateway, http: aiohttp.ClientSession, text: Any
) -> None:
    content = [{"type": "text", "text": text}]
    body = {"model": "local", "messages": [{"role": "user", "content": content}]}
    async with http.post(f"{gateway.base_url}/chat/completions", json=body) as r:
        assert r.status == 400, await r.text()


async def test_oversized_header_gets_a_json_error(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    headers = {"X-Big": "a" * 100_000}
    async with http.post(f"{gateway.base_url}/chat/completions", json={}, headers=headers) as r:
        assert 400 <= r.status < 500
        assert r.headers["Content-Type"].startswith("application/json")
        assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_non_standard_json_is_refused(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    for raw in (b'{"model": "local", "temperature": NaN}', b'{"model": "local", "x": -Infinity}'):
        async with http.post(f"{gateway.base_url}/chat/completions", data=raw) as r:
            assert r.status == 400
            assert (await r.json())["error"]["code"] == "invalid_json"


POLICY_HEAD = "version: 1\ndefault: local\nrules:\n"
RULE = "  - name: r{i}\n    when: {{prompt_tokens: {{gte: {n}}}}}\n    route: local\n"


async def test_policy_caught_mid_write_is_never_loaded(tmp_path: Any) -> None:
    path = tmp_path / "p.yaml"
    full = POLICY_HEAD + "".join(RULE.format(i=i, n=1000 + i) for i in range(6))
    path.write_text(full)
    store = PolicyStore(path, cloud_names=[])
    assert len(store.current.rules) == 6
    watcher = asyncio.create_task(store.watch(0.3))
    seen: set[int] = set()
    try:
        for n in (3, 4):
            edited = POLICY_HEAD + "".join(RULE.format(i=i, n=2000 + i) for i in range(n))
            with path.open("w") as f:  # a slow writer: the first rule, a stall, the rest
                cut = len(POLICY_HEAD) + len(RULE.format(i=0, n=2000))
                f.write(edited[:cut])
                f.flush()
                for _ in range(4):
                    await asyncio.sleep(0.05)
                    seen.add(len(store.current.rules))
                f.write(edited[cut:])
            deadline = time.monotonic() + 30
            while len(store.current.rules) != n:  # the watcher picks the whole edit up
                seen.add(len(store.current.rules))
                assert time.monotonic() < deadline, "the edit was never loaded"
                await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
    assert 1 not in seen, "a truncated policy was loaded"


async def test_admin_api_refuses_other_sites_even_on_an_open_box(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    # No keys set: loopback is trusted, but a web page in a browser on the box is not.
    hostile = (
        {"Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "null"},
    )
    for headers in hostile:
        for method, path in (("POST", "/admin/reload"), ("GET", "/admin/models")):
            async with http.request(method, f"{gateway.url}{path}", headers=headers) as r:
                assert r.status == 403, (headers, path)
                assert (await r.json())["error"]["code"] == "cross_site_request"
    same = {"Origin": gateway.url, "Sec-Fetch-Site": "same-origin"}  # the status page itself
    async with http.get(f"{gateway.url}/admin/status", headers=same) as r:
        assert r.status == 200
    async with http.get(f"{gateway.url}/admin/models") as r:  # curl, scripts: no Origin
        assert r.status == 200
