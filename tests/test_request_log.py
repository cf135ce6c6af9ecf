"""The request log line keeps the routing of a request that failed after it was routed.

A 4xx from the local model (a schema it refuses), a 503 when nothing can serve: the headers
say where the request was routed, and so must the log line, the metrics and the status page.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import openai
import pytest

from gateway.http.auth import tenant_id
from tests.conftest import RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

KEY = "sk-log-tenant"
# Uniqueness of items is beyond any grammar: the local model refuses this schema.
SCHEMA = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
REFUSED_SCHEMA = {"type": "json_schema", "json_schema": {"name": "tags", "schema": SCHEMA}}


def _lines(caplog: pytest.LogCaptureFixture) -> list[Any]:
    return [r for r in caplog.records if r.name == "gateway.request"]


async def test_a_4xx_after_routing_is_logged_with_its_route(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture, http: aiohttp.ClientSession
) -> None:
    c = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    with caplog.at_level(logging.INFO, logger="gateway.request"):
        with pytest.raises(openai.BadRequestError) as err:
            await c.chat.completions.create(
                model="local",
                messages=[{"role": "user", "content": "Tag this."}],
                response_format=REFUSED_SCHEMA,  # type: ignore[arg-type]
                max_tokens=4,
            )
        with pytest.raises(openai.BadRequestError):  # the same on /v1/responses
            await c.responses.create(
                model="local",
                input="Tag this.",
                text={"format": {"type": "json_schema", "name": "tags", "schema": SCHEMA}},
            )
        with pytest.raises(openai.BadRequestError):  # refused before routing: no route
            await c.chat.completions.create(model="local", messages=[])
    assert err.value.response.headers["x-gateway-route"] == "local"
    chat, responses, unrouted = _lines(caplog)
    for line in (chat, responses):
        assert line.status == 400
        assert line.route == "local" and line.rule == "model"
        assert line.tenant == tenant_id(KEY)
        assert line.reason and "model=local" in line.reason
    assert unrouted.route == "none" and unrouted.rule == "none" and unrouted.tenant is None

    async with http.get(f"{gateway.url}/metrics") as r:
        metrics = await r.text()
    assert 'edge_gateway_requests_total{route="local",rule="model",status_class="4xx"} 2.0' in (
        metrics
    )


async def test_a_503_after_failover_is_logged_with_its_route(
    gateway_factory: Any, fake_cloud: FakeCloud, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway_factory(**cloud_settings(fake_cloud))
    await fake_cloud.set_mode("refuse")
    c = openai.AsyncOpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0)
    with caplog.at_level(logging.INFO, logger="gateway.request"):
        with pytest.raises(openai.APIStatusError) as err:
            await c.responses.create(
                model="auto",
                input="Tag this.",
                text={
                    "format": {
                        "type": "json_schema",
                        "name": "tags",
                        "schema": SCHEMA,
                    }
                },
            )
    assert err.value.status_code == 503
    (line,) = _lines(caplog)
    assert line.status == 503
    assert line.route == err.value.response.headers["x-gateway-route"] == "cloud"
    assert line.rule == "needs-cloud" and line.tenant == tenant_id(KEY)
