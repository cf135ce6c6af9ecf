"""POST /v1/responses (and GET/DELETE of a stored one): the Responses API on the chat pipeline.

The request becomes a chat request (responses/translate.py) and goes through the same
dispatcher as /v1/chat/completions: policy, cache, local model or cloud, failover. The
answer comes back in the Responses shape (responses/render.py) and, unless `store` is false,
is kept on the box (responses/in_process.py, or the state Redis: responses/stores.py) for
`previous_response_id` and retrieval.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .. import sse
from ..backends.base import Chunk
from ..errors import GatewayError, NotFound
from ..pipeline.body import RESPONSES_SHAPE, parse_request, read_json, validated
from ..pipeline.outcome import choice_text
from ..responses import replay
from ..responses.error_names import ErrorNames
from ..responses.in_process import Stored
from ..responses.references import (
    check_expanded_size,
    referable,
    references,
    with_references,
)
from ..responses.render import Events, Shell, history_of, whole
from ..responses.request import ResponsesRequest, check_lengths
from ..responses.stores import Responses
from ..responses.translate import ChatPlan, to_chat
from ..schemas import ChatRequest
from ..settings import ServerSettings
from .auth import tenant_of
from .observe import RequestRecord
from .opening import Opening, services_of
from .stream import open_event_stream, write_stream

log = logging.getLogger(__name__)

RESPONSE_STORE: web.AppKey[Responses] = web.AppKey("response_store")


def _parse(body: dict[str, Any], server: ServerSettings) -> ResponsesRequest:
    RESPONSES_SHAPE.check(body, server)  # the chat path's bounds, on the raw Responses body
    check_lengths(body)
    return validated(ResponsesRequest, body)


async def create_response(request: web.Request) -> web.StreamResponse:
    services = services_of(request)
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
        # Each distinct item fetched once, however often it is referenced, and the input's
        # size with every reference expanded bounded before anything is built from it.
        found = await store.items(tenant, list(dict.fromkeys(refs)))
        check_expanded_size(req.input, found, server.max_body_bytes)
        req.input = with_references(req.input, found)
    plan = to_chat(req, previous)
    names = ErrorNames(plan.origins)
    try:
        chat: ChatRequest = parse_request(ChatRequest, plan.body, server)
        opening = await Opening.admit(request, services, chat)
        outcome = await opening.dispatch(chat, "chat")
    except GatewayError as exc:
        raise names.fix(exc) from None
    opening.answered(outcome)
    await opening.learn(chat, "chat", outcome)  # as on chat: feedback by request id, maybe shadowed
    shell = Shell(req, model=req.model)
    if outcome.completion is not None:
        obj = outcome.completion.obj
        opening.usage(obj, lambda: choice_text(obj))  # the text of the response's message
        response = whole(shell, obj)
        await _keep(store, tenant, req, plan, response)
        return web.json_response(response, headers=outcome.headers())
    events = _Events(Events(shell), store, tenant, req, plan)
    return await write_stream(opening, outcome, outcome.headers(), events)


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


class _Events:
    """The Responses encoder of the stream writer: chat chunks in, Responses events out."""

    def __init__(
        self,
        events: Events,
        store: Responses,
        tenant: str | None,
        req: ResponsesRequest,
        plan: ChatPlan,
    ) -> None:
        self.events, self.store, self.tenant, self.req, self.plan = (
            events, store, tenant, req, plan
        )  # fmt: skip

    def encode(self, chunk: Chunk, record: RequestRecord) -> bytes:
        out = b""
        # Ready-made SSE frames may hold several chat chunks.
        for obj in [chunk.obj] if chunk.sse is None else sse.objects(chunk.sse):
            if obj.get("usage"):
                record.usage_from(obj)
            if record.answer_parts is not None:
                for choice in obj.get("choices") or []:
                    record.answer_parts.append((choice.get("delta") or {}).get("content") or "")
            out += self.events.chunk(obj)
        return out

    async def end(self) -> bytes:
        tail = self.events.end()
        assert self.events.final is not None
        # Stored before the client hears it is complete, so a follow-up can never miss it.
        await _keep(self.store, self.tenant, self.req, self.plan, self.events.final)
        return tail

    def failed(self, exc: GatewayError) -> bytes:
        return self.events.failed(exc)


async def retrieve_response(request: web.Request) -> web.StreamResponse:
    """The stored response, as JSON or (`stream=true`) replayed as its event stream."""
    query = request.query
    stream = replay.stream_param(query.get("stream"))
    after = replay.starting_after(query.get("starting_after"))
    replay.refuse_include(query.getall("include[]", []) + query.getall("include", []))
    store, rid = request.app[RESPONSE_STORE], request.match_info["response_id"]
    stored = await store.get(tenant_of(request), rid)
    if stored is None:
        raise _not_found(request)
    if not stream:
        return web.json_response(stored.response)
    resp = await open_event_stream(request, {})
    for frame in replay.events(stored.response, after):
        await resp.write(frame)  # each write waits for room: a slow reader holds one frame
    await resp.write_eof()
    return resp


async def delete_response(request: web.Request) -> web.Response:
    store, rid = request.app[RESPONSE_STORE], request.match_info["response_id"]
    if not await store.delete(tenant_of(request), rid):
        raise _not_found(request)
    return web.json_response({"id": rid, "object": "response", "deleted": True})


def _not_found(request: web.Request) -> NotFound:
    rid = request.match_info["response_id"][:128]
    return NotFound(f"Response with id '{rid}' not found.", param="response_id")
