"""create_app(settings): wiring only. Nothing here runs at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from .backends.base import Backend
from .backends.health import Breaker, State
from .cache import LRUStore, RedisStore, ResponseCache, Store
from .costs import Prices
from .dispatch import Dispatcher
from .embeddings.service import EmbeddingService
from .http import routes
from .http.auth import auth_middleware
from .http.keyring import KeyRing
from .http.middlewares import error_middleware, request_id_middleware
from .http.observe import observe_middleware
from .http.responses import RESPONSE_STORE
from .limits import Counters, Limiter, MemoryCounters, RedisCounters
from .metrics import Metrics
from .models.fleet import Fleet
from .routing.complexity import ComplexityScorer, Scorer
from .routing.features import FeatureExtractor
from .routing.policy import Router
from .routing.store import PolicyStore
from .routing.tokens import encoder
from .services import SERVICES, Services
from .settings import Settings
from .state import STATE, build_responses, build_state, state_ctx
from .status import StatusBoard
from .telemetry import Outbox

if TYPE_CHECKING:
    from .learning import Learning
    from .state.store import StateStore

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
    metrics = Metrics()
    status = StatusBoard(recent=settings.ui.recent_decisions, show_prompts=settings.ui.show_prompts)
    local = Fleet(settings.local, metrics=metrics)  # the default model and local.models
    cloud_names = [m.name for m in settings.cloud.models]

    def reloaded(result: str) -> None:
        metrics.policy_reloads.labels(result).inc()
        status.policy_reloaded(result)

    embedding_names = [m.name for m in settings.cloud.embedding_models]
    policies = PolicyStore(
        settings.policy.file,
        cloud_names=cloud_names + embedding_names,
        on_reload=reloaded,
        local_models=local.names,
    )
    breakers = build_breakers(settings, metrics)
    cache = build_cache(settings, metrics) if cloud_names else None
    clouds: dict[str, Backend] = {}  # filled on startup: needs the session (and maybe litellm)
    dispatcher = Dispatcher(
        local=local,
        clouds=clouds,
        breakers=breakers,
        features=FeatureExtractor(scorer=ComplexityScorer(), local_n_ctx=settings.local.n_ctx),
        router=Router(cloud_names=cloud_names, local_names=local.names),
        policies=policies,
        cache=cache,
        max_prompt_tokens=settings.server.max_prompt_tokens,
    )
    keyring = KeyRing(settings.server)
    app[SERVICES] = Services(
        settings=settings,
        local=local,
        dispatcher=dispatcher,
        policies=policies,
        metrics=metrics,
        prices=Prices([m.model for m in settings.cloud.models]),
        keyring=keyring,
        limiter=build_limiter(settings, metrics, keyed=keyring.enforced),
        status=status,
        outbox=build_outbox(settings, metrics, breakers),
    )
    app[STATE] = build_state(settings)  # shared by replicas; None: this process alone
    app[RESPONSE_STORE] = build_responses(settings, app[STATE])  # /v1/responses' stored answers
    if settings.learning.enabled:
        scorer = dispatcher.extractor.scorer
        app[SERVICES].learning = build_learning(app[SERVICES], scorer, app[STATE])
    app[SERVICES].embeddings = build_embeddings(settings, policies, metrics)
    _watch_local(metrics, local, settings)
    app.cleanup_ctx.append(_local_model)
    app.cleanup_ctx.append(_cloud_backends)
    app.cleanup_ctx.append(_background)
    app.cleanup_ctx.append(_cache)
    app.cleanup_ctx.append(_telemetry)
    app.cleanup_ctx.append(_learning)  # last in, first out: judgements stop before the session
    app.cleanup_ctx.append(_embeddings)
    app.cleanup_ctx.insert(0, state_ctx)  # closed last: learning may write labels until then
    app.on_shutdown.append(_draining)
    routes.add_routes(app)
    return app


def build_breakers(settings: Settings, metrics: Metrics) -> dict[str, Breaker]:
    """One breaker per cloud model, its state mirrored in metrics."""

    def changed(target: str, state: State) -> None:
        metrics.breaker_state.labels(target).set(int(state))
        metrics.cloud_reachable.labels(target).set(0 if state == State.OPEN else 1)

    breakers = {
        m.name: Breaker(
            m.name,
            failures=settings.cloud.breaker_failures,
            # With a probe (an api_base to ask), only the probe closes an open breaker, so no
            # client waits on a dead uplink. Providers we cannot probe get a half-open trial.
            retry_after_s=float("inf") if m.api_base else 30.0,
            probe_interval_s=settings.cloud.probe_interval_s if m.api_base else None,
            on_change=changed,
        )
        for m in settings.cloud.models
    }
    for name in breakers:
        changed(name, State.CLOSED)
    return breakers


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
    services: Services, shipped: Scorer, state: StateStore | None = None
) -> Learning:
    """The label store and its loop (gateway/learning/); only when learning.enabled."""
    from .learning import Learning

    return Learning(
        services.settings,
        dispatcher=services.dispatcher,
        policies=services.policies,
        registry=services.metrics.registry,
        prices=services.prices,
        shipped=shipped,
        # Distinct client keys: with two or more, labels come from tenants who must not
        # steer the router for one another (learning/retrain.py).
        keys=len(set(services.keyring.client_digests)),
        state=state,
    )


async def _learning(app: web.Application) -> AsyncIterator[None]:
    learning = app[SERVICES].learning  # None unless learning.enabled
    if learning is not None:
        learning.start()
    yield
    if learning is not None:
        await learning.close()  # cancels shadow judgements, then closes the store


def _watch_local(metrics: Metrics, local: Fleet, settings: Settings) -> None:
    metrics.local_queue_depth.set_function(lambda: local.queue_depth)
    metrics.local_in_flight.set_function(lambda: local.in_flight)
    metrics.local_queue_capacity.set(settings.local.max_queue)
    metrics.local_slots.set(settings.local.parallel)
    metrics.local_slots_busy.set_function(lambda: local.slots_busy)
    metrics.local_models_loaded.set_function(lambda: len(local.resident()))


async def _draining(app: web.Application) -> None:
    """Shutting down: say not-ready so balancers stop sending while in-flight requests drain."""
    app[SERVICES].draining = True


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
    service = app[SERVICES].embeddings
    if service is None:
        yield
        return
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


def build_limiter(settings: Settings, metrics: Metrics, *, keyed: bool) -> Limiter:
    counters: Counters = (
        RedisCounters(settings.limits.redis_url)
        if settings.limits.redis_url
        else MemoryCounters(max_keys=settings.limits.max_tracked_keys)
    )
    return Limiter(
        settings.limits,
        counters,
        keyed=keyed,
        on_limited=lambda r: metrics.rate_limited.labels(r).inc(),
    )


async def _cache(app: web.Application) -> AsyncIterator[None]:
    yield
    services = app[SERVICES]
    if services.dispatcher.cache is not None:
        await services.dispatcher.cache.close()
    await services.limiter.close()


async def _local_model(app: web.Application) -> AsyncIterator[None]:
    """Load the model in the background so /healthz answers while it loads."""
    local = app[SERVICES].local

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
    services = app[SERVICES]
    cloud = services.settings.cloud
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=cloud.connect_timeout_s),
    )
    clouds = services.dispatcher.clouds
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
    services = app[SERVICES]
    tasks = [
        asyncio.create_task(_probe_loop(services.dispatcher, services.settings)),
        asyncio.create_task(services.policies.watch(services.settings.policy.reload_interval_s)),
    ]
    yield
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await t


async def _telemetry(app: web.Application) -> AsyncIterator[None]:
    """Open the outbox (records left by the last run ship first) and its shipper."""
    services = app[SERVICES]
    outbox = services.outbox
    if outbox is not None:
        try:
            await outbox.start()
        except Exception:  # telemetry is never worth a box that does not serve
            log.exception("telemetry outbox cannot open its store; running without telemetry")
            outbox = services.outbox = None
    yield
    if outbox is not None:
        await outbox.close()


async def _probe_loop(dispatcher: Dispatcher, settings: Settings) -> None:
    """Probe every open breaker's target, each in its own task so a slow probe holds no other."""
    running: dict[str, asyncio.Task[None]] = {}
    try:
        while True:
            await asyncio.sleep(settings.cloud.probe_interval_s)
            for name, breaker in dispatcher.breakers.items():
                backend = dispatcher.clouds.get(name)
                if breaker.reachable or backend is None or name in running:
                    continue
                running[name] = asyncio.create_task(_probe_once(name, breaker, backend))
            for name, task in list(running.items()):
                if task.done():
                    del running[name]
    finally:
        for task in list(running.values()):
            task.cancel()


async def _probe_once(name: str, breaker: Breaker, backend: Backend) -> None:
    # After a first-byte timeout only a real completion proves the target is back: its model
    # list may answer while chat hangs, and a light probe would let clients wait again.
    deep = breaker.last_cause == "timeout"
    try:
        ok = await backend.probe(deep=deep)
    except Exception:
        log.exception("probe failed", extra={"target": name})
        ok = False
    if ok:
        log.info("cloud target answers again", extra={"target": name, "deep_probe": deep})
        breaker.success()
