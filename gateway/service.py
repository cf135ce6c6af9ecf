"""The dispatcher: features -> policy decision -> backend, with failover before the first byte."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from .backends.base import Backend, BackendUnavailable, Chunk, Completion, Endpoint
from .backends.local import LocalBackend
from .cache import ResponseCache, as_hit, assemble_then, cacheable, replay
from .errors import (
    ContextLengthExceeded,
    GatewayError,
    ModelNotFound,
    NoRouteAvailable,
    QueueFull,
    RateLimited,
)
from .routing.connectivity import Breaker
from .routing.features import FeatureExtractor, Features
from .routing.policy import CACHE, LOCAL, Decision, Router, local_can_serve
from .routing.store import PolicyStore
from .schemas import AnyRequest

log = logging.getLogger(__name__)

# Past this many characters of text, feature extraction (tiktoken, scans) leaves the loop.
OFF_LOOP_CHARS = 32_768


@dataclass
class Outcome:
    """Where an answer came from and the answer itself (whole, or a stream)."""

    route: str  # local | cloud | cache
    target: str  # backend name
    decision: Decision
    features: Features
    completion: Completion | None = None
    chunks: AsyncIterator[Chunk] | None = None
    degraded: bool = False
    reason: str = ""
    cache: str | None = None  # hit | miss | skip
    backend_seconds: float = 0.0
    first_chunk_seconds: float | None = None
    failovers: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, cause)

    def headers(self) -> dict[str, str]:
        h = {"x-gateway-route": self.route, "x-gateway-reason": self.reason}
        if self.degraded:
            h["x-gateway-degraded"] = "true"
        if self.cache:
            h["x-gateway-cache"] = self.cache
        return h


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The request's Cache-Control: no-cache skips the lookup, no-store skips storing."""

    no_cache: bool = False
    no_store: bool = False

    @classmethod
    def parse(cls, header: str | None) -> CacheControl:
        if not header:
            return cls()
        tokens = {t.strip().lower() for t in header.split(",")}
        return cls(no_cache="no-cache" in tokens, no_store="no-store" in tokens)


@dataclass
class _CacheStep:
    """The cache's part in one request: its key, whether it was looked up, what to report."""

    key: str | None
    lookup: bool  # look up before calling the cloud
    store: bool
    fallback: bool = False  # may serve as a degraded answer (never when the client said no-cache)
    state: str = "skip"
    looked: bool = False


