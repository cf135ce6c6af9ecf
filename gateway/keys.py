"""Typed application keys (aiohttp AppKey) for what create_app builds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .services import Services

SERVICES: web.AppKey[Services] = web.AppKey("services")
