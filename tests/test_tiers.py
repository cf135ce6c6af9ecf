"""Tiers: an edge box whose cloud model is another edge-gateway says which tier answered, how.

Three tiers on loopback, all real HTTP: an edge gateway, a regional gateway (its own settings,
the real GGUF as its local model) and the fake cloud. Both gateways run in this test's event
loop on their own ports; the regional one is taken off the network like a dead uplink.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from gateway.backends.tier import TierReport
from gateway.http import openapi
from gateway.services import SERVICES
from gateway.settings import CloudModel, SettingsError, load_settings
from tests.conftest import ROOT, RunningGateway, cloud_settings, until
from tests.fakes.cloud import FakeCloud
from tests.fakes.otlp import FakeCollector

EDGE_KEY = "sk-edge-to-regional-7781"  # the edge box's key at the regional box
SECRET = "sk-fake-cloud-secret-123"  # the fake cloud's key (conftest's fake_cloud fixture)
# A tier's first byte of a whole answer includes its own failover and local generation: the
# edge box waits longer than the regional box does (and the test box is shared and slow).
EDGE_CLOUD = {"probe_interval_s": 0.2, "first_byte_timeout_s": 120, "read_timeout_s": 120}


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def upstream_headers(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-gateway-upstream-")}


async def take_offline(gw: RunningGateway) -> None:
    """Nothing listens any more and open connections are cut: a dead regional box."""
    for site in list(gw.runner.sites):
        await site.stop()
    assert gw.runner.server is not None
    for conn in list(gw.runner.server.connections):
        conn.force_close()


def edge_policy(tmp_path: Path, order: str) -> Path:
    """The default policy with another offline order."""
    path = tmp_path / "edge-policy.yaml"
    text = (ROOT / "policies" / "default.yaml").read_text()
    assert "order: [cache, local]" in text
    path.write_text(text.replace("order: [cache, local]", f"order: {order}"))
    return path


def tier_entry(regional: RunningGateway, **kw: Any) -> dict[str, Any]:
    # `openai/cloud`: the regional box is asked for its own first cloud model.
    return {
        "name": "regional",
        "model": "openai/cloud",
        "api_base": regional.base_url,
        "api_key_env": "REGIONAL_KEY",
        "tier": True,
        **kw,
    }


async def start_regional(gateway_factory: Any, fake_cloud: FakeCloud) -> RunningGateway:
    regional: RunningGateway = await gateway_factory(
        **cloud_settings(fake_cloud), server={"api_keys": [EDGE_KEY]}
    )
    return regional


async def start_edge(
    gateway_factory: Any,
    regional: RunningGateway,
    fake_cloud: FakeCloud,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    **overrides: Any,
) -> RunningGateway:
    monkeypatch.setenv("REGIONAL_KEY", EDGE_KEY)
    edge: RunningGateway = await gateway_factory(
        cloud={
            # The next tier when the regional box is gone: the cloud itself, directly.
            "models": [tier_entry(regional), fake_cloud.model_entry("direct")],
            **EDGE_CLOUD,
        },
        policy={"file": str(edge_policy(tmp_path, "[direct, cache, local]"))},
        **overrides,
    )
    return edge


# -- Done when 1: three tiers -------------------------------------------------------------------


async def test_three_tiers_report_the_route_each_box_took(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = await FakeCollector().start()
    try:
        regional = await start_regional(gateway_factory, fake_cloud)
        edge = await start_edge(
            gateway_factory,
            regional,
            fake_cloud,
            tmp_path,
            monkeypatch,
            telemetry={
                "endpoint": collector.endpoint,
                "store_path": str(tmp_path / "outbox.sqlite"),
                "flush_interval_s": 0.05,
            },
        )
        caplog.set_level(logging.INFO, logger="gateway.request")
        await _walk_the_tiers(edge, regional, fake_cloud, collector, caplog)
    finally:
        await collector.stop()


async def _walk_the_tiers(
    edge: RunningGateway,
    regional: RunningGateway,
    fake_cloud: FakeCloud,
    collector: FakeCollector,
    caplog: pytest.LogCaptureFixture,
) -> None:
    c = edge.client()
    edge_svc, regional_svc = edge.app[SERVICES], regional.app[SERVICES]

    # 1. The cloud is up: a cloud-bound request crosses both boxes and is the cloud's at both.
    raw = await c.chat.completions.with_raw_response.create(
        model="cloud", messages=ask("Say hello in French."), max_tokens=8, temperature=0
    )
    h = raw.headers
    assert h["x-gateway-route"] == "cloud" and h["x-gateway-tier"] == "regional"
    assert h["x-gateway-upstream-route"] == "cloud", dict(h)
    assert "x-gateway-degraded" not in h and "x-gateway-upstream-degraded" not in h
    assert raw.parse().choices[0].message.content.startswith("cloud answer")
    assert fake_cloud.headers[-1]["Authorization"] == f"Bearer {SECRET}"  # the regional's key
    assert regional_svc.status.recent[-1].route == "cloud"  # the regional box says so too
    assert not regional_svc.status.recent[-1].degraded
    # A cloud answer through a healthy tier is kept in the edge box's cache like any other.
    again = await c.chat.completions.with_raw_response.create(
        model="cloud", messages=ask("Say hello in French."), max_tokens=8, temperature=0
    )
    assert again.headers["x-gateway-cache"] == "hit"
    assert "x-gateway-tier" not in again.headers  # this box answered: no hop below

    # 2. The regional box's uplink fails: it answers from its local model, and says so.
    await fake_cloud.set_mode("fail500")
    calls = fake_cloud.chat_calls
    question = ask("Name a colour.")
    raw = await c.chat.completions.with_raw_response.create(
        model="cloud", messages=question, max_tokens=8, temperature=0
    )
    h = raw.headers
    assert h["x-gateway-route"] == "cloud" and h["x-gateway-tier"] == "regional"
    assert h["x-gateway-upstream-route"] == "local", dict(h)
    assert h["x-gateway-upstream-degraded"] == "true"
    assert h["x-gateway-degraded"] == "true"  # the edge box's own answer is degraded too
    assert "tier regional answered degraded" in h["x-gateway-reason"]
    assert "degraded" in h["x-gateway-upstream-reason"]
    assert len(h["x-gateway-upstream-model-file"]) == 12  # the regional's GGUF
    assert not any(SECRET in v or EDGE_KEY in v for v in h.values())  # no key of either box
    assert fake_cloud.chat_calls > calls  # the regional box did try its cloud
    text = raw.parse().choices[0].message.content
    assert text and not text.startswith("cloud answer")
    assert regional_svc.status.recent[-1].route == "local"
    assert regional_svc.status.recent[-1].degraded

    # Not kept at the edge: the same request asks the regional box again (a miss, not a hit).
    again = await c.chat.completions.with_raw_response.create(
        model="cloud", messages=question, max_tokens=8, temperature=0
    )
    assert again.headers["x-gateway-cache"] == "miss"
    assert again.headers["x-gateway-upstream-route"] == "local"

    # ... streamed, the same report, before the first byte.
    stream = await c.chat.completions.with_raw_response.create(
        model="cloud", messages=ask("Name a fruit."), max_tokens=8, stream=True
    )
    h = stream.headers
    assert h["x-gateway-route"] == "cloud" and h["x-gateway-upstream-route"] == "local"
    assert h["x-gateway-upstream-degraded"] == "true" and h["x-gateway-degraded"] == "true"
    chunks = [ch async for ch in stream.parse()]
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed and not streamed.startswith("cloud answer")

    # The request log, the metrics and the telemetry record show the chain.
    lines = [r for r in caplog.records if r.name == "gateway.request" and r.getMessage()]
    hops = [getattr(r, "upstream", None) for r in lines]
    degraded_hops = [u for u in hops if u and u["degraded"]]
    assert len(degraded_hops) == 3 and all(u["route"] == "local" for u in degraded_hops)
    assert degraded_hops[0]["tier"] == "regional"
    registry = edge_svc.metrics.registry

    def tier_answers(route: str, degraded: str) -> float:
        labels = {"tier": "regional", "upstream_route": route, "degraded": degraded}
        return registry.get_sample_value("edge_gateway_tier_answers_total", labels) or 0.0

    await until(lambda: tier_answers("local", "true") == 3, "three degraded tier answers")
    assert tier_answers("cloud", "false") == 1
    await until(lambda: len(collector.records()) >= 5, "the telemetry records")
    recs = collector.records()
    shipped = [r.get("gateway.upstream") for r in recs]
    assert shipped[0]["route"] == "cloud" and shipped[0]["tier"] == "regional"
    assert shipped[1] is None  # the cache hit: no tier answered
    assert shipped[2]["route"] == "local" and shipped[2]["degraded"] is True
    assert recs[2]["gateway.degraded"] is True

    # 3. The regional box is gone: offline.order walks to the next tier, marked degraded.
    await fake_cloud.set_mode("ok")
    await take_offline(regional)
    for stream_it in (False, True):
        raw = await c.chat.completions.with_raw_response.create(
            model="cloud", messages=ask("Say goodbye."), max_tokens=8, stream=stream_it
        )
        h = raw.headers
        assert h["x-gateway-route"] == "cloud" and h["x-gateway-degraded"] == "true", dict(h)
        assert "regional" in h["x-gateway-reason"] and "degraded" in h["x-gateway-reason"]
        assert "x-gateway-tier" not in h and not upstream_headers(h)  # `direct` is no tier
        if stream_it:
            parts = [ch async for ch in raw.parse()]
            body = "".join(ch.choices[0].delta.content or "" for ch in parts if ch.choices)
        else:
            body = raw.parse().choices[0].message.content
        assert body.startswith("cloud answer to: Say goodbye")
    assert fake_cloud.headers[-1]["Authorization"] == f"Bearer {SECRET}"
    failovers = edge_svc.metrics.registry.get_sample_value(
        "edge_gateway_failovers_total",
        {"from_target": "regional", "to_target": "direct", "cause": "connect"},
    )
    assert failovers and failovers >= 1


# -- Done when 2: headers of an upstream not marked as a tier never reach the client -----------

SPOOFED = {
    "x-gateway-route": "cache",
    "x-gateway-degraded": "true",
    "x-gateway-cache": "hit",
    "x-gateway-reason": f"spoofed; you sent Bearer {SECRET}",
    "x-gateway-model-file": "abcdef012345",
    "x-gateway-tier": "evil",
    "x-gateway-upstream-route": "local",
    "x-gateway-upstream-degraded": "true",
    "x-gateway-secret": SECRET,
    "Set-Cookie": f"session={SECRET}",
    "X-Upstream-Token": SECRET,
}


@pytest.mark.parametrize("passthrough", [True, False], ids=["passthrough", "litellm"])
async def test_headers_of_a_non_tier_upstream_never_reach_the_client(
    gateway_factory: Any, fake_cloud: FakeCloud, passthrough: bool
) -> None:
    fake_cloud.response_headers = dict(SPOOFED)
    gw = await gateway_factory(**cloud_settings(fake_cloud, passthrough=passthrough))
    c = gw.client()
    for stream in (False, True):
        raw = await c.chat.completions.with_raw_response.create(
            model="gpt-fake", messages=ask("Say hi."), max_tokens=8, stream=stream
        )
        h = {k.lower(): v for k, v in raw.headers.items()}
        if stream:
            _ = [ch async for ch in raw.parse()]
        assert h["x-gateway-route"] == "cloud"  # this box's own decision, not the upstream's
        assert "x-gateway-degraded" not in h and h.get("x-gateway-cache") != "hit"
        assert h["x-gateway-reason"].startswith("rule=model")
        for name in ("x-gateway-tier", "x-gateway-model-file", "x-gateway-secret", "set-cookie"):
            assert name not in h, name
        assert not upstream_headers(h)
        assert not any(SECRET in v for v in h.values())
    assert gw.app[SERVICES].status.recent[-1].upstream is None


async def test_a_gateway_not_marked_as_a_tier_is_just_a_cloud(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without `tier: true` the regional box's real headers are dropped, as any upstream's."""
    regional = await start_regional(gateway_factory, fake_cloud)
    monkeypatch.setenv("REGIONAL_KEY", EDGE_KEY)
    edge = await gateway_factory(cloud={"models": [tier_entry(regional, tier=False)], **EDGE_CLOUD})
    await fake_cloud.set_mode("fail500")
    raw = await edge.client().chat.completions.with_raw_response.create(
        model="cloud", messages=ask("Name a colour."), max_tokens=8
    )
    assert regional.app[SERVICES].status.recent[-1].degraded  # the regional box did degrade
    h = raw.headers
    assert h["x-gateway-route"] == "cloud" and "x-gateway-degraded" not in h, dict(h)
    assert "x-gateway-tier" not in h and not upstream_headers(h)
    assert "x-gateway-model-file" not in h


