"""The URL map: every endpoint the gateway serves, with who may call it, in one table."""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractResource

from . import chat, embeddings, feedback, models, ops, responses, ui
from .access import ROUTE_POLICIES, Access, AccessRule, RoutePolicies
from .middlewares import Handler

PUBLIC = AccessRule(Access.PUBLIC)
TRAFFIC = AccessRule(Access.KEY, traffic=True)  # what clients come for: metered and logged
KEYED = AccessRule(Access.KEY)  # discovery and explanations: keyed, but not traffic
ADMIN = AccessRule(Access.ADMIN)
LOOPBACK = AccessRule(Access.LOOPBACK)

# (method, path, handler, policy). A path served by several methods declares one policy.
TABLE: tuple[tuple[str, str, Handler, AccessRule], ...] = (
    ("POST", "/v1/chat/completions", chat.chat_completions, TRAFFIC),
    ("POST", "/v1/completions", chat.completions, TRAFFIC),
    ("POST", "/v1/responses", responses.create_response, TRAFFIC),
    ("GET", "/v1/responses/{response_id}", responses.retrieve_response, TRAFFIC),
    ("DELETE", "/v1/responses/{response_id}", responses.delete_response, TRAFFIC),
    ("POST", "/v1/embeddings", embeddings.create_embeddings, TRAFFIC),
    ("GET", "/v1/models", ops.list_models, KEYED),
    ("GET", "/v1/models/{model_id:.+}", ops.retrieve_model, TRAFFIC),
    ("POST", "/v1/route", ops.explain_route, KEYED),
    ("POST", "/v1/feedback", feedback.feedback, TRAFFIC),
    ("POST", "/admin/reload", ops.admin_reload, ADMIN),
    ("GET", "/admin/models", models.list_local_models, ADMIN),
    ("POST", "/admin/models", models.swap_model, ADMIN),
    ("POST", "/admin/models/{name}/rollback", models.rollback_model, ADMIN),
    ("POST", "/admin/models/{name}/promote", models.promote_model, ADMIN),
    ("GET", "/metrics", ops.metrics, PUBLIC),  # its handler checks server.metrics_key
    ("GET", "/openapi.json", ops.openapi_document, PUBLIC),
    ("GET", "/healthz", ops.healthz, PUBLIC),  # orchestrators probe without credentials
    ("GET", "/readyz", ops.readyz, PUBLIC),
    ("GET", "/", ui.page, LOOPBACK),
    ("GET", "/ui/{name}", ui.asset, LOOPBACK),
    ("GET", "/admin/status", ui.admin_status, ADMIN),
    ("GET", "/admin/routing-curve", ui.routing_curve, ADMIN),
)
# Paths no route serves: the admin namespace answers as admin does (probing it tells nothing
# more than a 401), the status page's assets as the page does, anything else needs a key.
UNMATCHED = (("/admin/", ADMIN), ("/ui/", LOOPBACK))


def add_routes(app: web.Application) -> None:
    by_resource: dict[AbstractResource, AccessRule] = {}
    for method, path, handler, policy in TABLE:
        if method == "GET":
            route = app.router.add_get(path, handler)  # and HEAD, as aiohttp adds it
        else:
            route = app.router.add_route(method, path, handler)
        assert route.resource is not None
        if by_resource.setdefault(route.resource, policy) != policy:
            raise ValueError(f"{path}: every method of one path declares the same policy")
    app[ROUTE_POLICIES] = RoutePolicies(by_resource, prefixes=UNMATCHED, unmatched=KEYED)
