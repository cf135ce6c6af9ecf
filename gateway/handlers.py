"""HTTP endpoints: parse, hand to the dispatcher, render JSON or SSE."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from . import openapi, sse
from .backends.base import Chunk, Endpoint
from .errors import GatewayError, InvalidRequest, RequestTimeout, ShuttingDown, Unauthorized
from .keys import RECORD, SERVICES
from .observe import RequestRecord
from .routing.policy import PolicyError
from .schemas import ChatRequest, CompletionRequest
from .service import CacheControl, Outcome
from .settings import ServerSettings
from .tenancy import bearer, tenant_of

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
        body = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        # ValueError also covers integers longer than Python's digit limit and NaN/Infinity.
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


def _no_constants(name: str) -> Any:
    """NaN and Infinity are not JSON; passed on, they would reach the cloud as invalid JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _has_lone_surrogate(body: dict[str, Any]) -> bool:
    """A \\ud800-style escape without its pair decodes to text that cannot be UTF-8 encoded."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
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


def _too_many(what: str, n: int, bound: int, setting: str, param: str, code: str) -> None:
    if n > bound:
        raise InvalidRequest(
            f"Too many {what}: {n} > {bound} (server.{setting}).", param=param, code=code
        )


def _check_shape(body: dict[str, Any], server: ServerSettings) -> None:
    """Bounds checked on the raw JSON, before validation spends time on a hostile body."""
    messages = body.get("messages")
    if isinstance(messages, list):
        _too_many(
            "messages",
            len(messages),
            server.max_messages,
            "max_messages",
            "messages",
            "too_many_messages",
        )
        parts = sum(
            len(m["content"])
            for m in messages
            if isinstance(m, dict) and isinstance(m.get("content"), list)
        )
        _too_many(
            "content parts",
            parts,
            server.max_content_parts,
            "max_content_parts",
            "messages",
            "too_many_content_parts",
        )
    for field in ("tools", "functions"):
        value = body.get(field)
        if isinstance(value, list):
            _too_many(field, len(value), server.max_tools, "max_tools", field, "too_many_tools")
    stop = body.get("stop")
    if isinstance(stop, list):
        _too_many(
            "stop sequences",
            len(stop),
            server.max_stop,
            "max_stop",
            "stop",
            "too_many_stop_sequences",
        )


def check_limits(req: ChatRequest | CompletionRequest, server: ServerSettings) -> None:
    """Bounds on what one request may ask for, beyond what the schema says."""
    if (req.n or 1) > server.max_n:
        raise InvalidRequest(f"n must be at most {server.max_n}.", param="n", code="invalid_value")
    if any(len(s) > server.max_stop_chars for s in req.stop_list()):
        raise InvalidRequest(
            f"A stop sequence is longer than {server.max_stop_chars} characters "
            "(server.max_stop_chars).",
            param="stop",
            code="stop_sequence_too_long",
        )
    chars = req.content_chars()
    if chars > server.max_content_chars:
        raise InvalidRequest(
            f"The request has {chars} characters of text; this gateway accepts at most "
            f"{server.max_content_chars} (server.max_content_chars).",
            param="messages" if isinstance(req, ChatRequest) else "prompt",
            code="content_too_long",
        )


def parse_request(
    model: type[ChatRequest] | type[CompletionRequest],
    body: dict[str, Any],
    server: ServerSettings,
) -> Any:
    """Validate a request body within the server's bounds (400 naming the bound past them)."""
    _check_shape(body, server)
    try:
        req = model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    check_limits(req, server)
    return req


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, ChatRequest, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, CompletionRequest, "completion")


async def _serve(
    request: web.Request,
    model: type[ChatRequest] | type[CompletionRequest],
    endpoint: Endpoint,
) -> web.StreamResponse:
    services = request.app[SERVICES]
    req = parse_request(model, await read_json(request), services.settings.server)
    tenant = tenant_of(request)
    budget_spent = await services.limiter.admit(tenant)
    cc = CacheControl.parse(request.headers.get("Cache-Control"))
    record = request[RECORD]
    deadline = _deadline(record.started, services.settings.server)
    try:
        async with asyncio.timeout_at(deadline):
            outcome = await services.dispatcher.handle(
                req, endpoint, tenant, cc, force_local=budget_spent
            )
    except TimeoutError:
        if asyncio.get_running_loop().time() < deadline:
            raise  # not our bound: someone else's timeout
        raise _timed_out(services.settings.server) from None
    record.outcome = outcome
    record.backend_s = outcome.backend_seconds
    if services.settings.server.log_bodies:
        record.prompt_text = req.prompt_text()
        record.answer_parts = []
    headers = outcome.headers()
    if outcome.completion is not None:
        record.usage_from(outcome.completion.obj)
        if record.answer_parts is not None:
            record.answer_parts.append(_text_of(outcome.completion.obj))
        return web.Response(
            body=outcome.completion.body(), content_type="application/json", headers=headers
        )
    return await _write_stream(
        request, outcome, headers, include_usage=req.include_usage(), deadline=deadline
    )


def _deadline(started: float, server: ServerSettings) -> float:
    """`server.request_timeout_s` after the request arrived, on the event loop's clock."""
    elapsed = time.perf_counter() - started
    return asyncio.get_running_loop().time() + server.request_timeout_s - elapsed


