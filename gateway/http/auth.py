"""Who is calling and may they: the Bearer key, the tenant derived from it, the auth check."""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from urllib.parse import urlsplit

from aiohttp import web

from ..errors import Forbidden, Unauthorized, UnsupportedMediaType
from ..services import KEYRING, SETTINGS
from .access import Access, policy_of
from .middlewares import Handler
from .ui import over_loopback

TENANT: web.RequestKey[str | None] = web.RequestKey("tenant", object)  # type: ignore[arg-type]


def bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def tenant_id(key: str) -> str:
    """12 hex chars of sha256(key): stable, shareable in policies and logs, not reversible."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def tenant_of(request: web.Request) -> str | None:
    if TENANT in request:
        return request[TENANT]
    key = bearer(request)
    tenant = tenant_id(key) if key else None
    request[TENANT] = tenant
    return tenant


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    access = policy_of(request).access  # the route table's declaration (routes.py)
    if access in (Access.PUBLIC, Access.LOOPBACK):  # no key here; loopback's handlers check
        return await handler(request)
    ring = request.app[KEYRING]
    key = bearer(request)
    if access is Access.ADMIN:
        if _cross_site(request):
            # A web page open on the box can reach loopback; with no keys set (an open box)
            # it must still not swap models or reload the policy on the visitor's behalf.
            raise Forbidden(
                "The admin API does not take requests from other sites (Origin / Sec-Fetch-Site).",
                code="cross_site_request",
            )
        if ring.is_admin(key):
            return await handler(request)
        if ring.admin_digest is None and not ring.enforced:
            # An open box (no keys at all): admin is open to the box itself, as the status
            # page is, never to the LAN or a rebound DNS name (a foreign Host whose page sends
            # a matching Origin passes the cross-site check above).
            if not over_loopback(request):
                raise Forbidden(
                    "The admin API of a gateway without keys is served only on loopback; "
                    "set GATEWAY_SERVER__ADMIN_KEY to use it from elsewhere.",
                    code="admin_loopback_only",
                )
            return await handler(request)
        if ring.is_client(key):
            raise Forbidden("This key may not use the admin API.")
        raise Unauthorized("A valid admin key is required.")
    if not ring.enforced:
        _open_box_guard(request)
    else:
        if key is None:
            raise Unauthorized(
                "You didn't provide an API key. Provide it in the Authorization header "
                "as 'Authorization: Bearer YOUR_KEY'."
            )
        if not ring.is_client(key):
            raise Unauthorized("Incorrect API key provided.")
    request[TENANT] = tenant_id(key) if key else None
    return await handler(request)


def _open_box_guard(request: web.Request) -> None:
    """A box without client keys answers anyone who reaches it, so it must not be reached
    through a browser on someone else's behalf: a page of another site posting a form or a
    `text/plain` body (no CORS preflight), or a page whose own DNS name was rebound to this
    box (the browser then sends that name as Host and a matching Origin)."""
    if _cross_site(request):
        raise Forbidden(
            "A gateway without API keys does not take requests from other sites "
            "(Origin / Sec-Fetch-Site); set GATEWAY_SERVER__API_KEYS to serve browsers.",
            code="cross_site_request",
        )
    host = request.url.host or ""
    if not _plain_host(host) and host.lower() not in _allowed_hosts(request):
        raise Forbidden(
            f"A gateway without API keys answers only loopback names, IP addresses and "
            f"server.allowed_hosts, not the host name {host[:64]!r}.",
            code="host_not_allowed",
        )
    if request.method == "POST" and _simple_body(request):
        raise UnsupportedMediaType(
            "Request bodies are JSON: send Content-Type: application/json "
            "(a gateway without API keys refuses what a web page may send without asking)."
        )


# The bodies a page of any site may POST without a CORS preflight (the browser's "simple"
# requests), and none at all: a client of the API sends JSON and says so.
_SIMPLE_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def _simple_body(request: web.Request) -> bool:
    return "Content-Type" not in request.headers or request.content_type in _SIMPLE_TYPES


@functools.lru_cache(maxsize=256)  # a box is reached by a few names; parsing one is ~10 us
def _plain_host(host: str) -> bool:
    """A loopback name or an IP address: no DNS name an attacker's page could rebind."""
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
        ".localhost"
    ):
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _allowed_hosts(request: web.Request) -> set[str]:
    return {h.lower() for h in request.app[SETTINGS].server.allowed_hosts}


def _cross_site(request: web.Request) -> bool:
    """A browser sent this on behalf of another site (what browsers say; curl says nothing)."""
    if request.headers.get("Sec-Fetch-Site", "").lower() in ("cross-site", "same-site"):
        return True
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    if origin == "null":  # sandboxed frames, file:// pages
        return True
    return urlsplit(origin).netloc.lower() != (request.host or "").lower()