async def test_a_tier_relays_only_its_bounded_scrubbed_decision(
    gateway_factory: Any, fake_cloud: FakeCloud
) -> None:
    """Even a trusted tier relays only the x-gateway-* allow-list, cleaned, never our key."""
    fake_cloud.response_headers = {
        **SPOOFED,
        "x-gateway-route": "<script>",
        "x-gateway-cache": "everything",
        "x-gateway-model-file": "not-hex!",
        "x-gateway-reason": f"local fallback; key Bearer {SECRET}; " + "x" * 2000,
    }
    entry = {**fake_cloud.model_entry("near"), "tier": True}
    gw = await gateway_factory(cloud={"models": [entry], "probe_interval_s": 0.2})
    for stream in (False, True):
        raw = await gw.client().chat.completions.with_raw_response.create(
            model="near", messages=ask("Say hi."), max_tokens=8, stream=stream
        )
        if stream:
            _ = [ch async for ch in raw.parse()]
        h = {k.lower(): v for k, v in raw.headers.items()}
        assert h["x-gateway-tier"] == "near"
        assert h["x-gateway-upstream-route"] == "other"  # not a route: a closed set of labels
        assert h["x-gateway-upstream-degraded"] == "true" and h["x-gateway-degraded"] == "true"
        assert h["x-gateway-upstream-tier"] == "evil"
        reason = h["x-gateway-upstream-reason"]
        assert reason.startswith("local fallback; key Bearer [redacted]") and len(reason) <= 512
        assert "x-gateway-upstream-cache" not in h and "x-gateway-upstream-model-file" not in h
        assert set(upstream_headers(h)) == {
            "x-gateway-upstream-route",
            "x-gateway-upstream-degraded",
            "x-gateway-upstream-reason",
            "x-gateway-upstream-tier",
        }
        for name in ("x-gateway-secret", "set-cookie", "x-upstream-token", "x-gateway-model-file"):
            assert name not in h, name
        assert not any(SECRET in v for v in h.values())
        assert h["x-gateway-route"] == "cloud"


