"""The route table: every route declares who may call it and whether it counts as traffic."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from gateway.app import create_app
from gateway.http.access import ROUTE_POLICIES, Access, AccessRule, policy_of, undeclared
from gateway.http.routes import TABLE, add_routes
from gateway.http.server import GatewayRunner
from tests.conftest import make_settings


def test_every_registered_route_declares_a_policy() -> None:
    app = create_app(make_settings())
    policies = app[ROUTE_POLICIES].by_resource
    routes = list(app.router.routes())
    assert len(routes) > len(TABLE)  # HEAD beside every GET, as aiohttp adds it
    for route in routes:
        assert route.resource in policies, f"{route.method} {route.resource}"
    assert undeclared(app) == []


async def test_a_route_added_without_a_policy_stops_the_app_at_start() -> None:
    app = create_app(make_settings())

    async def sneaky(request: web.Request) -> web.Response:
        return web.json_response({})

    app.router.add_get("/v1/sneaky", sneaky)
    assert sorted(undeclared(app)) == ["GET /v1/sneaky", "HEAD /v1/sneaky"]
    runner = GatewayRunner(app)
    with pytest.raises(RuntimeError, match=r"without a declared access policy: .*GET /v1/sneaky"):
        await runner.setup()
    await runner.cleanup()


async def _policy(app: web.Application, method: str, path: str) -> AccessRule:
    request = make_mocked_request(method, path, app=app)
    match = await app.router.resolve(request)  # as aiohttp does before any middleware
    match.add_app(app)
    request._match_info = match
    return policy_of(request)


@pytest.mark.parametrize(
    ("method", "path", "access", "traffic"),
    [
        ("POST", "/v1/chat/completions", Access.KEY, True),
        ("GET", "/v1/chat/completions", Access.KEY, False),  # 405: its rule, never traffic
        ("GET", "/v1/models", Access.KEY, False),
        ("HEAD", "/v1/models/local", Access.KEY, True),
        ("POST", "/v1/route", Access.KEY, False),
        ("GET", "/healthz", Access.PUBLIC, False),
        ("POST", "/healthz", Access.PUBLIC, False),
        ("GET", "/metrics", Access.PUBLIC, False),
        ("GET", "/", Access.LOOPBACK, False),
        ("GET", "/ui/app.js", Access.LOOPBACK, False),
        ("GET", "/ui/a/b", Access.LOOPBACK, False),  # no route: the status page's namespace
        ("GET", "/admin/status", Access.ADMIN, False),
        ("GET", "/admin/nothing-here", Access.ADMIN, False),
        ("GET", "/v1/nothing-here", Access.KEY, False),
    ],
)
async def test_policy_of_a_request(method: str, path: str, access: Access, traffic: bool) -> None:
    app = web.Application()
    add_routes(app)
    assert await _policy(app, method, path) == AccessRule(access, traffic=traffic)
