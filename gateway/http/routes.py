"""The URL map: every endpoint the gateway serves, in one table."""

from __future__ import annotations

from aiohttp import web

from . import chat, embeddings, feedback, models, ops, responses, ui


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat.chat_completions)
    app.router.add_post("/v1/completions", chat.completions)
    app.router.add_post("/v1/responses", responses.create_response)
    app.router.add_get("/v1/responses/{response_id}", responses.retrieve_response)
    app.router.add_delete("/v1/responses/{response_id}", responses.delete_response)
    app.router.add_post("/v1/embeddings", embeddings.create_embeddings)
    app.router.add_get("/v1/models", ops.list_models)
    app.router.add_get("/v1/models/{model_id:.+}", ops.retrieve_model)
    app.router.add_post("/v1/route", ops.explain_route)
    app.router.add_post("/v1/feedback", feedback.feedback)
    app.router.add_post("/admin/reload", ops.admin_reload)
    app.router.add_get("/admin/models", models.list_local_models)
    app.router.add_post("/admin/models", models.swap_model)
    app.router.add_post("/admin/models/{name}/rollback", models.rollback_model)
    app.router.add_post("/admin/models/{name}/promote", models.promote_model)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_get("/openapi.json", ops.openapi_document)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/readyz", ops.readyz)
    app.router.add_get("/", ui.page)
    app.router.add_get("/ui/{name}", ui.asset)
    app.router.add_get("/admin/status", ui.admin_status)
    app.router.add_get("/admin/routing-curve", ui.routing_curve)
