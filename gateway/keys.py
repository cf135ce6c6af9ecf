"""Typed application keys (aiohttp AppKey) for what create_app builds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .observe import RequestRecord
    from .services import Services

SERVICES: web.AppKey[Services] = web.AppKey("services")

# Per-request state set by middlewares and read by handlers and the request log.
REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)
TENANT: web.RequestKey[str | None] = web.RequestKey("tenant", object)  # type: ignore[arg-type]
RECORD: web.RequestKey[RequestRecord] = web.RequestKey("record", object)  # type: ignore[arg-type]
