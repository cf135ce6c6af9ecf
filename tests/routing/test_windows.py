"""cloud.models[].context_window: a request past a model's window is never sent to it.

The client's own choice of model gets OpenAI's 400 context_length_exceeded; a policy's choice
goes to the next target that can hold the request (the local model when it fits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.errors import ContextLengthExceeded
from gateway.routing.policy import Router
from gateway.routing.policy_file import load_policy, parse_policy
from gateway.routing.windows import ContextWindow, context_windows
from gateway.settings import load_settings
from tests.conftest import ROOT, RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud
from tests.routing.test_policy import feats

CLOUDS = ["small", "big"]
WINDOWS = {"small": ContextWindow(4000, 1000), "big": ContextWindow(100_000, 16384)}
ROUTER = Router(cloud_names=CLOUDS, local_names=["smol"], windows=WINDOWS)
DEFAULT = load_policy(ROOT / "policies" / "default.yaml", cloud_names=CLOUDS)
# Offline order with the big model before the local one.
SPILL_TEXT = (
    "version: 1\ndefault: local\nrules:\n"
    "  - {name: long-prompt, when: {prompt_tokens: {gt: 2000}}, route: cloud}\n"
    "offline: {order: [cache, big, local]}\n"
)
SPILL = parse_policy(SPILL_TEXT, cloud_names=CLOUDS)


def test_a_request_within_the_window_goes_where_it_went() -> None:
    d = ROUTER.decide(DEFAULT, feats(prompt_tokens=3000))
    assert (d.target, d.rule, d.fallbacks) == ("small", "long-prompt", ("cache", "local"))
    assert "context_window" not in d.reason


def test_max_tokens_counts_as_the_upstream_call_clamps_it() -> None:
    # 3000 + 1000 fits 4000; max_tokens 5000 is clamped to small's max_output_tokens 1000.
    assert ROUTER.decide(DEFAULT, feats(prompt_tokens=3000, max_tokens=1000)).target == "small"
    assert ROUTER.decide(DEFAULT, feats(prompt_tokens=3000, max_tokens=5000)).target == "small"
    d = ROUTER.decide(DEFAULT, feats(prompt_tokens=3001, max_tokens=1000))
    assert d.target == "local"
    assert "small cannot serve: prompt and max_tokens need about 4001 tokens" in d.reason
    assert "context_window 4000" in d.reason


def test_past_the_window_auto_goes_to_the_next_target_that_holds_it() -> None:
    d = ROUTER.decide(SPILL, feats(prompt_tokens=5000, exceeds_local_context=True))
    assert (d.target, d.rule, d.fallbacks) == ("big", "long-prompt", ("cache", "local"))
    assert d.reason.startswith("rule=long-prompt; prompt_tokens=5000 >2000; small cannot serve")


def test_past_the_window_auto_goes_local_when_the_local_model_fits() -> None:
    d = ROUTER.decide(DEFAULT, feats(prompt_tokens=5000))
    assert (d.target, d.rule, d.fallbacks) == ("local", "long-prompt", ("cache",))


def test_a_model_too_small_is_no_fallback() -> None:
    policy = parse_policy(
        "version: 1\ndefault: big\noffline: {order: [small, cache, local]}\n", cloud_names=CLOUDS
    )
    assert ROUTER.decide(policy, feats(prompt_tokens=100)).fallbacks == ("small", "cache", "local")
    assert ROUTER.decide(policy, feats(prompt_tokens=5000)).fallbacks == ("cache", "local")


def test_the_model_the_client_named_is_refused_as_openai_refuses_it() -> None:
    with pytest.raises(ContextLengthExceeded) as err:
        ROUTER.decide(SPILL, feats(model="small", prompt_tokens=3500, max_tokens=800))
    body = err.value.body()["error"]
    assert err.value.status == 400
    assert body["code"] == "context_length_exceeded"
    assert body["type"] == "invalid_request_error"
    assert body["param"] == "messages"
    assert "4000" in body["message"] and "4300" in body["message"]
    # The same prompt without max_tokens fits.
    assert ROUTER.decide(SPILL, feats(model="small", prompt_tokens=3500)).target == "small"


def test_nothing_that_holds_it_is_a_400() -> None:
    """The cloud model is too small and the local context too: no target left to try."""
    with pytest.raises(ContextLengthExceeded):
        ROUTER.decide(DEFAULT, feats(prompt_tokens=5000, exceeds_local_context=True))
    with pytest.raises(ContextLengthExceeded):  # images: the local model cannot either
        ROUTER.decide(DEFAULT, feats(prompt_tokens=5000, needs=("images",)))


def test_a_cascade_whose_cloud_is_too_small_is_skipped() -> None:
    policy = parse_policy(
        "version: 1\ndefault: local\nrules:\n"
        "  - name: unsure\n    route: cascade\n"
        "    cascade: {to: small, threshold: {mean_logprob: -1}}\n",
        cloud_names=CLOUDS,
    )
    assert ROUTER.decide(policy, feats(prompt_tokens=100)).cascade is not None
    d = ROUTER.decide(policy, feats(prompt_tokens=5000))
    assert (d.target, d.rule, d.cascade) == ("local", "default", None)


def test_without_windows_nothing_is_checked() -> None:
    plain = Router(cloud_names=CLOUDS, local_names=["smol"])
    assert plain.decide(DEFAULT, feats(prompt_tokens=10**6)).target == "small"


def test_the_windows_are_read_from_the_settings() -> None:
    settings = load_settings(
        cloud={
            "models": [
                {"name": "a", "model": "openai/a", "context_window": 8000},
                {"name": "b", "model": "openai/b", "max_output_tokens": 512},
            ]
        }
    )
    assert context_windows(settings.cloud.models) == {
        "a": ContextWindow(8000, 16384),
        "b": ContextWindow(128000, 512),
    }


# -- through a running gateway ----------------------------------------------------------------

LONG = [{"role": "user", "content": " ".join(f"word{i}" for i in range(1500))}]


@pytest.fixture
async def windowed(gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path) -> RunningGateway:
    policy = tmp_path / "policy.yaml"
    policy.write_text(SPILL_TEXT, encoding="utf-8")
    small = {**fake_cloud.model_entry("small", "openai/small-model"), "context_window": 1000}
    big = fake_cloud.model_entry("big", "openai/big-model")
    settings = cloud_settings(fake_cloud)
    settings["cloud"]["models"] = [small, big]
    return await gateway_factory(**settings, policy={"file": str(policy)})  # type: ignore[no-any-return]


async def test_gateway_refuses_the_named_model_and_sends_nothing(
    windowed: RunningGateway, fake_cloud: FakeCloud
) -> None:
    async with aiohttp.ClientSession() as s:
        body = {"model": "small", "messages": LONG, "max_tokens": 8}
        async with s.post(f"{windowed.base_url}/chat/completions", json=body) as r:
            assert r.status == 400
            err = (await r.json())["error"]
    assert (err["type"], err["code"], err["param"]) == (
        "invalid_request_error",
        "context_length_exceeded",
        "messages",
    )
    assert fake_cloud.chat_calls == 0


async def test_gateway_sends_auto_to_the_model_that_holds_it(
    windowed: RunningGateway, fake_cloud: FakeCloud
) -> None:
    async with aiohttp.ClientSession() as s:
        body = {"model": "auto", "messages": LONG, "max_tokens": 8}
        async with s.post(f"{windowed.base_url}/chat/completions", json=body) as r:
            assert r.status == 200, await r.text()
            reason = r.headers["x-gateway-reason"]
            await r.json()
    assert "small cannot serve" in reason
    assert "x-gateway-degraded" not in r.headers
    assert [q["model"] for q in fake_cloud.requests] == ["big-model"]
