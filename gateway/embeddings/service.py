"""One embeddings request: features -> policy -> per-input cache -> local or cloud model.

The YAML policy that routes chat routes embeddings too, over the same features: `pii` (a
privacy rule keeps the text on the box), `prompt_tokens` (the longest input, by tiktoken),
`exceeds_local_context` (an input too long for the local embedding model), `cloud_reachable`
and the local queue, `model` and `tenant`. `local` is the local embedding model and `cloud`
the first cloud embedding model; a rule naming a chat model is skipped, as a cloud rule is
on a box without cloud models. Complexity is 0 and needs are none: embedding is one job.

Vectors from two models are not comparable, so only `model: auto` may fall back from one
model to another (the offline order, marked degraded, the answer's `model` saying which);
a request naming a model gets that model's vectors or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np

from ..backends.base import Completion
from ..backends.client import upstream_session
from ..backends.health import build_breakers, probe_loop
from ..cache import ResponseCache
from ..costs import Prices
from ..errors import GatewayError, InvalidRequest, RateLimited
from ..local.embedder import LocalEmbedder
from ..metrics import Metrics
from ..pipeline import deciding
from ..pipeline.attempt import EMBEDDINGS, Attempt
from ..pipeline.outcome import Outcome
from ..routing.features import Features
from ..routing.live_policy import PolicyStore
from ..routing.policy import LOCAL, Decision, Router
from ..routing.policy_models import Policy
from ..settings import CloudModel, Settings
from .cache import EmbeddingCache
from .compute import Computed, Embedder, compute
from .features import embedding_features
from .request import EmbeddingRequest, Item, response

log = logging.getLogger(__name__)


class EmbeddingService:
    def __init__(
        self,
        settings: Settings,
        *,
        policies: PolicyStore,
        metrics: Metrics,
        cache: ResponseCache | None,
    ) -> None:
        self.settings = settings
        self.policies = policies
        self.metrics = metrics
        self.local = LocalEmbedder(settings.local.embedding, packaged=_packaged(settings))
        self.models: dict[str, CloudModel] = {m.name: m for m in settings.cloud.embedding_models}
        self.clouds: dict[str, Embedder] = {}  # built on start: they need the session
        # Chat's breakers: probed while open (when the model has an api_base), in /metrics.
        self.breakers = build_breakers(self.models.values(), settings.cloud, metrics)
        self.router = Router(
            cloud_names=list(self.models), local_names=[self.local.name], embeddings=True
        )
        self.cache = EmbeddingCache(cache) if cache is not None else None
        self.prices = Prices([m.model for m in self.models.values()])
        self._session: aiohttp.ClientSession | None = None
        self._probing: asyncio.Task[None] | None = None
        s = settings.local.embedding
        # Cache entries of the local model change when its file or pooling does.
        source = s.model_path or (s.packaged if s.packaged != "none" else "embedded")
        self.local_id = f"local:{s.name}:{source}:{s.pooling}"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        cloud = self.settings.cloud
        self._session = upstream_session(cloud, limit=64)
        litellm = None
        for m in self.models.values():
            if cloud.passthrough and m.api_base and m.model.startswith("openai/"):
                from ..backends.client import Upstream
                from .cloud import PassthroughEmbedder

                self.clouds[m.name] = PassthroughEmbedder(Upstream(m, cloud, self._session))
            else:
                from ..backends.cloud import LiteLLMBackend, import_litellm
                from .cloud import LiteLLMEmbedder

                if litellm is None:
                    litellm = await asyncio.to_thread(import_litellm)  # seconds: off the loop
                chat = LiteLLMBackend(m, cloud, litellm, self._session)
                self.clouds[m.name] = LiteLLMEmbedder(chat)
        self._probing = asyncio.create_task(
            probe_loop(self.breakers, self.clouds, cloud.probe_interval_s)
        )

    async def close(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
        await self.local.close()
        if self._session is not None:
            await self._session.close()
        if self.cache is not None:
            await self.cache.cache.close()

    def model_ids(self) -> list[str]:
        return [self.local.name, *self.models]

    # -- deciding -----------------------------------------------------------------------------

    def features(
        self,
        req: EmbeddingRequest,
        tenant: str | None,
        *,
        scan_budget: int | None = None,
        policy: Policy | None = None,
    ) -> Features:
        return embedding_features(
            req,
            tenant,
            cloud_reachable=any(b.reachable for b in self.breakers.values()),
            local_queue_depth=self.local.queue_depth,
            local_queue_full=not self.local.has_room(),
            n_batch=self.settings.local.embedding.n_batch,
            scan_budget=scan_budget,
            detector=(policy or self.policies.current).detector,
        )

    async def decide(
        self, req: EmbeddingRequest, tenant: str | None, *, budget_spent: bool
    ) -> tuple[Features, Decision]:
        f, d = await deciding.decide(
            self.router,
            self.policies.current,
            self.features,
            req,
            tenant,
            size=sum(len(i) for i in req.items()),  # tiktoken, pii scans
            not_found="The model '{model}' does not exist or is not an embedding model.",
            budget_spent=budget_spent,
        )
        if d.requested is not None:
            self._named_model_kept(req, f, d)
        return f, d

    def _named_model_kept(self, req: EmbeddingRequest, f: Features, d: Decision) -> None:
        """A request naming a model gets that model's vectors or an error, never another's.

        Chat answers a privacy rule's route instead of the model named (any model's text
        answers the question); vectors of two models share no space, so the same override
        here would hand a client an index-breaking answer with a 200. A 400 when the policy
        keeps the input on the box (as a private chat request the local model cannot serve
        is a 400), a 429 when the daily cloud budget is spent (as chat's), headers saying why.
        """
        if d.target == d.requested:
            return
        why = {"x-gateway-route": d.route, "x-gateway-reason": d.reason}
        if d.budget_bound:
            err: GatewayError = RateLimited(
                f"The daily cloud budget is spent, and '{req.model}' is a cloud model: the "
                "local embedding model's vectors are not interchangeable with its. Retry "
                "tomorrow, or name the local model.",
                code="budget_exceeded",
                retry_after=3600,
            )
        elif f.pii:
            err = InvalidRequest(
                f"The request holds private data ({', '.join(f.pii)}) and the policy rule "
                f"'{d.rule}' keeps it on this box, so it is not sent to '{req.model}'; the "
                "local embedding model's vectors are not interchangeable with that model's. "
                "Name the local model (or `auto`) to embed it here.",
                param="model",
                code="private_data",
            )
        else:
            err = InvalidRequest(
                f"The policy rule '{d.rule}' routes this request to "
                f"'{'local' if d.target == LOCAL else d.target}', not to '{req.model}', and "
                "vectors of two models are not interchangeable.",
                param="model",
                code="model_overridden_by_policy",
            )
        err.headers.update(why)
        raise err

    # -- answering ----------------------------------------------------------------------------

    async def handle(
        self,
        req: EmbeddingRequest,
        tenant: str | None,
        *,
        no_cache: bool = False,
        no_store: bool = False,
        budget_spent: bool = False,
        on_decision: Callable[[Features, Decision], None] | None = None,
    ) -> tuple[Outcome, int]:
        """The outcome for the HTTP layer, and how many inputs came from the cache;
        `on_decision` hears the decision first (as on chat: for the request log)."""
        decided = await self.decide(req, tenant, budget_spent=budget_spent)
        return await deciding.answer(
            decided, on_decision, lambda f, d: self._handle(req, tenant, f, d, no_cache, no_store)
        )

    async def _handle(
        self,
        req: EmbeddingRequest,
        tenant: str | None,
        f: Features,
        decision: Decision,
        no_cache: bool,
        no_store: bool,
    ) -> tuple[Outcome, int]:
        items = req.items()
        attempt = Attempt(decision, self.breakers, EMBEDDINGS)
        use_cache = self.cache is not None and decision.cache_mode != "never"
        hits = 0

        async def one(target: str, i: int) -> Outcome | None:
            nonlocal hits
            backend: Embedder | LocalEmbedder
            if target == LOCAL:
                try:
                    self._local_fields(req)  # what the local model cannot honour: a 400
                except InvalidRequest as exc:
                    attempt.local_refused(i, exc)
                    return None
                backend, model_id = self.local, self.local_id
            else:
                backend = self.clouds[target]
                model_id = f"cloud:{target}:{self.models[target].model}"
            keys: list[str] | None = None
            cached: list[tuple[np.ndarray, int] | None] = [None] * len(items)
            if use_cache and self.cache is not None:
                keys = self.cache.keys(
                    items, model_id=model_id, tenant=tenant, dimensions=req.dimensions
                )
                if not no_cache:
                    cached = await self.cache.get_many(keys)
            missing = [j for j, c in enumerate(cached) if c is None]
            # What this model embedded before is served with its uplink gone; only inputs it
            # never saw need it reachable.
            if missing and not attempt.allow(target, i):
                return None
            computed = await attempt.call(
                target,
                i,
                compute(
                    backend,
                    req,
                    [items[j] for j in missing],
                    truncate_dimensions=self.settings.local.embedding.truncate_dimensions,
                ),
            )
            if computed is None:
                return None
            if missing:
                attempt.succeeded(target)
            hits = len(items) - len(missing)
            return self._answer(
                req, f, decision, backend, items, cached, missing, computed, keys, not no_store
            )

        outcome = await attempt.run(one)
        if outcome.route == "cache":
            outcome.reason += "; cache hit"  # after the degraded causes, as it always read
        return outcome, hits

    def _local_fields(self, req: EmbeddingRequest) -> None:
        extra = req.extra_fields()
        if extra:
            raise InvalidRequest(
                f"Unsupported parameter: '{extra[0]}' is not supported by the local embedding "
                "model.",
                param=extra[0],
                code="unsupported_parameter",
            )

    def _answer(
        self,
        req: EmbeddingRequest,
        f: Features,
        decision: Decision,
        backend: Embedder | LocalEmbedder,
        items: list[Item],
        cached: list[tuple[np.ndarray, int] | None],
        missing: list[int],
        computed: Computed,
        keys: list[str] | None,
        store: bool,
    ) -> Outcome:
        vectors: list[np.ndarray] = [c[0] if c is not None else np.empty(0) for c in cached]
        tokens = [c[1] if c is not None else 0 for c in cached]
        fresh: list[tuple[str, np.ndarray, int]] = []
        for j, v, t in zip(missing, computed.vectors, computed.tokens, strict=True):
            vectors[j], tokens[j] = v, t
            if keys is not None and store:
                fresh.append((keys[j], v, t))
        if fresh and self.cache is not None:
            self.cache.put_many(fresh)
        hits = len(items) - len(missing)
        route = "cache" if not missing else ("local" if backend.kind == "local" else "cloud")
        m = self.metrics
        m.embedding_requests.labels(route).inc()
        if hits:
            m.embedding_inputs.labels("cache").inc(hits)
            m.embedding_tokens.labels("cache").inc(sum(c[1] for c in cached if c is not None))
        if missing:
            m.embedding_inputs.labels(route).inc(len(missing))
            m.embedding_tokens.labels(route).inc(sum(computed.tokens))
        obj = response(
            vectors, model=backend.name, tokens=sum(tokens), encoding_format=req.encoding_format
        )
        state = "skip" if keys is None else ("hit" if not missing else "miss")
        # The attempt loop sets `degraded`, the reason and the failovers.
        return Outcome(
            route,
            backend.name,
            decision,
            f,
            completion=Completion(obj),
            cache=state,
            backend_seconds=computed.seconds,
        )

    def cost(self, outcome: Outcome, tokens: int) -> float:
        """USD of a cloud embedding answer (litellm's cost map), for budgets and metrics."""
        if outcome.route != "cloud":
            return 0.0
        model = self.models.get(outcome.target)
        return self.prices.cost(model.model if model else None, tokens, 0)


def _packaged(settings: Settings) -> Callable[[], Path] | None:
    """local.embedding.packaged: how to get its GGUF (converted once into state.dir/models)."""
    if settings.local.embedding.packaged == "none":
        return None
    from ..semantic.gguf_encoder import ensure_gguf  # all-minilm-l6-v2, the only one

    models = settings.state.dir / "models"
    return lambda: ensure_gguf(models)
