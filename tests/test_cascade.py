"""Escalation on local confidence (`route: cascade`) end to end: the real GGUF answers first,
the fake cloud takes over unsure answers; and `calibrate` writes a threshold policies accept.

Determinism: the local model answers at temperature 0, and the thresholds sit at the
extremes (a mean token logprob below -1000 never happens; below 0 always does), so whether
an answer is escalated never depends on what the model happens to say.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.routing.policy_file import PolicyError, load_policy
from tests.conftest import ROOT, RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud
from tests.pngmeta import png_text

HELLO = [{"role": "user", "content": "Say hello in French."}]
NEVER = -1000.0  # no answer's mean token logprob is this low: stays local
ALWAYS = 0.0  # every answer's mean token logprob is below 0: escalated


def policy_text(mean_logprob: float, *, stream: str = "local", to: str = "gpt-fake") -> str:
    return f"""
version: 1
default: local
cache: never  # every answer is the model's or the cloud's, never an earlier one
rules:
  - name: private-data-stays-local
    enforce: true
    when: {{pii: true}}
    route: local
  - name: local-first
    route: cascade
    cascade:
      to: {to}
      threshold: {{mean_logprob: {mean_logprob}}}
      stream: {stream}
offline:
  order: [local]
"""


def policy_file(tmp_path: Path, mean_logprob: float, **kw: Any) -> Path:
    path = tmp_path / f"cascade-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(policy_text(mean_logprob, **kw))
    return path


async def start(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path, mean_logprob: float, **kw: Any
) -> RunningGateway:
    path = policy_file(tmp_path, mean_logprob, **kw)
    gw: RunningGateway = await gateway_factory(
        **cloud_settings(fake_cloud), policy={"file": str(path)}
    )
    return gw


async def ask(gw: RunningGateway, **kw: Any) -> tuple[Any, Any]:
    raw = await gw.client().chat.completions.with_raw_response.create(
        model="auto", messages=kw.pop("messages", HELLO), max_tokens=12, temperature=0, **kw
    )
    return raw.headers, raw.parse()


async def metrics(gw: RunningGateway) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics") as r:
        return await r.text()


def sample(text: str, name: str) -> float:
    """The value of one metric sample line (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_confident_answer_stays_local(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    gw = await start(gateway_factory, fake_cloud, tmp_path, NEVER)
    headers, chat = await ask(gw)
    assert headers["x-gateway-route"] == "local", headers["x-gateway-reason"]
    assert headers["x-gateway-escalated"] == "false"
    assert "rule=local-first" in headers["x-gateway-reason"]
    assert "x-gateway-degraded" not in headers
    mean, low = (float(p.split("=")[1]) for p in headers["x-gateway-local-confidence"].split("; "))
    assert low <= mean <= 0
    assert chat.choices[0].message.content
    # The logprobs were asked for internally: the client, who did not ask, gets none.
    assert chat.choices[0].logprobs is None
    assert fake_cloud.chat_calls == 0
    m = await metrics(gw)
    assert sample(m, 'edge_gateway_cascade_answers_total{outcome="kept"}') == 1
    assert sample(m, 'edge_gateway_cascade_escalations_total{reason="mean_logprob"}') == 0

    # A client that asks for logprobs gets them, as from any local answer.
    headers, chat = await ask(gw, logprobs=True, top_logprobs=2)
    assert headers["x-gateway-route"] == "local"
    content = chat.choices[0].logprobs.content
    assert content and len(content[0].top_logprobs) == 2


async def test_unsure_answer_is_escalated(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.request")
    gw = await start(gateway_factory, fake_cloud, tmp_path, ALWAYS)
    headers, chat = await ask(gw)
    assert headers["x-gateway-route"] == "cloud", headers["x-gateway-reason"]
    assert headers["x-gateway-escalated"] == "true"
    assert headers["x-gateway-escalation-reason"].startswith("mean_logprob=")
    assert "escalated: mean_logprob=" in headers["x-gateway-reason"]
    assert chat.choices[0].message.content.startswith("cloud answer to: Say hello")
    assert fake_cloud.chat_calls == 1
    # The cloud got the client's request, not the logprobs the gateway asked of the local model.
    assert "logprobs" not in fake_cloud.requests[0]
    m = await metrics(gw)
    assert sample(m, 'edge_gateway_cascade_escalations_total{reason="mean_logprob"}') == 1
    assert sample(m, 'edge_gateway_cascade_answers_total{outcome="escalated"}') == 1
    # The discarded local answer's tokens: its prompt plus the 12 it generated at most.
    wasted = sample(m, "edge_gateway_cascade_escalated_local_tokens_total")
    assert 12 < wasted < 100
    # The request log's structured event carries the decision, for later label joins.
    [event] = [r.cascade for r in caplog.records if r.getMessage() == "request"]
    assert event["escalated"] is True and event["signal"] == "mean_logprob"
    assert event["local_answer"] is True and event["cloud_answer"] is True
    assert event["mean_logprob"] < 0 and event["to"] == "gpt-fake"


async def test_completions_and_several_choices(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    gw = await start(gateway_factory, fake_cloud, tmp_path, NEVER)
    c = gw.client()
    raw = await c.completions.with_raw_response.create(
        model="auto", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert raw.headers["x-gateway-route"] == "local"
    assert raw.headers["x-gateway-escalated"] == "false"
    assert "x-gateway-local-confidence" in raw.headers
    assert raw.parse().choices[0].logprobs is None
    # Two choices, JSON mode: the confidence pools both; neither carries logprobs back.
    raw2 = await c.chat.completions.with_raw_response.create(
        model="auto",
        messages=HELLO,
        max_tokens=12,
        temperature=0,
        n=2,
        response_format={"type": "json_object"},
    )
    assert raw2.headers["x-gateway-route"] == "local"
    assert raw2.headers["x-gateway-escalated"] == "false"
    chat = raw2.parse()
    assert len(chat.choices) == 2 and all(ch.logprobs is None for ch in chat.choices)

    gw2 = await start(gateway_factory, fake_cloud, tmp_path, ALWAYS)
    raw = await gw2.client().completions.with_raw_response.create(
        model="auto", prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert raw.headers["x-gateway-route"] == "cloud"
    assert raw.headers["x-gateway-escalated"] == "true"
    assert fake_cloud.requests[-1].get("logprobs") is None


async def test_offline_keeps_the_unsure_local_answer_degraded(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    gw = await start(gateway_factory, fake_cloud, tmp_path, ALWAYS)
    await fake_cloud.set_mode("refuse")
    for _ in range(2):  # the first finds the uplink gone, the second the breaker open
        headers, chat = await ask(gw)
        assert headers["x-gateway-route"] == "local", headers["x-gateway-reason"]
        assert headers["x-gateway-degraded"] == "true"
        assert headers["x-gateway-escalated"] == "false"
        assert "not escalated: gpt-fake" in headers["x-gateway-escalation-reason"]
        assert "degraded: unsure local answer kept" in headers["x-gateway-reason"]
        assert chat.choices[0].message.content
        assert chat.choices[0].logprobs is None
    assert fake_cloud.chat_calls == 0
    m = await metrics(gw)
    assert sample(m, 'edge_gateway_cascade_answers_total{outcome="degraded"}') == 2
    assert sample(m, 'edge_gateway_cascade_escalations_total{reason="mean_logprob"}') == 0


async def test_cloud_error_keeps_the_local_answer(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    gw = await start(gateway_factory, fake_cloud, tmp_path, ALWAYS)
    await fake_cloud.set_mode("fail500")
    headers, chat = await ask(gw)
    assert headers["x-gateway-route"] == "local"
    assert headers["x-gateway-degraded"] == "true"
    assert "gpt-fake failed" in headers["x-gateway-escalation-reason"]
    assert chat.choices[0].message.content


async def test_private_data_never_reaches_the_cascade(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    gw = await start(gateway_factory, fake_cloud, tmp_path, ALWAYS)
    headers, _ = await ask(gw, messages=[{"role": "user", "content": "Mail bob@example.com"}])
    assert headers["x-gateway-route"] == "local"
    assert "x-gateway-escalated" not in headers
    assert fake_cloud.chat_calls == 0


async def test_private_data_is_never_escalated_even_without_a_privacy_rule(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    # An operator who forgot the privacy rule still never sends private text for a second try.
    path = tmp_path / "no-privacy-rule.yaml"
    path.write_text(policy_text(ALWAYS).replace("pii: true", "model: [never-asked-for]"))
    gw: RunningGateway = await gateway_factory(
        **cloud_settings(fake_cloud), policy={"file": str(path)}
    )
    headers, _ = await ask(gw, messages=[{"role": "user", "content": "Mail bob@example.com"}])
    assert headers["x-gateway-route"] == "local"
    assert headers["x-gateway-escalated"] == "false"
    assert "private data" in headers["x-gateway-escalation-reason"]
    assert fake_cloud.chat_calls == 0
    m = await metrics(gw)
    assert sample(m, 'edge_gateway_cascade_answers_total{outcome="private"}') == 1


async def _stream(gw: RunningGateway) -> tuple[Any, str]:
    raw = await gw.client().chat.completions.with_raw_response.create(
        model="auto", messages=HELLO, max_tokens=12, temperature=0, stream=True
    )
    text = ""
    async for chunk in raw.parse():
        if chunk.choices:
            assert chunk.choices[0].logprobs is None
            text += chunk.choices[0].delta.content or ""
    return raw.headers, text


async def test_streams_are_served_locally_without_escalation(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    # `stream: local` (the default): even an answer the threshold would escalate streams on.
    gw = await start(gateway_factory, fake_cloud, tmp_path, ALWAYS)
    headers, text = await _stream(gw)
    assert headers["x-gateway-route"] == "local"
    assert headers["x-gateway-escalated"] == "false"
    assert headers["x-gateway-escalation-reason"] == "streams are not escalated"
    assert text and not text.startswith("cloud answer")
    assert fake_cloud.chat_calls == 0
    m = await metrics(gw)
    assert sample(m, 'edge_gateway_cascade_answers_total{outcome="stream_local"}') == 1


async def test_streams_can_go_to_the_cloud_directly(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    # `stream: cloud`: the confident threshold is irrelevant, streams never try local first.
    gw = await start(gateway_factory, fake_cloud, tmp_path, NEVER, stream="cloud")
    headers, text = await _stream(gw)
    assert headers["x-gateway-route"] == "cloud", headers["x-gateway-reason"]
    assert "cascade.stream=cloud" in headers["x-gateway-reason"]
    assert text.startswith("cloud answer")
    assert fake_cloud.chat_calls == 1
    # Offline, the rule's offline order answers the stream locally, marked degraded.
    await fake_cloud.set_mode("refuse")
    headers, text = await _stream(gw)
    assert headers["x-gateway-route"] == "local"
    assert headers["x-gateway-degraded"] == "true"
    assert text


def test_policy_check_validates_cascade_rules(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(policy_text(-1.5, to="cloud"))
    policy = load_policy(good, cloud_names=["gpt-fake"])
    cascade = policy.rules[1].cascade
    assert cascade is not None and cascade.threshold.mean_logprob == -1.5
    example = load_policy(ROOT / "policies" / "examples" / "cascade.yaml", cloud_names=[])
    assert [r.name for r in example.rules if r.route == "cascade"] == ["local-first"]
    bad_cases = {
        "no cascade block": "  - name: x\n    route: cascade\n",
        "no threshold": "  - name: x\n    route: cascade\n    cascade: {to: cloud}\n",
        "empty threshold": "  - name: x\n    route: cascade\n    cascade: {threshold: {}}\n",
        "positive": "  - name: x\n    route: cascade\n    cascade: {threshold: {min_logprob: 1}}\n",
        "to local": "  - name: x\n    route: cascade\n"
        "    cascade: {to: local, threshold: {mean_logprob: -1}}\n",
        "to unknown": "  - name: x\n    route: cascade\n"
        "    cascade: {to: gpt-nope, threshold: {mean_logprob: -1}}\n",
        "block without route": "  - name: x\n    route: local\n"
        "    cascade: {threshold: {mean_logprob: -1}}\n",
        "bad stream": "  - name: x\n    route: cascade\n"
        "    cascade: {threshold: {mean_logprob: -1}, stream: buffer}\n",
    }
    for what, rule in bad_cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(f"version: 1\ndefault: local\nrules:\n{rule}")
        with pytest.raises(PolicyError) as info:
            load_policy(path, cloud_names=["gpt-fake"])
        assert f"{path}:" in str(info.value), what


def test_calibrate_writes_a_threshold_policy_check_accepts(tmp_path: Path) -> None:
    data = tmp_path / "labelled.jsonl"
    prompts = [
        ("What is the capital of France?", True),
        ("Say hello in French.", True),
        ("Translate 'good morning' into German.", True),
        ("Prove that there are infinitely many primes of the form 4k+3.", False),
        ("What is 48213 times 9177?", False),
        ("Name the 14th president of the United States and his vice president.", False),
    ]
    data.write_text("".join(json.dumps({"prompt": p, "local_ok": ok}) + "\n" for p, ok in prompts))
    out = tmp_path / "cascade-policy.yaml"
    png = tmp_path / "cascade.png"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "calibrate",
            str(data),
            "--target-rate",
            "0.5",
            "--limit",
            "6",
            "--max-tokens",
            "8",
            "--out",
            str(out),
            "--plot",
            str(png),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "escalation rate" in run.stdout and "AUC" in run.stdout
    assert "6 prompts" in run.stdout
    # The curve: both signals, length and random; the chosen threshold marked on `mean`.
    meta = png_text(png)
    assert json.loads(meta["Series"]) == ["mean logprob", "min logprob", "prompt-length", "random"]
    marker = json.loads(meta["Threshold"])
    assert marker["series"] == "mean logprob" and "mean_logprob <" in marker["label"]
    assert 0.0 < marker["share"] <= 1.0  # about --target-rate, ties in the logprobs aside
    policy = load_policy(out, cloud_names=[])
    [rule] = [r for r in policy.rules if r.route == "cascade"]
    assert rule.cascade is not None and rule.cascade.threshold.mean_logprob is not None
    assert rule.cascade.threshold.mean_logprob <= 0
    check = subprocess.run(
        [sys.executable, "-m", "gateway", "policy", "check", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("ok")


def test_calibrate_refuses_bad_input(tmp_path: Path) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "hi"}\n')
    run = subprocess.run(
        [sys.executable, "-m", "gateway", "calibrate", str(data)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "local_ok" in run.stderr
