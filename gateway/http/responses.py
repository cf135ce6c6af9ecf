"""POST /v1/responses (and GET/DELETE of a stored one): the Responses API on the chat pipeline.

The request becomes a chat request (responses/translate.py) and goes through the same
dispatcher as /v1/chat/completions: policy, cache, local model or cloud, failover. The
answer comes back in the Responses shape (responses/render.py) and, unless `store` is false,
is kept on the box (responses/store.py) for `previous_response_id` and retrieval.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from ..backends.base import Chunk
from ..cache import CacheControl
from ..dispatch import Outcome
from ..errors import GatewayError, InvalidRequest, NotFound, ShuttingDown
from ..responses.render import Events, Shell, history_of, whole
from ..responses.store import Stored
from ..responses.translate import (
    ChatPlan,
    ErrorNames,
    ResponsesRequest,
    check_lengths,
    referable,
    references,
    to_chat,
    with_references,
)
from ..schemas import ChatRequest
from ..services import SERVICES
from ..settings import ServerSettings
from ..state.responses import Responses
from .auth import tenant_of
from .chat import deadline_of, open_event_stream, timed_chunks, timed_out
from .middlewares import REQUEST_ID
from .observe import RECORD, RequestRecord
from .requests import parse_request, read_json, validation_error

log = logging.getLogger(__name__)

RESPONSE_STORE: web.AppKey[Responses] = web.AppKey("response_store")


def _too_many(what: str, n: int, bound: int, setting: str, param: str, code: str) -> None:
    if n > bound:
        raise InvalidRequest(
            f"Too many {what}: {n} > {bound} (server.{setting}).", param=param, code=code
        )


def _check_shape(body: dict[str, Any], server: ServerSettings) -> None:
    """The chat path's bounds, on the raw Responses body, before validation spends time."""
    items = body.get("input")
    if isinstance(items, list):
        _too_many(
            "input items", len(items), server.max_messages, "max_messages", "input",
            "too_many_messages",
        )  # fmt: skip
        parts = sum(
            len(i["content"])
            for i in items
            if isinstance(i, dict) and isinstance(i.get("content"), list)
        )
        _too_many(
            "content parts", parts, server.max_content_parts, "max_content_parts", "input",
            "too_many_content_parts",
        )  # fmt: skip
    tools = body.get("tools")
    if isinstance(tools, list):
        _too_many("tools", len(tools), server.max_tools, "max_tools", "tools", "too_many_tools")


def _parse(body: dict[str, Any], server: ServerSettings) -> ResponsesRequest:
    _check_shape(body, server)
    check_lengths(body)
    try:
        return ResponsesRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


