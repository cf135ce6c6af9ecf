"""create_app(settings): wiring only. Nothing here runs at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from .backends import health
from .backends.base import Backend
from .backends.client import upstream_session
from .backends.health import Breaker
from .cache import LRUStore, RedisStore, ResponseCache, Store
from .costs import Prices
from .dispatch import Dispatcher
from .embeddings.service import EmbeddingService
from .http import routes
from .http.access import declared
from .http.auth import auth_middleware
from .http.middlewares import error_middleware, request_id_middleware
from .http.observe import observe_middleware
from .http.responses import RESPONSE_STORE
from .keyring import KeyRing
from .limits import Counters, Limiter, MemoryCounters, RedisCounters
from .local.pool import ModelPool
from .metrics import Metrics
from .responses.stores import build_responses
from .routing.complexity import ComplexityScorer, Scorer
from .routing.features import FeatureExtractor
from .routing.live_policy import PolicyStore
from .routing.policy import Router
from .routing.tokens import encoder
from .routing.windows import context_windows
from .semantic.semcache import SemanticCache
from .services import (
    DISPATCHER,
    EMBEDDINGS,
    KEYRING,
    LEARNING,
    LIFECYCLE,
    LIMITER,
    LOCAL,
    METRICS,
    OUTBOX,
    POLICY_STORE,
    PRICES,
    SERVICES,
    SETTINGS,
    STATUS,
    Lifecycle,
    Services,
)
from .settings import Settings
from .state import STATE, build_state, state_ctx
from .status import StatusBoard
from .telemetry import Outbox

if TYPE_CHECKING:
    from .learning import Learning
    from .state.state_store import StateStore

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> web.Application:
    """Build a gateway application; resources open on startup and close on cleanup.

    Raises PolicyError when the policy file is invalid: a gateway never starts on a bad policy.
    """
    app = web.Application(
        # Order matters: the id exists before anything logs; accounting sees the final status
        # because errors are rendered inside it.
        middlewares=[request_id_middleware, observe_middleware, error_middleware, auth_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    # Every resource under its own key, set here once and never replaced; each one's opening
    # and closing is its own cleanup context below.
    app[SETTINGS] = settings
    app[LIFECYCLE] = Lifecycle()
    metrics = app[METRICS] = Metrics()
    status = app[STATUS] = StatusBoard(
        recent=settings.ui.recent_decisions, show_prompts=settings.ui.show_prompts
    )
    local = app[LOCAL] = ModelPool(settings.local, metrics=metrics)
    cloud_names = [m.name for m in settings.cloud.models]

    def reloaded(result: str) -> None:
        metrics.policy_reloads.labels(result).inc()
        status.policy_reloaded(result)

    embedding_names = [m.name for m in settings.cloud.embedding_models]
    policies = app[POLICY_STORE] = PolicyStore(
        settings.policy.file,
        cloud_names=cloud_names + embedding_names,
        on_reload=reloaded,
        local_models=local.names,
    )
    breakers = build_breakers(settings, metrics)
    cache = build_cache(settings, metrics) if cloud_names else None
    clouds: dict[str, Backend] = {}  # filled on startup: needs the session (and maybe litellm)
    dispatcher = app[DISPATCHER] = Dispatcher(
        local=local,
        clouds=clouds,
        breakers=breakers,
        extractor=FeatureExtractor(scorer=ComplexityScorer(), local_n_ctx=settings.local.n_ctx),
        router=Router(
            cloud_names=cloud_names,
            local_names=local.names,
            windows=context_windows(settings.cloud.models),
        ),
        policies=policies,
        cache=cache,
        semantic=SemanticCache.build(settings, metrics) if cache is not None else None,
        max_prompt_tokens=settings.server.max_prompt_tokens,
    )
    keyring = app[KEYRING] = KeyRing(settings.server)
    prices = app[PRICES] = Prices([m.model for m in settings.cloud.models])
    app[LIMITER] = build_limiter(settings, metrics, keyed=keyring.enforced, prices=prices)
    app[STATE] = build_state(settings)  # shared by replicas; None: this process alone
    app[RESPONSE_STORE] = build_responses(settings, app[STATE])  # /v1/responses' stored answers
    if settings.learning.enabled:
        app[LEARNING] = build_learning(app, dispatcher.extractor.scorer, app[STATE])
    app[EMBEDDINGS] = build_embeddings(settings, policies, metrics)
    app[SERVICES] = Services(app)  # a read-only view by name, for code holding the app
    _watch_local(metrics, local, settings)
    app.cleanup_ctx.append(declared)  # first: an app with an undeclared route never starts
    app.cleanup_ctx.append(_local_model)
    app.cleanup_ctx.append(_cloud_backends)
    app.cleanup_ctx.append(_background)
    app.cleanup_ctx.append(_limiter)
    app.cleanup_ctx.append(_cache)
    app.cleanup_ctx.append(_telemetry)  # sets OUTBOX once the outbox opened
    app.cleanup_ctx.append(_learning)  # last in, first out: judgements stop before the session
    app.cleanup_ctx.append(_embeddings)
    app.cleanup_ctx.insert(0, state_ctx)  # closed last: learning may write labels until then
    app.on_shutdown.append(_draining)
    routes.add_routes(app)
    return app


def build_breakers(settings: Settings, metrics: Metrics) -> dict[str, Breaker]:
    """One breaker per cloud model, its state mirrored in metrics."""
    return health.build_breakers(settings.cloud.models, settings.cloud, metrics)


def build_outbox(
    settings: Settings, metrics: Metrics, breakers: dict[str, Breaker]
) -> Outbox | None:
    """The telemetry outbox when an endpoint is set; without one nothing is stored."""
    if settings.telemetry.logs_url() is None:
        return None
    # The uplink counts as up while any cloud target's breaker is not open (or none exist).
    return Outbox(
        settings.telemetry,
        metrics,
        reachable=lambda: not breakers or any(b.reachable for b in breakers.values()),
    )


def build_learning(
    app: web.Application, shipped: Scorer, state: StateStore | None = None
) -> Learning:
    """The label store and its loop (gateway/learning/); only when learning.enabled."""
    from .learning import Learning

    return Learning(
        app[SETTINGS],
        dispatcher=app[DISPATCHER],
        policies=app[POLICY_STORE],
        registry=app[METRICS].registry,
        prices=app[PRICES],
        shipped=shipped,
        # Distinct client keys: with two or more, labels come from tenants who must not
        # steer the router for one another (learning/retrain.py).
        keys=len(set(app[KEYRING].client_digests)),
        state=state,
    )


async def _learning(app: web.Application) -> AsyncIterator[None]:
    learning = app.get(LEARNING)  # None unless learning.enabled
    if learning is not None:
        learning.start()
    yield
    if learning is not None:
        await learning.close()  # cancels shadow judgements, then closes the store


def _watch_local(metrics: Metrics, local: ModelPool, settings: Settings) -> None:
    metrics.local_queue_depth.set_function(lambda: local.queue_depth)
    metrics.local_in_flight.set_function(lambda: local.in_flight)
    metrics.local_queue_capacity.set(settings.local.max_queue)
    metrics.local_slots.set(settings.local.parallel)
    metrics.local_slots_busy.set_function(lambda: local.slots_busy)
    metrics.local_models_loaded.set_function(lambda: len(local.resident()))


async def _draining(app: web.Application) -> None:
    """Shutting down: say not-ready so balancers stop sending while in-flight requests drain."""
    app[LIFECYCLE].draining = True


def build_cache(settings: Settings, metrics: Metrics) -> ResponseCache:
    """Redis when configured (shared by gateways behind one balancer), else an in-process LRU."""
    c = settings.cache
    store: Store
    if c.redis_url:
        store = RedisStore(c.redis_url, timeout_s=c.timeout_ms / 1000)
    else:
        store = LRUStore(max_entries=c.lru_max_entries, max_bytes=c.lru_max_bytes)
    return ResponseCache(
        store,
        c,
        on_error=lambda op: metrics.cache_errors.labels(op).inc(),
        on_state=lambda up: metrics.cache_up.set(1 if up else 0),
    )


async def _embeddings(app: web.Application) -> AsyncIterator[None]:
    """Cloud embedders on start; the embedding model and its sessions freed on stop."""
    service = app[EMBEDDINGS]
    await service.start()
    yield
    with contextlib.suppress(Exception):
        await service.close()


def build_embeddings(
    settings: Settings, policies: PolicyStore, metrics: Metrics
) -> EmbeddingService:
    """POST /v1/embeddings: its own local model (built on first use), cloud models and cache."""
    return EmbeddingService(
        settings, policies=policies, metrics=metrics, cache=build_cache(settings, metrics)
    )


def build_limiter(
    settings: Settings, metrics: Metrics, *, keyed: bool, prices: Prices | None = None
) -> Limiter:
    conf = settings.limits
    counters: Counters = (
        RedisCounters(conf.redis_url, timeout_s=conf.timeout_s)
        if conf.redis_url
        else MemoryCounters(max_keys=conf.max_tracked_keys)
    )
    return Limiter(
        conf,
        counters,
        keyed=keyed,
        on_limited=lambda r: metrics.rate_limited.labels(r).inc(),
        on_unenforced=lambda s, r: metrics.limits_unenforced.labels(s, r).inc(),
        prices=prices,
        cloud_models={m.name: m.model for m in settings.cloud.models},
    )


async def _limiter(app: web.Application) -> AsyncIterator[None]:
    await app[LIMITER].start()  # a Cluster's slot map before the first burst
    yield
    await app[LIMITER].close()


async def _cache(app: web.Application) -> AsyncIterator[None]:
    yield
    dispatcher = app[DISPATCHER]
    if dispatcher.semantic is not None:
        await dispatcher.semantic.close()
    if dispatcher.cache is not None:
        await dispatcher.cache.close()


async def _local_model(app: web.Application) -> AsyncIterator[None]:
    """Load the model in the background so /healthz answers while it loads."""
    local = app[LOCAL]

    async def load() -> None:
        try:
            await local.load()
        except Exception:
            log.exception("loading the local model failed; /readyz stays 503")

    task = asyncio.create_task(load())
    # The tiktoken encoder is built once, now, not on the first request's hot path.
    await asyncio.to_thread(encoder)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task  # a load still running is cut before the models it made are closed
    await local.close()


async def _cloud_backends(app: web.Application) -> AsyncIterator[None]:
    """One pooled HTTP session for every upstream; litellm only if a model needs it."""
    cloud = app[SETTINGS].cloud
    session = upstream_session(cloud, limit=256)
    clouds = app[DISPATCHER].clouds
    litellm = None
    for m in cloud.models:
        if cloud.passthrough and m.api_base and m.model.startswith("openai/"):
            from .backends.passthrough import PassthroughBackend

            clouds[m.name] = PassthroughBackend(m, cloud, session)
        else:
            from .backends.cloud import LiteLLMBackend, import_litellm

            if litellm is None:
                litellm = await asyncio.to_thread(import_litellm)  # seconds: off the loop
            clouds[m.name] = LiteLLMBackend(m, cloud, litellm, session)
    yield
    for backend in clouds.values():
        await backend.close()
    await session.close()


async def _background(app: web.Application) -> AsyncIterator[None]:
    """Probe open breakers and watch the policy file."""
    settings, policies = app[SETTINGS], app[POLICY_STORE]
    tasks = [
        asyncio.create_task(_probe_loop(app[DISPATCHER], settings)),
        asyncio.create_task(policies.watch(settings.policy.reload_interval_s)),
    ]
    yield
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t


async def _telemetry(app: web.Application) -> AsyncIterator[None]:
    """Open the outbox (records left by the last run ship first) and its shipper.

    OUTBOX is set only once it opened: without an endpoint, or with a store that cannot
    open, the gateway serves without telemetry and nothing reads an outbox.
    """
    outbox = build_outbox(app[SETTINGS], app[METRICS], app[DISPATCHER].breakers)
    if outbox is not None:
        try:
            await outbox.start()
        except Exception:  # telemetry is never worth a box that does not serve
            log.exception("telemetry outbox cannot open its store; running without telemetry")
            outbox = None
        else:
            app[OUTBOX] = outbox
    yield
    if outbox is not None:
        await outbox.close()


async def _probe_loop(dispatcher: Dispatcher, settings: Settings) -> None:
    """Probe every open breaker's cloud target (backends/health.py)."""
    await health.probe_loop(dispatcher.breakers, dispatcher.clouds, settings.cloud.probe_interval_s)
