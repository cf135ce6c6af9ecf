"""POST /v1/embeddings: parse, route through the embeddings service, render OpenAI's JSON."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from ..cache import CacheControl
from ..embeddings.request import parse_embedding_request
from ..errors import NotFound
from ..services import SERVICES
from .auth import tenant_of
from .chat import deadline_of, timed_out
from .observe import RECORD
from .requests import read_json


async def create_embeddings(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    service = services.embeddings
    if service is None:
        raise NotFound("This gateway serves no embeddings.", code="not_found")
    req = parse_embedding_request(await read_json(request), services.settings.server)
    tenant = tenant_of(request)
    record = request[RECORD]
    record.admission = await services.limiter.admit(tenant, req)
    budget_spent = record.admission.budget_spent
    cc = CacheControl.parse(request.headers.get("Cache-Control"))
    deadline = deadline_of(record.started, services.settings.server)
    try:
        async with asyncio.timeout_at(deadline):
            outcome, hits = await service.handle(
                req,
                tenant,
                no_cache=cc.no_cache,
                no_store=cc.no_store,
                force_local=budget_spent,
                on_decision=record.decided,
            )
    except TimeoutError:
        if asyncio.get_running_loop().time() < deadline:
            raise
        raise timed_out(services.settings.server) from None
    record.outcome = outcome
    record.backend_s = outcome.backend_seconds
    assert outcome.completion is not None
    obj = outcome.completion.obj
    tokens = int(obj["usage"]["prompt_tokens"])
    cost = service.cost(outcome, tokens)
    if cost:
        services.metrics.cloud_spend.inc(cost)
    # Tokens count towards the key's tokens-per-minute limit and its cloud budget, as chat's;
    # charged here at the embedding model's price, so the shared accounting skips it.
    services.limiter.record(tenant, tokens, cost, record.admission)
    record.prompt_tokens, record.accounted = tokens, True
    headers = outcome.headers()
    headers["x-gateway-cache-inputs"] = f"{hits}/{len(obj['data'])}"
    # 2048 one-character inputs ask for 25 MB of float JSON: the standard encoder takes half
    # a second holding the GIL (a thread would not help); orjson takes 30 ms, same numbers.
    body = orjson.dumps(obj)
    return web.Response(body=body, content_type="application/json", headers=headers)
