"""Operations: Prometheus metrics, hot policy reload, the request log line."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from gateway.services import SERVICES
from tests.conftest import ROOT, RunningGateway, cloud_settings, until
from tests.fakes.cloud import FakeCloud

HELLO = [{"role": "user", "content": "Say hello in French."}]

FAMILIES = [
    "edge_gateway_requests_total",
    "edge_gateway_request_duration_seconds",
    "edge_gateway_overhead_seconds",
    "edge_gateway_time_to_first_token_seconds",
    "edge_gateway_prompt_tokens_total",
    "edge_gateway_completion_tokens_total",
    "edge_gateway_cache_requests_total",
    "edge_gateway_cache_errors_total",
    "edge_gateway_cache_up",
    "edge_gateway_cloud_reachable",
    "edge_gateway_breaker_state",
    "edge_gateway_local_queue_depth",
    "edge_gateway_local_in_flight",
    "edge_gateway_failovers_total",
    "edge_gateway_policy_reloads_total",
    "edge_gateway_spend_avoided_usd_total",
    "edge_gateway_cloud_spend_usd_total",
]


async def _traffic(gw: RunningGateway, cloud: FakeCloud) -> None:
    c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="sk-ops", max_retries=0)
    await c.chat.completions.create(model="local", messages=HELLO, max_tokens=8)
    s = await c.chat.completions.create(model="auto", messages=HELLO, max_tokens=8, stream=True)
    _ = [ch async for ch in s]
    await c.chat.completions.create(model="cloud", messages=HELLO, temperature=0)
    await gw.settled()
    await c.chat.completions.create(model="cloud", messages=HELLO, temperature=0)  # cache hit
    await cloud.set_mode("fail500")
    await c.chat.completions.create(model="cloud", messages=HELLO, max_tokens=4)  # failover
    await cloud.set_mode("ok")
    with pytest.raises(openai.NotFoundError):
        await c.chat.completions.create(model="nope", messages=HELLO)


async def _scrape(gw: RunningGateway) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


async def test_metrics_after_traffic(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    gw = await gateway_factory(**cloud_settings(fake_cloud))
    await _traffic(gw, fake_cloud)
    text = await _scrape(gw)
    for family in FAMILIES:
        assert family in text, family
    routes = set(re.findall(r'edge_gateway_requests_total\{[^}]*route="(\w+)"', text))
    assert {"local", "cloud", "cache"} <= routes
    assert (
        'edge_gateway_failovers_total{cause="5xx",from_target="gpt-fake",to_target="cache"}' in text
    )
    assert 'edge_gateway_spend_avoided_usd_total{route="local"}' in text
    assert "sk-ops" not in text and "sk-fake" not in text  # no keys, ever
    assert "Say hello" not in text  # no prompts
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: `make test` installs it (Debian package prometheus)")
    proc = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


async def test_unmatched_paths_are_one_label(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    for i in range(3):
        async with http.post(f"{gateway.base_url}/random-{i}", json={}) as r:
            assert r.status == 404
    text = await _scrape(gateway)
    assert "random-" not in text


def _policy(default: str) -> str:
    return (
        (ROOT / "policies" / "default.yaml")
        .read_text()
        .replace("default: local", f"default: {default}")
    )


async def test_policy_hot_reload_and_broken_edits(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(_policy("local"))
    gw = await gateway_factory(
        **cloud_settings(fake_cloud), policy={"file": str(policy), "reload_interval_s": 0.5}
    )
    c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0).with_options(
        default_headers={"Cache-Control": "no-cache, no-store"}
    )

    async def route() -> str:
        raw = await c.chat.completions.with_raw_response.create(
            model="auto", messages=HELLO, max_tokens=4
        )
        return raw.headers["x-gateway-route"]

    assert await route() == "local"
    policy.write_text(_policy("cloud"))
    deadline = time.monotonic() + 10
    while await route() != "cloud":
        assert time.monotonic() < deadline, "policy change not picked up within 10 s"
        await asyncio.sleep(0.2)

    policy.write_text(
        "default: cloud\nrules:\n  - name: x\n    route: local\n"
        "    when: {complexity: {gte: lots}}\n"
    )
    # The watcher reads it once it settled and rejects it: the last good policy stays.
    policies = gw.app[SERVICES].policies
    await until(lambda: policies.last_error is not None, "the watcher to reject the policy")
    assert await route() == "cloud"
    async with http.post(f"{gw.url}/admin/reload") as r:
        assert 400 <= r.status < 500
        err = (await r.json())["error"]
    assert f"{policy}:5:" in err["message"] and "rules.0.when.complexity.gte" in err["message"]
    assert await route() == "cloud"
    text = await _scrape(gw)
    assert re.search(r'edge_gateway_policy_reloads_total\{result="failure"\} [1-9]', text)
    assert re.search(r'edge_gateway_policy_reloads_total\{result="success"\} [1-9]', text)

    policy.write_text(_policy("local"))
    async with http.post(f"{gw.url}/admin/reload") as r:
        assert r.status == 200
    assert await route() == "local"


async def test_one_json_log_line_per_request(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.logs import JsonFormatter

    c = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-secret-log", max_retries=0)
    with caplog.at_level(logging.INFO, logger="gateway.request"):
        await c.chat.completions.create(model="local", messages=HELLO, max_tokens=4)
        # The same prompt again: a free slot still holds its KV (prefix reuse).
        await c.chat.completions.create(model="local", messages=HELLO, max_tokens=4)
    lines = [r for r in caplog.records if r.name == "gateway.request"]
    assert len(lines) == 2
    assert lines[1].tokens_reused > 0  # type: ignore[attr-defined]
    out = json.loads(JsonFormatter().format(lines[0]))
    for key in (
        "request_id",
        "route",
        "rule",
        "reason",
        "degraded",
        "cache",
        "prompt_tokens",
        "completion_tokens",
        "tokens_reused",
        "latency_ms",
        "status",
    ):
        assert key in out, key
    assert out["route"] == "local" and out["status"] == 200
    rendered = json.dumps(out)
    assert "Say hello" not in rendered and "sk-secret-log" not in rendered


async def test_bodies_logged_only_when_opted_in(
    gateway_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway_factory(server={"log_bodies": True})
    c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    with caplog.at_level(logging.INFO, logger="gateway.request"):
        chat = await c.chat.completions.create(model="local", messages=HELLO, max_tokens=4)
    record = next(r for r in caplog.records if r.name == "gateway.request")
    assert record.prompt == "Say hello in French."  # type: ignore[attr-defined]
    assert record.answer == chat.choices[0].message.content  # type: ignore[attr-defined]


async def test_metrics_key(gateway_factory: Any, http: aiohttp.ClientSession) -> None:
    gw = await gateway_factory(server={"metrics_key": "scrape-me"})
    async with http.get(f"{gw.url}/metrics") as r:
        assert r.status == 401
    async with http.get(f"{gw.url}/metrics", headers={"Authorization": "Bearer scrape-me"}) as r:
        assert r.status == 200


async def test_show_prompts_puts_text_on_the_page_never_in_the_log(
    gateway_factory: Any, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.services import SERVICES

    caplog.set_level(logging.INFO)
    gw = await gateway_factory(ui={"show_prompts": True})
    body = {"model": "local", "max_tokens": 4, "messages": [{"role": "user", "content": "zebra"}]}
    async with http.post(f"{gw.base_url}/chat/completions", json=body) as r:
        assert r.status == 200
    async with http.get(f"{gw.url}/admin/status") as r:
        assert "zebra" in await r.text()
    assert not any("zebra" in str(rec.__dict__) for rec in caplog.records)
    assert gw.app[SERVICES].settings.server.log_bodies is False
