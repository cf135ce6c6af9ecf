"""Request ids and error rendering: the outermost and innermost middlewares."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import (
    GatewayError,
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)

# nginx's code for "the client closed the connection": not a server error, not a client error
# the client can see. It is its own label so that walk-aways never fire an error-rate alert.
CLIENT_CLOSED = 499

REQUEST_ID_HEADER = "x-request-id"
# A client-supplied id is echoed only when it is short and plain, so it cannot inject into logs.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def error_response(exc: GatewayError, request_id: str | None = None) -> web.Response:
    headers = dict(exc.headers)
    if request_id:
        headers[REQUEST_ID_HEADER] = request_id
    return web.json_response(exc.body(), status=exc.status, headers=headers)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    rid = incoming if _SAFE_ID.match(incoming) else f"req_{uuid.uuid4().hex}"
    request[REQUEST_ID] = rid
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers[REQUEST_ID_HEADER] = rid
        raise
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = rid
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as OpenAI-shaped JSON; a stack trace never reaches the client."""
    rid = request.get(REQUEST_ID)
    try:
        return await handler(request)
    except GatewayError as exc:
        return error_response(exc, rid)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http(exc), rid)
    except ConnectionResetError:
        # The client went away mid-response: nothing left to tell it, and nothing wrong with
        # the server. aiohttp ignores a connection error while it finishes this response.
        log.info("client went away", extra={"request_id": rid})
        return web.Response(status=CLIENT_CLOSED)
    except TimeoutError:
        log.warning("request timed out", extra={"request_id": rid})
        return error_response(RequestTimeout("The request timed out."), rid)
    except Exception:
        log.exception("unhandled error", extra={"request_id": rid})
        return error_response(
            InternalError("The server had an error processing your request."), rid
        )


def _from_http(exc: web.HTTPException) -> GatewayError:
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLarge("Request body too large.")
    if isinstance(exc, web.HTTPNotFound):
        return NotFound("Unknown endpoint.", code="unknown_url")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return MethodNotAllowed(f"Method {exc.method} not allowed.")
    err = InvalidRequest(exc.reason or "Bad request.", code=f"http_{exc.status}")
    err.status = exc.status  # type: ignore[misc]
    return err
