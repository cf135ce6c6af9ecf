"""The status page at / (with its assets under /ui/) and the JSON behind it, /admin/status.

Who may see it: with an admin key configured, anyone may load the page (it holds no data) and
/admin/status needs the key (auth_middleware checks it). Without an admin key both are served
only over loopback: the connection's local address and the Host header must both be loopback,
so neither a LAN visitor nor a DNS-rebinding web page gets in. An SSH tunnel works.
"""

from __future__ import annotations

import functools
import ipaddress
from pathlib import Path
from typing import Any

from aiohttp import web

from ..errors import Forbidden, NotFound
from ..services import KEYRING, LEARNING, SETTINGS
from .snapshot import snapshot

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
# The only files served: a fixed list, so no request path ever reaches the filesystem.
_ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "style.css": "text/css",
}
_SECURITY_HEADERS = {
    # Everything comes from the gateway itself; no inline script, no frames, no referrer.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_LOOPBACK_NAMES = ("localhost", "localhost.")
_CLOSED = (
    "The status page is served only on loopback while no admin key is set. Open it through "
    "an SSH tunnel (ssh -L 8080:127.0.0.1:8080 box, then http://127.0.0.1:8080/) or set "
    "GATEWAY_SERVER__ADMIN_KEY."
)


@functools.cache
def _read(name: str) -> bytes:
    return (UI_DIR / name).read_bytes()


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0]).is_loopback
    except ValueError:
        return False


def over_loopback(request: web.Request) -> bool:
    """The request reached a loopback address and names a loopback host."""
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    local_addr = sock[0] if isinstance(sock, tuple) and sock else None
    return _is_loopback(local_addr) and _is_loopback(request.url.host)


def _allowed(request: web.Request) -> bool:
    if not request.app[SETTINGS].ui.enabled:
        raise NotFound("Unknown endpoint.", code="unknown_url")
    return request.app[KEYRING].admin_digest is not None or over_loopback(request)


def _file(name: str) -> web.Response:
    return web.Response(
        body=_read(name),
        content_type=_ASSETS[name],
        charset="utf-8",
        headers=_SECURITY_HEADERS,
    )


async def page(request: web.Request) -> web.Response:
    if not _allowed(request):
        return web.Response(text=_CLOSED + "\n", status=403, headers=_SECURITY_HEADERS)
    return _file("index.html")


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _ASSETS or not _allowed(request):
        raise NotFound("Unknown endpoint.", code="unknown_url")
    return _file(name)


async def routing_curve(request: web.Request) -> web.Response:
    """The routing curve of the box's own labels (learning.curve), or why there is none."""
    if not _allowed(request):
        raise Forbidden(_CLOSED)
    learning = request.app.get(LEARNING)
    body: dict[str, Any] = {"enabled": False, "ready": False, "reason": "learning is off"}
    if learning is not None:
        body = {"enabled": True, **(await learning.curve())}
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def admin_status(request: web.Request) -> web.Response:
    """Everything the page shows, as JSON; the admin key, if any, was checked by auth."""
    if not _allowed(request):
        raise Forbidden(_CLOSED)
    return web.json_response(snapshot(request.app), headers={"Cache-Control": "no-store"})