async def test_the_litellm_path_reads_a_tiers_report(
    gateway_factory: Any, fake_cloud: FakeCloud
) -> None:
    """litellm keeps the provider's response headers (`llm_provider-*`): a tier works there."""
    fake_cloud.response_headers = {
        "x-gateway-route": "local",
        "x-gateway-degraded": "true",
        "x-gateway-model-file": "0123456789ab",
    }
    entry = {**fake_cloud.model_entry("near"), "tier": True}
    gw = await gateway_factory(
        cloud={"models": [entry], "probe_interval_s": 0.2, "passthrough": False}
    )
    from gateway.backends.cloud import LiteLLMBackend

    assert isinstance(gw.app[SERVICES].dispatcher.clouds["near"], LiteLLMBackend)
    for stream in (False, True):
        raw = await gw.client().chat.completions.with_raw_response.create(
            model="near", messages=ask("Say hi."), max_tokens=8, stream=stream
        )
        if stream:
            _ = [ch async for ch in raw.parse()]
        h = raw.headers
        assert h["x-gateway-upstream-route"] == "local", dict(h)
        assert h["x-gateway-upstream-model-file"] == "0123456789ab"
        assert h["x-gateway-degraded"] == "true"


async def test_a_cascade_to_a_degraded_tier_is_no_cloud_answer(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path, caplog: Any
) -> None:
    """Escalated to a tier that answered from its own local model: degraded, and no cloud
    answer for learning to judge the local one against."""
    from tests.test_cascade import ALWAYS, policy_file

    caplog.set_level(logging.INFO, logger="gateway.request")
    fake_cloud.response_headers = {"x-gateway-route": "local", "x-gateway-degraded": "true"}
    entry = {**fake_cloud.model_entry("near"), "tier": True}
    gw = await gateway_factory(
        cloud={"models": [entry], "probe_interval_s": 0.2},
        policy={"file": str(policy_file(tmp_path, ALWAYS, to="near"))},
    )
    raw = await gw.client().chat.completions.with_raw_response.create(
        model="auto", messages=ask("Say hello in French."), max_tokens=12, temperature=0
    )
    h = raw.headers
    assert h["x-gateway-escalated"] == "true" and h["x-gateway-upstream-route"] == "local"
    assert h["x-gateway-degraded"] == "true"
    assert "tier near answered degraded" in h["x-gateway-reason"]
    [event] = [r.cascade for r in caplog.records if r.getMessage() == "request"]
    assert event["escalated"] is True and event["cloud_answer"] is False


