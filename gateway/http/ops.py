"""Everything but answering: models, routing explanations, admin, metrics, health, the spec."""

from __future__ import annotations

import hmac
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..errors import InvalidRequest, ModelNotFound, Unauthorized
from ..pipeline.body import parse_request, read_json
from ..routing.policy_file import PolicyError
from ..schemas import ChatRequest
from ..services import (
    DISPATCHER,
    EMBEDDINGS,
    LIFECYCLE,
    LOCAL,
    METRICS,
    POLICY_STORE,
    SETTINGS,
)
from . import openapi
from .auth import bearer, tenant_of


async def list_models(request: web.Request) -> web.Response:
    created = int(request.app[LIFECYCLE].started_at)
    data = [
        {"id": mid, "object": "model", "created": created, "owned_by": owner}
        for mid, owner in _model_ids(request.app)
    ]
    return web.json_response({"object": "list", "data": data})


def _model_ids(app: web.Application) -> list[tuple[str, str]]:
    """Chat models, then embedding models not listed already (clients discover both here)."""
    ids = app[DISPATCHER].model_ids()
    embeddings = app.get(EMBEDDINGS)
    if embeddings is not None:
        seen = {mid for mid, _ in ids}
        extra = [embeddings.local.name, *embeddings.models]
        ids += [(m, "edge-gateway") for m in dict.fromkeys(extra) if m not in seen]
    return ids


async def retrieve_model(request: web.Request) -> web.Response:
    """One model in OpenAI's shape (`client.models.retrieve`), or 404 model_not_found."""
    wanted = request.match_info["model_id"]
    for mid, owner in _model_ids(request.app):
        if mid == wanted:
            created = int(request.app[LIFECYCLE].started_at)
            return web.json_response(
                {"id": mid, "object": "model", "created": created, "owned_by": owner}
            )
    raise ModelNotFound(
        f"The model '{wanted}' does not exist or you do not have access to it.", param="model"
    )


async def explain_route(request: web.Request) -> web.Response:
    """The decision for a chat request, with its features, without generating anything."""
    dispatcher = request.app[DISPATCHER]
    req = parse_request(ChatRequest, await read_json(request), request.app[SETTINGS].server)
    features, decision = await dispatcher.decide(req, tenant_of(request))
    return web.json_response(explanation(features, decision, dispatcher))


def explanation(features: Any, decision: Any, dispatcher: Any) -> dict[str, Any]:
    return {
        "route": decision.route,
        "target": decision.target,
        "local_model": decision.model,  # a local.models name the decision picked, if any
        "rule": decision.rule,
        "reason": decision.reason,
        "fallbacks": list(decision.fallbacks),
        "cache_mode": decision.cache_mode,
        "features": features.as_dict(),
        "breakers": {n: b.state.name.lower() for n, b in dispatcher.breakers.items()},
    }


async def admin_reload(request: web.Request) -> web.Response:
    store = request.app[POLICY_STORE]
    try:
        policy = store.reload()
    except PolicyError as exc:
        raise InvalidRequest(str(exc), code="invalid_policy", param="policy") from None
    return web.json_response(
        {
            "status": "reloaded",
            "file": str(store.path),
            "rules": len(policy.rules),
            "default": policy.default,
        }
    )


async def metrics(request: web.Request) -> web.Response:
    key = request.app[SETTINGS].server.metrics_key
    if key is not None and not _key_matches(request, key.get_secret_value()):
        raise Unauthorized("A valid metrics key is required.")
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _key_matches(request: web.Request, expected: str) -> bool:
    presented = bearer(request) or ""
    return hmac.compare_digest(presented.encode(), expected.encode())


async def openapi_document(request: web.Request) -> web.Response:
    return web.json_response(openapi.document())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    if request.app[LIFECYCLE].draining:
        return web.json_response({"status": "draining"}, status=503)
    if not request.app[LOCAL].ready:
        return web.json_response({"status": "loading", "local_model": False}, status=503)
    return web.json_response({"status": "ready", "local_model": True})
