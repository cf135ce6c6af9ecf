"""The aiohttp runner the gateway serves with: OpenAI-shaped errors even below the app.

aiohttp answers requests it cannot parse (a 100 KB header, a broken request line) and handler
failures it sees itself with plain text and an ERROR log line with a traceback. Clients of an
OpenAI-compatible API expect JSON errors; a client that walks away is not a server error.
The hook for both is aiohttp's `RequestHandler.handle_error`, reached through the `Server`
that the runner builds; both classes are public aiohttp API.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from ..errors import GatewayError, InternalError, InvalidRequest

log = logging.getLogger(__name__)


class _Handler(RequestHandler):
    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, ConnectionError):
            log.info("client went away", extra={"error": type(exc).__name__})
            if request.writer.output_size > 0:
                raise ConnectionError("client went away mid-response")
        elif status >= 500:
            log.error("unhandled error below the app", exc_info=exc)
        else:
            log.info("unparsable request", extra={"status": status, "error": message})
        err: GatewayError = (
            InternalError("The server had an error processing your request.")
            if status >= 500
            else InvalidRequest(message or "Bad request.", code=f"http_{status}")
        )
        resp = web.json_response(err.body(), status=status)
        resp.force_close()
        return resp


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` whose connections answer protocol-level errors as OpenAI JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # same state, our connection handler class
        return server
