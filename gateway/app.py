"""create_app(settings): wiring only. Nothing here runs at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from . import handlers
from .backends.local import LocalBackend
from .keys import SERVICES
from .middlewares import error_middleware, request_id_middleware
from .service import Dispatcher
from .services import Services
from .settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """Build a gateway application; resources open on startup and close on cleanup."""
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    local = LocalBackend(settings.local)
    app[SERVICES] = Services(
        settings=settings,
        local=local,
        dispatcher=Dispatcher(local=local),
    )
    app.cleanup_ctx.append(_local_model)
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_post("/v1/completions", handlers.completions)
    app.router.add_get("/v1/models", handlers.list_models)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    return app


async def _local_model(app: web.Application) -> AsyncIterator[None]:
    """Load the model in the background so /healthz answers while it loads."""
    local = app[SERVICES].local

    async def load() -> None:
        try:
            await local.load()
        except Exception:
            log.exception("loading the local model failed; /readyz stays 503")

    task = asyncio.create_task(load())
    yield
    task.cancel()
    await local.close()