def _timed_out(server: ServerSettings) -> RequestTimeout:
    return RequestTimeout(
        f"The request took longer than {server.request_timeout_s:g} s (server.request_timeout_s)."
    )


def _text_of(obj: dict[str, Any]) -> str:
    """The answer text of a response or chunk (choice 0), for opt-in body logging."""
    choices = obj.get("choices") or [{}]
    c = choices[0]
    part = c.get("message") or c.get("delta") or {}
    return str(part.get("content") or c.get("text") or "")


async def _write_stream(
    request: web.Request,
    outcome: Outcome,
    headers: dict[str, str],
    *,
    include_usage: bool,
    deadline: float,
) -> web.StreamResponse:
    assert outcome.chunks is not None
    services = request.app[SERVICES]
    record = request[RECORD]
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
    bound = asyncio.timeout_at(deadline)
    try:
        async with bound:
            await _relay(resp, chunks, record, include_usage)
        await resp.write(sse.DONE)
    except TimeoutError:
        if not bound.expired():
            raise
        _stream_failed(record, _timed_out(services.settings.server))
        await resp.write(sse.error_frame(_timed_out(services.settings.server)))
    except GatewayError as exc:
        # Bytes already went out, so the status is spent: say it in-band, never end silently.
        _stream_failed(record, exc)
        await resp.write(sse.error_frame(exc))
    except asyncio.CancelledError:
        if services.stopping:
            # Cut by the shutdown grace: tell the client why before the connection closes.
            err = ShuttingDown("The gateway is shutting down; retry the request.")
            _stream_failed(record, err)
            with contextlib.suppress(Exception):
                await resp.write(sse.error_frame(err))
                await resp.write_eof()
        raise
    finally:
        record.backend_s += record.stream_wait_s
        await chunks.aclose()  # type: ignore[attr-defined]
    await resp.write_eof()
    return resp


def _stream_failed(record: RequestRecord, exc: GatewayError) -> None:
    record.stream_error = exc.code
    log.warning("stream failed mid-way", extra={"code": exc.code})


async def _relay(
    resp: web.StreamResponse,
    chunks: AsyncIterator[Chunk],
    record: RequestRecord,
    include_usage: bool,
) -> None:
    """Write the backend's chunks as SSE frames, counting backend time and usage."""
    while True:
        t0 = time.perf_counter()
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        # Backend time of a stream: until its first chunk, plus every wait for the next one.
        record.stream_wait_s += time.perf_counter() - t0
        if chunk.plain:
            payload = chunk.sse or sse.frame(chunk.data)
            await resp.write(payload)
            if record.answer_parts is not None:
                record.answer_parts += [
                    _text_of(json.loads(line[6:]))
                    for line in payload.split(b"\n")
                    if line.startswith(b"data: {")
                ]
            if record.ttft_s is None:
                record.ttft_s = time.perf_counter() - record.started
            continue
        obj = chunk.obj
        if record.answer_parts is not None:
            record.answer_parts.append(_text_of(obj))
        if obj.get("usage"):
            record.usage_from(obj)
            if not obj.get("choices") and not include_usage:
                continue  # a usage-only chunk the client did not ask for
        await resp.write(sse.frame(chunk.data))
        if record.ttft_s is None:
            record.ttft_s = time.perf_counter() - record.started


async def list_models(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    created = int(services.started_at)
    data = [
        {"id": mid, "object": "model", "created": created, "owned_by": owner}
        for mid, owner in services.dispatcher.model_ids()
    ]
    return web.json_response({"object": "list", "data": data})


async def explain_route(request: web.Request) -> web.Response:
    """The decision for a chat request, with its features, without generating anything."""
    services = request.app[SERVICES]
    req = parse_request(ChatRequest, await read_json(request), services.settings.server)
    features, decision = await services.dispatcher.decide(req, tenant_of(request))
    return web.json_response(explanation(features, decision, services.dispatcher))


def explanation(features: Any, decision: Any, dispatcher: Any) -> dict[str, Any]:
    return {
        "route": decision.route,
        "target": decision.target,
        "rule": decision.rule,
        "reason": decision.reason,
        "fallbacks": list(decision.fallbacks),
        "cache_mode": decision.cache_mode,
        "features": features.as_dict(),
        "breakers": {n: b.state.name.lower() for n, b in dispatcher.breakers.items()},
    }


async def admin_reload(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    try:
        policy = services.policies.reload()
    except PolicyError as exc:
        raise InvalidRequest(str(exc), code="invalid_policy", param="policy") from None
    return web.json_response(
        {
            "status": "reloaded",
            "file": str(services.policies.path),
            "rules": len(policy.rules),
            "default": policy.default,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    key = services.settings.server.metrics_key
    if key is not None and not _key_matches(request, key.get_secret_value()):
        raise Unauthorized("A valid metrics key is required.")
    body = generate_latest(services.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _key_matches(request: web.Request, expected: str) -> bool:
    presented = bearer(request) or ""
    return hmac.compare_digest(presented.encode(), expected.encode())


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    if services.draining:
        return web.json_response({"status": "draining"}, status=503)
    if not services.local.ready:
        return web.json_response({"status": "loading", "local_model": False}, status=503)
    return web.json_response({"status": "ready", "local_model": True})


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/route", explain_route)
    app.router.add_post("/admin/reload", admin_reload)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_document)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
