"""POST /v1/embeddings: parse, open, route through the embeddings service, render its JSON."""

from __future__ import annotations

import orjson
from aiohttp import web

from ..embeddings.request import parse_embedding_request
from ..errors import NotFound
from ..pipeline.body import read_json
from .opening import Opening, services_of


async def create_embeddings(request: web.Request) -> web.Response:
    services = services_of(request)
    service = services.embeddings
    if service is None:
        raise NotFound("This gateway serves no embeddings.", code="not_found")
    req = parse_embedding_request(await read_json(request), services.settings.server)
    opening = await Opening.admit(request, services, req)
    outcome, hits = await opening.run(
        service.handle(
            req,
            opening.tenant,
            no_cache=opening.cc.no_cache,
            no_store=opening.cc.no_store,
            budget_spent=opening.budget_spent,
            on_decision=opening.record.decided,
        )
    )
    opening.answered(outcome)
    assert outcome.completion is not None
    obj = outcome.completion.obj
    tokens = int(obj["usage"]["prompt_tokens"])
    cost = service.cost(outcome, tokens)
    if cost:
        services.metrics.cloud_spend.inc(cost)
    # Tokens count towards the key's tokens-per-minute limit and its cloud budget, as chat's;
    # charged here at the embedding model's price, so the shared accounting skips it.
    services.limiter.record(opening.tenant, tokens, cost, opening.record.admission)
    opening.record.prompt_tokens, opening.record.accounted = tokens, True
    headers = outcome.headers()
    headers["x-gateway-cache-inputs"] = f"{hits}/{len(obj['data'])}"
    # 2048 one-character inputs ask for 25 MB of float JSON: the standard encoder takes half
    # a second holding the GIL (a thread would not help); orjson takes 30 ms, same numbers.
    body = orjson.dumps(obj)
    return web.Response(body=body, content_type="application/json", headers=headers)