# -- settings and the report itself ------------------------------------------------------------


def test_tier_settings_are_checked() -> None:
    with pytest.raises(SettingsError, match="tier: true needs an api_base"):
        load_settings(cloud={"models": [{"name": "r", "model": "openai/x", "tier": True}]})
    entry = {"name": "e", "model": "openai/x", "api_base": "http://127.0.0.1:9/v1", "tier": True}
    with pytest.raises(SettingsError, match=r"tier applies to cloud\.models only"):
        load_settings(cloud={"embedding_models": [entry]})
    assert load_settings(cloud={"models": [entry]}).cloud.models[0].tier
    assert not CloudModel(name="c", model="openai/x").tier  # off unless the operator says so


def test_a_report_needs_a_route_header() -> None:
    model = CloudModel(name="r", model="openai/x", api_base="http://127.0.0.1:9/v1")
    assert TierReport.from_headers("r", {"content-type": "application/json"}, model) is None
    report = TierReport.from_headers(
        "r", {"x-gateway-route": "CACHE", "x-gateway-cache": "hit"}, model
    )
    assert report is not None and report.route == "cache" and not report.degraded
    assert report.headers() == {
        "x-gateway-tier": "r",
        "x-gateway-upstream-route": "cache",
        "x-gateway-upstream-cache": "hit",
    }
    weird = TierReport.from_headers(
        "r", {"x-gateway-route": "local", "x-gateway-reason": "a\tb"}, model
    )
    assert weird is not None and weird.reason == "a b"


