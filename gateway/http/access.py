"""What each route declares about itself: who may call it, and whether it counts as traffic.

The route table (routes.py) gives every route a `AccessRule`; the auth middleware reads its
access class and the observe middleware its `traffic` flag, so no middleware keeps a list of
paths of its own. A route added without a policy stops the app at start-up (`declared`).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource


class Access(enum.Enum):
    PUBLIC = "public"  # anyone: probes, the spec, /metrics (whose handler checks its own key)
    KEY = "key"  # a client key while keys are set; the tenant is derived from it
    ADMIN = "admin"  # the admin key; on a box without any key, loopback and same-site only
    # The status page: it holds no data, so its handlers apply their own rule (an admin key
    # is set, or the request came over loopback) and answer in their own shape.
    LOOPBACK = "loopback"


@dataclass(frozen=True)
class AccessRule:
    access: Access
    traffic: bool = False  # counted in the request metrics, the request log and the status board


@dataclass(frozen=True)
class RoutePolicies:
    """The declared policy of every route's resource, and what a path no route serves gets."""

    by_resource: dict[AbstractResource, AccessRule]
    # Paths no route serves (404) take the policy of the first prefix they start with, else
    # `unmatched`; they are never traffic.
    prefixes: tuple[tuple[str, AccessRule], ...]
    unmatched: AccessRule

    def of(self, request: web.Request) -> AccessRule:
        resource = request.match_info.route.resource
        if resource is not None and request.match_info.http_exception is None:
            return self.by_resource[resource]
        # 405: the path is a route's, the method is not; it gets the route's access rule.
        path = request.path
        for r, policy in self.by_resource.items():
            if _serves(r, path):
                return replace(policy, traffic=False)
        for prefix, policy in self.prefixes:
            if path.startswith(prefix):
                return policy
        return self.unmatched


def _serves(resource: AbstractResource, path: str) -> bool:
    info = resource.get_info()
    if "path" in info:
        return bool(info["path"] == path)
    pattern = info.get("pattern")
    return pattern is not None and pattern.fullmatch(path) is not None


ROUTE_POLICIES: web.AppKey[RoutePolicies] = web.AppKey("route_policies", RoutePolicies)


def policy_of(request: web.Request) -> AccessRule:
    return request.app[ROUTE_POLICIES].of(request)


def undeclared(app: web.Application) -> list[str]:
    """Routes of the app's router without a declared policy ("GET /path")."""
    declared = app[ROUTE_POLICIES].by_resource if ROUTE_POLICIES in app else {}
    return [
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.resource is not None and route.resource not in declared
    ]


async def declared(app: web.Application) -> AsyncIterator[None]:
    """The first cleanup context: an app with a route nobody declared a policy for never
    starts, so no route is reachable under a rule it did not choose."""
    missing = undeclared(app)
    if missing:
        raise RuntimeError(f"routes without a declared access policy: {', '.join(missing)}")
    yield
