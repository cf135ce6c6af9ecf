"""The chat and completions endpoints: parse, hand to the dispatcher, render JSON or SSE."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from .. import sse
from ..backends.base import Chunk, Endpoint
from ..cache import CacheControl
from ..dispatch import Outcome
from ..errors import GatewayError, RequestTimeout, ShuttingDown
from ..schemas import ChatRequest, CompletionRequest
from ..services import SERVICES
from ..settings import ServerSettings
from .auth import tenant_of
from .middlewares import REQUEST_ID, REQUEST_ID_HEADER
from .observe import RECORD, RequestRecord
from .requests import parse_request, read_json

log = logging.getLogger(__name__)


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
    deadline = deadline_of(record.started, services.settings.server)
    try:
        async with asyncio.timeout_at(deadline):
            outcome = await services.dispatcher.handle(
                req, endpoint, tenant, cc, force_local=budget_spent, on_decision=record.decided
            )
    except TimeoutError:
        if asyncio.get_running_loop().time() < deadline:
            raise  # not our bound: someone else's timeout
        raise timed_out(services.settings.server) from None
    record.outcome = outcome
    record.backend_s = outcome.backend_seconds
    # Text is captured only on opt-in: the log (server.log_bodies) or the status page.
    if services.settings.server.log_bodies or services.settings.ui.show_prompts:
        record.prompt_text = req.prompt_text()
        record.answer_parts = []
    if services.learning is not None:  # remember it for feedback; maybe shadow-judge it later
        await services.learning.answered(
            request[REQUEST_ID], req, endpoint, outcome, record, asyncio.current_task()
        )
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


async def open_event_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """Send the headers of a server-sent event stream (chat chunks or Responses events)."""
    resp = web.StreamResponse(
        headers={
            **headers,
            # prepare() sends the headers now, before the request-id middleware sees the response.
            REQUEST_ID_HEADER: request[REQUEST_ID],
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    return resp


def deadline_of(started: float, server: ServerSettings) -> float:
    """`server.request_timeout_s` after the request arrived, on the event loop's clock."""
    elapsed = time.perf_counter() - started
    return asyncio.get_running_loop().time() + server.request_timeout_s - elapsed


def timed_out(server: ServerSettings) -> RequestTimeout:
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
    resp = await open_event_stream(request, headers)
    chunks = outcome.chunks
    bound = asyncio.timeout_at(deadline)
    try:
        async with bound:
            await _relay(resp, chunks, record, include_usage)
        await resp.write(sse.DONE)
    except TimeoutError:
        if not bound.expired():
            raise
        _stream_failed(record, timed_out(services.settings.server))
        await resp.write(sse.error_frame(timed_out(services.settings.server)))
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


async def timed_chunks(chunks: AsyncIterator[Chunk], record: RequestRecord) -> AsyncIterator[Chunk]:
    """The backend's chunks, each wait for the next one added to the stream's backend time
    (until its first chunk, plus every wait after it)."""
    while True:
        t0 = time.perf_counter()
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        record.stream_wait_s += time.perf_counter() - t0
        yield chunk


async def _relay(
    resp: web.StreamResponse,
    chunks: AsyncIterator[Chunk],
    record: RequestRecord,
    include_usage: bool,
) -> None:
    """Write the backend's chunks as SSE frames, counting backend time and usage."""
    async for chunk in timed_chunks(chunks, record):
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
