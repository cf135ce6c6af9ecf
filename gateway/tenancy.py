"""Who is calling: a tenant id derived from the API key presented, never the key itself."""

from __future__ import annotations

import hashlib

from aiohttp import web

from .keys import TENANT


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
