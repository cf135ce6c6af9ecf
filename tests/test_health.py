"""Liveness and readiness."""

from __future__ import annotations

import aiohttp

from gateway.app import create_app
from gateway.services import SERVICES
from tests.conftest import RunningGateway, make_settings


async def test_healthz_and_readyz(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{gateway.url}/healthz") as r:
        assert r.status == 200
    async with http.get(f"{gateway.url}/readyz") as r:
        assert r.status == 200
        assert (await r.json())["local_model"] is True


async def test_readyz_is_503_until_the_model_loads(aiohttp_client_factory=None) -> None:  # type: ignore[no-untyped-def]
    app = create_app(make_settings())
    # Not started: the model is not loaded, so readiness must say no.
    assert app[SERVICES].local.ready is False
