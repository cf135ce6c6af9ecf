"""HTTP endpoints: parse, hand to the dispatcher, render JSON or SSE."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from . import sse
from .backends.base import Endpoint
from .errors import GatewayError, InvalidRequest
from .keys import SERVICES
from .schemas import ChatRequest, CompletionRequest
from .service import Outcome

log = logging.getLogger(__name__)

_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter"}


async def read_json(request: web.Request) -> dict[str, Any]:
    # Content-Type is not enforced: `curl -d` sends form encoding and users expect it to work.
    raw = await request.read()  # bounded by the app's client_max_size (413 above it)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            "The request body is not valid UTF-8.", code="invalid_encoding"
        ) from None
    try:
        body = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly.)",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if "\\ud" in text.lower() and _has_lone_surrogate(body):
        raise InvalidRequest("The request contains invalid unicode.", code="invalid_encoding")
    return body


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def validation_error(exc: ValidationError) -> InvalidRequest:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    param = loc[0] if loc else None
    path = ".".join(loc)
    code = _CODES.get(err["type"], "invalid_value" if "type" not in err["type"] else "invalid_type")
    if err["type"] == "missing":
        message = f"Missing required parameter: '{path}'."
    else:
        message = f"Invalid value for '{path}': {err['msg']}."
    return InvalidRequest(message, param=param, code=code)


def parse_request(model: type[ChatRequest] | type[CompletionRequest], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, ChatRequest, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, CompletionRequest, "completion")


async def _serve(
    request: web.Request,
    model: type[ChatRequest] | type[CompletionRequest],
    endpoint: Endpoint,
) -> web.StreamResponse:
    started = time.perf_counter()
    services = request.app[SERVICES]
    req = parse_request(model, await read_json(request))
    outcome = await services.dispatcher.handle(req, endpoint, request)
    headers = outcome.headers()
    if outcome.completion is not None:
        return web.Response(
            body=outcome.completion.body(), content_type="application/json", headers=headers
        )
    return await _write_stream(
        request, outcome, headers, include_usage=req.include_usage(), started=started
    )


async def _write_stream(
    request: web.Request,
    outcome: Outcome,
    headers: dict[str, str],
    *,
    include_usage: bool,
    started: float,
) -> web.StreamResponse:
    assert outcome.chunks is not None
    resp = web.StreamResponse(
        headers={
            **headers,
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    chunks = outcome.chunks
    try:
        async for chunk in chunks:
            obj = chunk.obj if not include_usage else None
            if obj is not None and not obj.get("choices") and "usage" in obj:
                continue  # a usage-only chunk the client did not ask for
            await resp.write(sse.frame(chunk.data))
        await resp.write(sse.DONE)
    except GatewayError as exc:
        # Bytes already went out, so the status is spent: say it in-band, never end silently.
        log.warning("stream failed mid-way", extra={"code": exc.code})
        await resp.write(sse.error_frame(exc))
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    await resp.write_eof()
    return resp


async def list_models(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    created = int(services.started_at)
    data = [
        {"id": mid, "object": "model", "created": created, "owned_by": owner}
        for mid, owner in services.dispatcher.model_ids()
    ]
    return web.json_response({"object": "list", "data": data})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if not services.local.ready:
        return web.json_response({"status": "loading", "local_model": False}, status=503)
    return web.json_response({"status": "ready", "local_model": True})