# -- Done when 3: the status page shows the chain ----------------------------------------------


async def test_status_page_shows_the_chain_of_two_tiers(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.test_ui import Browser

    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium manager: never fetch a driver
    regional = await start_regional(gateway_factory, fake_cloud)
    edge = await start_edge(gateway_factory, regional, fake_cloud, tmp_path, monkeypatch)
    c = edge.client()
    await c.chat.completions.create(model="cloud", messages=ask("Say hi."), max_tokens=4)
    await fake_cloud.set_mode("fail500")
    await c.chat.completions.create(model="cloud", messages=ask("Say bye."), max_tokens=4)

    # The JSON behind the page holds the hop, as /openapi.json describes it.
    async with aiohttp.ClientSession() as http, http.get(edge.url + "/admin/status") as r:
        assert r.status == 200
        status = await r.json()
    schema = openapi.document()["paths"]["/admin/status"]["get"]["responses"]["200"]
    jsonschema.validate(status, schema["content"]["application/json"]["schema"])
    assert [d["upstream"]["route"] for d in status["recent"]] == ["local", "cloud"]
    tiers = {t["name"]: t["tier"] for t in status["uplink"]["targets"]}
    assert tiers == {"regional": True, "direct": False}

    browser = await asyncio.to_thread(Browser)
    try:
        await browser.run(browser.driver.get, edge.url + "/")
        chains = await browser.wait_js(
            "const c = [...document.querySelectorAll('#recent tbody tr td.route .chain')];"
            "return c.length >= 2 && c.map(e => [e.dataset.tier, e.dataset.upstreamRoute,"
            " e.dataset.upstreamDegraded, e.textContent, e.closest('tr').dataset.route,"
            " e.closest('tr').innerText])",
            "two rows with a tier hop",
        )
        newest, oldest = chains[0], chains[1]  # the page lists the newest first
        assert newest[:4] == ["regional", "local", "true", "→ regional: local (degraded)"]
        assert newest[4] == "cloud"
        assert "tier regional answered degraded" in newest[5]
        assert "yes" in newest[5]  # the degraded column
        assert oldest[:4] == ["regional", "cloud", "false", "→ regional: cloud"]
        uplink = await browser.js(
            "return document.querySelector('#uplink tr[data-target=\"regional\"]').innerText"
        )
        assert "tier" in uplink
    finally:
        await asyncio.to_thread(browser.close)