async def create_response(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    server = services.settings.server
    req = _parse(await read_json(request), server)
    tenant = tenant_of(request)
    store = request.app[RESPONSE_STORE]
    previous = None
    if req.previous_response_id is not None:
        stored = await store.get(tenant, req.previous_response_id)
        if stored is None:
            raise NotFound(
                f"Previous response with id '{req.previous_response_id}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        previous = stored.history
    refs = references(req.input)
    if refs:
        # What the Vercel AI SDK sends for earlier turns when storing (its default): resolved
        # here, so every route (local, cloud, cache) gets the conversation as chat messages.
        found = await store.items(tenant, refs)
        req.input = with_references(req.input, found)
    plan = to_chat(req, previous)
    names = ErrorNames(plan.origins)
    try:
        chat: ChatRequest = parse_request(ChatRequest, plan.body, server)
        budget_spent = await services.limiter.admit(tenant)
        cc = CacheControl.parse(request.headers.get("Cache-Control"))
        record = request[RECORD]
        deadline = deadline_of(record.started, server)
        try:
            async with asyncio.timeout_at(deadline):
                outcome = await services.dispatcher.handle(
                    chat, "chat", tenant, cc, force_local=budget_spent, on_decision=record.decided
                )
        except TimeoutError:
            if asyncio.get_running_loop().time() < deadline:
                raise
            raise timed_out(server) from None
    except GatewayError as exc:
        raise names.fix(exc) from None
    record.outcome = outcome
    record.backend_s = outcome.backend_seconds
    if server.log_bodies or services.settings.ui.show_prompts:
        record.prompt_text = chat.prompt_text()
        record.answer_parts = []
    if services.learning is not None:  # as on chat: feedback by request id, maybe shadowed
        await services.learning.answered(
            request[REQUEST_ID], chat, "chat", outcome, record, asyncio.current_task()
        )
    shell = Shell(req, model=req.model)
    if outcome.completion is not None:
        record.usage_from(outcome.completion.obj)
        response = whole(shell, outcome.completion.obj)
        if record.answer_parts is not None:
            record.answer_parts.append(_output_text(response))
        await _keep(store, tenant, req, plan, response)
        return web.json_response(response, headers=outcome.headers())
    return await _write_stream(request, outcome, Events(shell), req, plan, deadline)


def _output_text(response: dict[str, Any]) -> str:
    return "".join(
        part.get("text", "")
        for item in response["output"]
        if item.get("type") == "message"
        for part in item.get("content") or []
    )


async def _keep(
    store: Responses,
    tenant: str | None,
    req: ResponsesRequest,
    plan: ChatPlan,
    response: dict[str, Any],
) -> None:
    """Store the response (unless `store: false`), encoded off the loop: it may be long."""
    if req.stores():
        history = plan.history + history_of(response["output"])
        # Referable later: the output items, and the input items with an id (a referenced
        # item is one of those: it lives on with this response, as on OpenAI).
        items = referable(req.input)
        items.update((item["id"], item) for item in response["output"])
        entry = Stored(response, history, items)
        if not await store.put(tenant, response["id"], entry):
            # Larger than one key may keep: answered, not kept (a follow-up or GET is a 404).
            log.warning(
                "response too large to store (responses.store_max_bytes_per_tenant)",
                extra={"response_id": response["id"]},
            )


def _objs(chunk: Chunk) -> list[dict[str, Any]]:
    """The chat chunk objects in a backend chunk (ready-made SSE frames may hold several)."""
    if chunk.sse is None:
        return [chunk.obj]
    return [json.loads(line[6:]) for line in chunk.sse.split(b"\n") if line.startswith(b"data: {")]


async def _write_stream(
    request: web.Request,
    outcome: Outcome,
    events: Events,
    req: ResponsesRequest,
    plan: ChatPlan,
    deadline: float,
) -> web.StreamResponse:
    assert outcome.chunks is not None
    services = request.app[SERVICES]
    record = request[RECORD]
    resp = await open_event_stream(request, outcome.headers())
    chunks = outcome.chunks
    bound = asyncio.timeout_at(deadline)
    try:
        async with bound:
            await _relay(resp, chunks, events, record)
        tail = events.end()
        assert events.final is not None
        # Stored before the client hears it is complete, so a follow-up can never miss it.
        await _keep(request.app[RESPONSE_STORE], tenant_of(request), req, plan, events.final)
        await resp.write(tail)
    except TimeoutError:
        if not bound.expired():
            raise
        await _fail(resp, events, record, timed_out(services.settings.server))
    except GatewayError as exc:
        await _fail(resp, events, record, exc)
    except asyncio.CancelledError:
        if services.stopping:
            err = ShuttingDown("The gateway is shutting down; retry the request.")
            with contextlib.suppress(Exception):
                await _fail(resp, events, record, err)
                await resp.write_eof()
        raise
    finally:
        record.backend_s += record.stream_wait_s
        await chunks.aclose()  # type: ignore[attr-defined]
    await resp.write_eof()
    return resp


async def _fail(
    resp: web.StreamResponse, events: Events, record: RequestRecord, exc: GatewayError
) -> None:
    # Bytes already went out, so the status is spent: say it in-band, never end silently.
    record.stream_error = exc.code
    log.warning("stream failed mid-way", extra={"code": exc.code})
    await resp.write(events.failed(exc))


async def _relay(
    resp: web.StreamResponse, chunks: AsyncIterator[Chunk], events: Events, record: RequestRecord
) -> None:
    async for chunk in timed_chunks(chunks, record):
        out = b""
        for obj in _objs(chunk):
            if obj.get("usage"):
                record.usage_from(obj)
            if record.answer_parts is not None:
                for choice in obj.get("choices") or []:
                    record.answer_parts.append((choice.get("delta") or {}).get("content") or "")
            out += events.chunk(obj)
        if out:
            await resp.write(out)
            if record.ttft_s is None:
                record.ttft_s = time.perf_counter() - record.started


async def retrieve_response(request: web.Request) -> web.Response:
    store, rid = request.app[RESPONSE_STORE], request.match_info["response_id"]
    stored = await store.get(tenant_of(request), rid)
    if stored is None:
        raise _not_found(request)
    return web.json_response(stored.response)


async def delete_response(request: web.Request) -> web.Response:
    store, rid = request.app[RESPONSE_STORE], request.match_info["response_id"]
    if not await store.delete(tenant_of(request), rid):
        raise _not_found(request)
    return web.json_response({"id": rid, "object": "response", "deleted": True})


def _not_found(request: web.Request) -> NotFound:
    rid = request.match_info["response_id"][:128]
    return NotFound(f"Response with id '{rid}' not found.", param="response_id")