async def _prepend(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


class Dispatcher:
    def __init__(
        self,
        *,
        local: LocalBackend,
        clouds: dict[str, Backend],
        breakers: dict[str, Breaker],
        features: FeatureExtractor,
        router: Router,
        policies: PolicyStore,
        cache: ResponseCache | None,
        max_prompt_tokens: int = 200_000,
    ) -> None:
        self.cache = cache
        self.max_prompt_tokens = max_prompt_tokens
        self.local = local
        self.clouds = clouds
        self.breakers = breakers
        self.extractor = features
        self.router = router
        self.policies = policies

    # -- what clients can ask for ---------------------------------------------------------

    def model_ids(self) -> list[tuple[str, str]]:
        ids = [
            ("auto", "edge-gateway"),
            ("local", "edge-gateway"),
            (self.local.model_name, "edge-gateway"),
        ]
        if self.clouds:
            ids.append(("cloud", "edge-gateway"))
            ids += [(name, "edge-gateway") for name in self.clouds]
        return ids

    def cloud_reachable(self) -> bool:
        return any(b.reachable for b in self.breakers.values())

    # -- deciding ---------------------------------------------------------------------------

    def features(self, req: AnyRequest, tenant: str | None) -> Features:
        return self.extractor.extract(
            req,
            tenant=tenant,
            cloud_reachable=self.cloud_reachable(),
            local_queue_depth=self.local.queue_depth,
            local_queue_full=not self.local.has_room(),
            scorer=self.policies.current.scorer,
        )

    async def decide(self, req: AnyRequest, tenant: str | None) -> tuple[Features, Decision]:
        # An unknown model is refused before any rule can match it (an enforced privacy rule
        # would otherwise answer a typo from the local model).
        if req.model != "auto" and self.router.resolve(req.model) is None:
            raise ModelNotFound(
                f"The model '{req.model}' does not exist or you do not have access to it.",
                param="model",
            )
        if req.content_chars() > OFF_LOOP_CHARS:
            # Linear, but tens of milliseconds on a long prompt: not on the event loop.
            f = await asyncio.to_thread(self.features, req, tenant)
        else:
            f = self.features(req, tenant)
        return f, self.router.decide(self.policies.current, f)

    # -- answering --------------------------------------------------------------------------

    async def handle(
        self,
        req: AnyRequest,
        endpoint: Endpoint,
        tenant: str | None,
        cc: CacheControl = CacheControl(),
        *,
        force_local: bool = False,
    ) -> Outcome:
        f, decision = await self.decide(req, tenant)
        if f.prompt_tokens > self.max_prompt_tokens:
            raise ContextLengthExceeded(
                f"The prompt has about {f.prompt_tokens} tokens; this gateway accepts at most "
                f"{self.max_prompt_tokens}.",
                param="messages",
            )
        if force_local and decision.target != LOCAL:
            why_not = local_can_serve(f)
            if why_not:
                raise RateLimited(
                    "The daily cloud budget is spent and the local model cannot "
                    f"serve this request ({why_not}).",
                    code="budget_exceeded",
                    retry_after=3600,
                )
            decision = replace(
                decision,
                target=LOCAL,
                rule="budget-exceeded",
                reason="rule=budget-exceeded; daily cloud budget spent",
            )
        step = self._cache_step(req, endpoint, tenant, decision, cc)
        if step.lookup and (decision.target == LOCAL or self.breakers[decision.target].reachable):
            hit = await self._lookup(step, req, f, decision, degraded=False)
            if hit is not None:
                return hit
        attempts = [decision.target, *decision.fallbacks]
        causes: list[str] = []
        failovers: list[tuple[str, str, str]] = []
        last_error: GatewayError | None = None
        for i, target in enumerate(attempts):
            degraded = i > 0
            if degraded and not decision.allow_degraded:
                break
            if target == CACHE:
                hit = await self._lookup(step, req, f, decision, degraded=degraded)
                if hit is not None:
                    return self._finish(hit, decision, causes, failovers, degraded)
                causes.append("no cached answer")
                continue
            if target == LOCAL:
                why_not = local_can_serve(f) if degraded else None
                if why_not:
                    causes.append(f"local cannot serve: {why_not}")
                    continue
                backend: Backend = self.local
            else:
                breaker = self.breakers[target]
                if not breaker.allow():
                    causes.append(f"{target} unreachable ({breaker.last_cause or 'breaker open'})")
                    failovers.append((target, _next(attempts, i), "breaker_open"))
                    continue
                backend = self.clouds[target]
            try:
                outcome = await self._attempt(backend, req, endpoint, f, decision)
            except BackendUnavailable as exc:
                self.breakers[target].failure(exc.cause, unreachable=exc.unreachable)
                log.warning(
                    "backend failed before first byte", extra={"target": target, "cause": exc.cause}
                )
                causes.append(f"{target} failed ({exc.cause})")
                failovers.append((target, _next(attempts, i), exc.cause))
                last_error = exc
                continue
            except QueueFull as exc:
                if not any(t in self.clouds or t == CACHE for t in attempts[i + 1 :]):
                    raise
                causes.append("local queue full")
                failovers.append((target, _next(attempts, i), "queue_full"))
                last_error = exc
                continue
            if target in self.breakers:
                self.breakers[target].success()
                self._store(step, outcome)
            outcome.cache = step.state
            return self._finish(outcome, decision, causes, failovers, degraded)
        raise self._nothing_left(f, decision, causes, last_error)

    def _finish(
        self,
        outcome: Outcome,
        decision: Decision,
        causes: list[str],
        failovers: list[tuple[str, str, str]],
        degraded: bool,
    ) -> Outcome:
        outcome.degraded = degraded
        outcome.reason = decision.reason + (f"; degraded: {'; '.join(causes)}" if causes else "")
        outcome.failovers = failovers
        return outcome

    # -- cache --------------------------------------------------------------------------------

    def _cache_step(
        self,
        req: AnyRequest,
        endpoint: Endpoint,
        tenant: str | None,
        decision: Decision,
        cc: CacheControl,
    ) -> _CacheStep:
        # Entries are cloud answers, keyed by the cloud model that gave them. A local-bound
        # request may still fall back to one (offline order `cache`) under the first model.
        target = decision.target if decision.target != LOCAL else next(iter(self.clouds), None)
        if self.cache is None or target is None or not cacheable(req, decision.cache_mode):
            return _CacheStep(key=None, lookup=False, store=False)
        key = self.cache.key(req, target=target, endpoint=endpoint, tenant=tenant)
        cloud_bound = decision.target != LOCAL
        return _CacheStep(
            key=key,
            lookup=cloud_bound and not cc.no_cache,
            store=cloud_bound and not cc.no_store,
            fallback=not cc.no_cache,
        )

    async def _lookup(
        self, step: _CacheStep, req: AnyRequest, f: Features, decision: Decision, *, degraded: bool
    ) -> Outcome | None:
        if self.cache is None or step.key is None or step.looked:
            return None
        if not (step.lookup or (degraded and step.fallback)):
            return None
        step.looked = True
        started = time.perf_counter()
        obj = await self.cache.get(step.key)
        if obj is None:
            step.state = "miss"
            return None
        step.state = "hit"
        out = Outcome(
            "cache",
            "cache",
            decision,
            f,
            cache="hit",
            backend_seconds=time.perf_counter() - started,
        )
        if req.stream:
            out.chunks = replay(obj)
            out.first_chunk_seconds = out.backend_seconds
        else:
            out.completion = Completion(as_hit(obj))
        return out

    def _store(self, step: _CacheStep, outcome: Outcome) -> None:
        cache = self.cache
        if cache is None or step.key is None or not step.store:
            return
        key = step.key
        if outcome.completion is not None:
            cache.put(key, outcome.completion.obj)
        elif outcome.chunks is not None:
            outcome.chunks = assemble_then(outcome.chunks, lambda obj: cache.put(key, obj))

    def _nothing_left(
        self, f: Features, decision: Decision, causes: list[str], last: GatewayError | None
    ) -> GatewayError:
        detail = "; ".join(causes) or "no target available"
        if not decision.allow_degraded:
            return NoRouteAvailable(
                f"The chosen backend is unavailable and the policy forbids degraded answers: "
                f"{detail}.",
                code="cloud_unavailable",
            )
        why_not = local_can_serve(f)
        if why_not:
            return NoRouteAvailable(
                f"The cloud is unreachable and the local model cannot serve this request "
                f"({why_not}): {detail}.",
                code="local_cannot_serve",
            )
        if isinstance(last, QueueFull):
            return last
        return NoRouteAvailable(f"No backend could answer: {detail}.", code="no_route_available")

    async def _attempt(
        self,
        backend: Backend,
        req: AnyRequest,
        endpoint: Endpoint,
        f: Features,
        decision: Decision,
    ) -> Outcome:
        route = LOCAL if backend.kind == "local" else "cloud"
        started = time.perf_counter()
        if not req.stream:
            completion = await backend.complete(req, endpoint)
            return Outcome(
                route,
                backend.name,
                decision,
                f,
                completion=completion,
                backend_seconds=time.perf_counter() - started,
            )
        chunks = backend.stream(req, endpoint)
        # The first chunk comes before any byte is sent: errors still get a real status and
        # failover is still possible.
        try:
            first = await anext(chunks)
        except StopAsyncIteration:
            raise BackendUnavailable(
                f"{backend.name} sent an empty stream", cause="5xx", unreachable=False
            ) from None
        return Outcome(
            route,
            backend.name,
            decision,
            f,
            chunks=_prepend(first, chunks),
            backend_seconds=time.perf_counter() - started,
            first_chunk_seconds=time.perf_counter() - started,
        )


def _next(attempts: list[str], i: int) -> str:
    return attempts[i + 1] if i + 1 < len(attempts) else "none"
