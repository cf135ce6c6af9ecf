"""One failover rule: a request that needs the cloud and cannot get it answers 503
`local_cannot_serve` (with `Retry-After` while the breaker is open), whatever made the local
model unable: a need the features see (images, a prompt past the local context) or a refusal
the local model makes once it reads the request (a schema keyword its grammar cannot
enforce, a field it cannot honour). SDKs retry a 503; they never retry a 400.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from gateway.backends.health import Breaker, retry_after
from gateway.services import SERVICES
from tests.conftest import RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

HELLO = "Say hello in French."
IMAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    }
]
# Uniqueness of array items is beyond any grammar (and `not` beyond llama.cpp's): a schema
# the local model refuses whatever its grammar learns.
UNIQUE = {
    "type": "object",
    "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
    "required": ["tags"],
    "additionalProperties": False,
}
UNIQUE_FORMAT = {"type": "json_schema", "json_schema": {"name": "tags", "schema": UNIQUE}}
PROBE_S = 7


@pytest.fixture
async def cloud_down(gateway_factory: Any, fake_cloud: FakeCloud) -> RunningGateway:
    gw: RunningGateway = await gateway_factory(
        **cloud_settings(fake_cloud, probe_interval_s=PROBE_S)
    )
    await fake_cloud.set_mode("refuse")  # connection refused: the breaker opens at once
    return gw


def _unavailable(exc: openai.APIStatusError) -> dict[str, Any]:
    assert exc.status_code == 503, exc.body
    body: Any = exc.body
    assert body["code"] == "local_cannot_serve", body
    assert body["type"] == "service_unavailable"
    # The next probe of the open breaker is when the cloud may be back.
    assert exc.response.headers["Retry-After"] == str(PROBE_S)
    assert exc.response.headers["x-gateway-route"] == "cloud"
    return body  # type: ignore[no-any-return]


async def test_chat_that_needs_the_cloud_is_a_503_whatever_the_local_model_lacks(
    cloud_down: RunningGateway, fake_cloud: FakeCloud
) -> None:
    c = cloud_down.client()
    cases: list[tuple[str, dict[str, Any], str | None]] = [
        # Seen by the features before any model runs.
        ("auto", {"messages": IMAGE}, None),
        # Refused by the local model once it reads the request.
        (
            "auto",
            {
                "messages": [{"role": "user", "content": "Tag this."}],
                "response_format": UNIQUE_FORMAT,
            },
            "response_format.json_schema.schema",
        ),
        (
            "gpt-fake",
            {"messages": [{"role": "user", "content": HELLO}], "logit_bias": {"42": 5}},
            "logit_bias",
        ),
        ("auto", {"messages": IMAGE, "stream": True}, None),
        (
            "auto",
            {
                "messages": [{"role": "user", "content": "Tag this."}],
                "response_format": UNIQUE_FORMAT,
                "stream": True,
            },
            "response_format.json_schema.schema",
        ),
    ]
    for model, body, param in cases:
        with pytest.raises(openai.APIStatusError) as err:
            await c.chat.completions.create(model=model, max_tokens=8, **body)
        got = _unavailable(err.value)
        if param is not None:  # the field the local model could not serve, as on its 400
            assert got["param"] is not None and got["param"].startswith(param), got
    # The first request tried the cloud and opened the breaker; the rest skipped it.
    assert not cloud_down.app[SERVICES].dispatcher.breakers["gpt-fake"].reachable


async def test_responses_that_need_the_cloud_get_the_same_503(
    cloud_down: RunningGateway,
) -> None:
    c = cloud_down.client()
    with pytest.raises(openai.APIStatusError) as err:
        await c.responses.create(
            model="auto",
            input="Tag this.",
            text={"format": {"type": "json_schema", "name": "tags", "schema": UNIQUE}},
        )
    got = _unavailable(err.value)
    assert got["param"].startswith("text.format.schema"), got  # the client's name for it
    with pytest.raises(openai.APIStatusError) as err:
        await c.responses.create(
            model="auto",
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                    ],
                }
            ],
        )
    _unavailable(err.value)


async def test_the_local_models_own_400_stands_where_it_was_chosen(
    cloud_down: RunningGateway,
) -> None:
    """`model: local` asked for the local model: its refusal is the client's to fix."""
    c = cloud_down.client()
    with pytest.raises(openai.BadRequestError) as err:
        await c.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": "Tag this."}],
            response_format=UNIQUE_FORMAT,  # type: ignore[arg-type]
            max_tokens=8,
        )
    assert err.value.body["code"] == "unsupported_schema"  # type: ignore[index]
    assert "Retry-After" not in err.value.response.headers


async def test_a_spent_budget_refuses_alike(gateway_factory: Any, fake_cloud: FakeCloud) -> None:
    """The daily cloud budget spent: what the local model cannot serve is the budget's 429,
    for a schema it refuses as for an image (not a 400 that blames the request)."""
    gw = await gateway_factory(
        **cloud_settings(fake_cloud),
        limits={"daily_cloud_budget_usd": 1e-9},
    )
    c = gw.client()
    await c.chat.completions.create(model="gpt-fake", messages=[{"role": "user", "content": HELLO}])
    for body in (
        {"messages": IMAGE},
        {"messages": [{"role": "user", "content": "Tag this."}], "response_format": UNIQUE_FORMAT},
    ):
        with pytest.raises(openai.RateLimitError) as err:
            await c.chat.completions.create(model="auto", max_tokens=8, **body)
        assert err.value.body["code"] == "budget_exceeded", err.value.body  # type: ignore[index]


def test_retry_after_follows_the_open_breakers() -> None:
    now = [100.0]
    trial = Breaker("a", failures=1, retry_after_s=30, clock=lambda: now[0])
    probed = Breaker("b", failures=1, retry_after_s=float("inf"), probe_interval_s=2.5)
    assert retry_after([trial, probed]) == {}  # none open
    trial.failure("5xx", unreachable=False)
    now[0] = 110.2
    assert retry_after([trial]) == {"Retry-After": "20"}  # its next trial, rounded up
    probed.failure("timeout", unreachable=True)
    assert retry_after([trial, probed]) == {"Retry-After": "3"}  # the soonest: the next probe
    never = Breaker("c", failures=1, retry_after_s=float("inf"))
    never.failure("timeout", unreachable=True)
    assert retry_after([never]) == {}  # no time to promise
