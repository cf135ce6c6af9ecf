"""The chat and completions endpoints: parse, open, hand to the dispatcher, render JSON or SSE."""

from __future__ import annotations

from aiohttp import web

from ..backends.base import Endpoint
from ..pipeline.body import parse_request, read_json
from ..pipeline.outcome import choice_text
from ..schemas import ChatRequest, CompletionRequest
from .opening import Opening, services_of
from .stream import ChatFrames, write_stream


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, ChatRequest, "chat")


async def completions(request: web.Request) -> web.StreamResponse:
    return await _serve(request, CompletionRequest, "completion")


async def _serve(
    request: web.Request,
    model: type[ChatRequest] | type[CompletionRequest],
    endpoint: Endpoint,
) -> web.StreamResponse:
    services = services_of(request)
    req = parse_request(model, await read_json(request), services.settings.server)
    opening = await Opening.admit(request, services, req)
    outcome = await opening.dispatch(req, endpoint)
    opening.answered(outcome)
    await opening.learn(req, endpoint, outcome)
    headers = outcome.headers()
    if outcome.completion is not None:
        obj = outcome.completion.obj
        opening.usage(obj, lambda: choice_text(obj))
        return web.Response(
            body=outcome.completion.body(), content_type="application/json", headers=headers
        )
    return await write_stream(
        opening, outcome, headers, ChatFrames(include_usage=req.include_usage())
    )
