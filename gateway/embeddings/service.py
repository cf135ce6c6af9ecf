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
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import aiohttp
import numpy as np

from ..backends.base import BackendUnavailable, Completion
from ..backends.health import Breaker, retry_after
from ..cache import ResponseCache
from ..costs import Prices
from ..dispatch import OFF_LOOP_CHARS, Outcome
from ..errors import (
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NoRouteAvailable,
    QueueFull,
    RateLimited,
)
from ..local.embedder import LocalEmbedder
from ..metrics import Metrics
from ..routing.features import Features
from ..routing.live_policy import PolicyStore
from ..routing.pii import detect_pii
from ..routing.policy import CACHE, LOCAL, Decision, Router
from ..routing.privacy import TooLarge, embedding_strings
from ..routing.tokens import count_tokens, encoder
from ..settings import CloudModel, Settings
from ..vectors import normalise
from .cache import EmbeddingCache
from .request import EmbeddingRequest, Item, response

log = logging.getLogger(__name__)


class Embedder(Protocol):
    name: str
    kind: str

    async def embed(
        self, req: EmbeddingRequest, items: list[Item]
    ) -> tuple[list[np.ndarray], int]: ...


@dataclass
class _Computed:
    vectors: list[np.ndarray]
    tokens: list[int]
    seconds: float


@dataclass
class _Attempt:
    causes: list[str] = field(default_factory=list)
    failovers: list[tuple[str, str, str]] = field(default_factory=list)
    refused: InvalidRequest | None = None  # the local model's refusal, as a fallback

    def local_refused(self, i: int, exc: InvalidRequest) -> None:
        """As on chat (dispatch.py): the local model's 400 stands only where it was the
        choice; as a fallback for a cloud that cannot answer, it makes the answer a 503."""
        if i == 0:
            raise exc
        self.refused = exc
        self.causes.append(f"local cannot serve: {exc.code or 'refused'}")


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
        self.local = LocalEmbedder(settings.local.embedding)
        self.models: dict[str, CloudModel] = {m.name: m for m in settings.cloud.embedding_models}
        self.clouds: dict[str, Embedder] = {}  # built on start: they need the session
        # Providers are not probed for embeddings: an open breaker lets a trial through later.
        self.breakers = {
            name: Breaker(name, failures=settings.cloud.breaker_failures, retry_after_s=30.0)
            for name in self.models
        }
        self.router = Router(cloud_names=list(self.models), local_names=[self.local.name])
        self.cache = EmbeddingCache(cache) if cache is not None else None
        self.prices = Prices([m.model for m in self.models.values()])
        self._session: aiohttp.ClientSession | None = None
        s = settings.local.embedding
        # Cache entries of the local model change when its file or pooling does.
        self.local_id = f"local:{s.name}:{s.model_path or 'embedded'}:{s.pooling}"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        cloud = self.settings.cloud
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=cloud.connect_timeout_s),
        )
        litellm = None
        for m in self.models.values():
            if cloud.passthrough and m.api_base and m.model.startswith("openai/"):
                from .cloud import PassthroughEmbedder

                self.clouds[m.name] = PassthroughEmbedder(m, cloud, self._session)
            else:
                from ..backends.cloud import import_litellm
                from .cloud import LiteLLMEmbedder

                if litellm is None:
                    litellm = await asyncio.to_thread(import_litellm)  # seconds: off the loop
                self.clouds[m.name] = LiteLLMEmbedder(m, cloud, litellm, self._session)

    async def close(self) -> None:
        await self.local.close()
        if self._session is not None:
            await self._session.close()
        if self.cache is not None:
            await self.cache.cache.close()

    def model_ids(self) -> list[str]:
        return [self.local.name, *self.models]

    # -- deciding -----------------------------------------------------------------------------

    def features(
        self, req: EmbeddingRequest, tenant: str | None, *, scan_budget: int | None = None
    ) -> Features:
        """The chat router's features of an embedding request (off the loop when large).

        Past `scan_budget`, the walk over the fields besides `input` raises TooLarge first.
        """
        others = embedding_strings(req, budget=scan_budget)
        items = req.items()
        longest = max(count_tokens(i) if isinstance(i, str) else len(i) for i in items)
        return Features(
            model=req.model,
            prompt_tokens=longest,
            complexity=0.0,
            complexity_reasons=(),
            needs=(),
            pii=_pii(
                [*req.texts(), *others],
                [i for i in items if not isinstance(i, str)],
            ),
            tenant=tenant,
            cloud_reachable=any(b.reachable for b in self.breakers.values()),
            local_queue_depth=self.local.queue_depth,
            local_queue_full=not self.local.has_room(),
            # tiktoken is not the local tokenizer; the 10% margin of chat.
            exceeds_local_context=longest * 1.1 >= self.settings.local.embedding.n_batch,
            max_tokens=None,
        )

    async def decide(
        self, req: EmbeddingRequest, tenant: str | None, *, force_local: bool
    ) -> tuple[Features, Decision]:
        if req.model != "auto" and self.router.resolve(req.model) is None:
            raise ModelNotFound(
                f"The model '{req.model}' does not exist or is not an embedding model.",
                param="model",
            )
        f = None
        if sum(len(i) for i in req.items()) <= OFF_LOOP_CHARS:
            with contextlib.suppress(TooLarge):  # long fields besides the input
                f = self.features(req, tenant, scan_budget=OFF_LOOP_CHARS)
        if f is None:
            f = await asyncio.to_thread(self.features, req, tenant)  # tiktoken, pii scans
        d = self.router.decide(self.policies.current, f)
        # The cache is looked up for every target anyway; only `auto` may change models.
        fallbacks = tuple(t for t in d.fallbacks if t != CACHE) if req.model == "auto" else ()
        d = replace(d, fallbacks=fallbacks if d.allow_degraded else ())
        if force_local and d.target != LOCAL:
            d = replace(
                d,
                target=LOCAL,
                fallbacks=(),
                rule="budget-exceeded",
                reason="rule=budget-exceeded; daily cloud budget spent",
            )
        if req.model != "auto":
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
        named = self.router.resolve(req.model)
        if d.target == named:
            return
        why = {"x-gateway-route": d.route, "x-gateway-reason": d.reason}
        if d.rule == "budget-exceeded":
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
        force_local: bool = False,
        on_decision: Callable[[Features, Decision], None] | None = None,
    ) -> tuple[Outcome, int]:
        """The outcome for the HTTP layer, and how many inputs came from the cache;
        `on_decision` hears the decision first (as on chat: for the request log)."""
        f, decision = await self.decide(req, tenant, force_local=force_local)
        if on_decision is not None:
            on_decision(f, decision)
        try:
            return await self._handle(req, tenant, f, decision, no_cache, no_store)
        except GatewayError as exc:
            exc.headers.setdefault("x-gateway-route", decision.route)
            exc.headers.setdefault("x-gateway-reason", decision.reason)
            raise

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
        attempt = _Attempt()
        targets = [decision.target, *decision.fallbacks]
        use_cache = self.cache is not None and decision.cache_mode != "never"
        for i, target in enumerate(targets):
            nxt = targets[i + 1] if i + 1 < len(targets) else "none"
            backend: Embedder
            if target == LOCAL:
                try:
                    self._local_fields(req)  # what the local model cannot honour: a 400
                except InvalidRequest as exc:
                    attempt.local_refused(i, exc)
                    continue
                backend = self.local  # type: ignore[assignment]
                model_id = self.local_id
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
            breaker = self.breakers.get(target)
            if missing and breaker is not None and not breaker.allow():
                attempt.causes.append(f"{target} unreachable ({breaker.last_cause or 'open'})")
                attempt.failovers.append((target, nxt, "breaker_open"))
                continue
            try:
                computed = await self._compute(backend, req, [items[j] for j in missing])
            except BackendUnavailable as exc:
                if breaker is not None:
                    breaker.failure(exc.cause, unreachable=exc.unreachable)
                attempt.causes.append(f"{target} failed ({exc.cause})")
                attempt.failovers.append((target, nxt, exc.cause))
                continue
            except QueueFull:
                if nxt == "none":
                    raise
                attempt.causes.append("local queue full")
                attempt.failovers.append((target, nxt, "queue_full"))
                continue
            except InvalidRequest as exc:  # e.g. an input past the local model's context
                if target != LOCAL:
                    raise
                attempt.local_refused(i, exc)
                continue
            if breaker is not None and missing:
                breaker.success()
            return self._answer(
                req,
                f,
                decision,
                backend,
                items,
                cached,
                missing,
                computed,
                keys,
                attempt,
                degraded=i > 0,
                store=not no_store,
            )
        detail = "; ".join(attempt.causes) or "no target available"
        wait = retry_after(self.breakers[t] for t in targets if t in self.breakers)
        if attempt.refused is not None:
            raise NoRouteAvailable(
                f"The cloud cannot answer now and the local embedding model cannot serve this "
                f"request ({attempt.refused.message}): {detail}.",
                param=attempt.refused.param,
                code="local_cannot_serve",
                headers=wait,
            )
        raise NoRouteAvailable(f"No embedding model could answer: {detail}.", headers=wait)

    def _local_fields(self, req: EmbeddingRequest) -> None:
        extra = req.extra_fields()
        if extra:
            raise InvalidRequest(
                f"Unsupported parameter: '{extra[0]}' is not supported by the local embedding "
                "model.",
                param=extra[0],
                code="unsupported_parameter",
            )

    async def _compute(
        self, backend: Embedder, req: EmbeddingRequest, items: list[Item]
    ) -> _Computed:
        if not items:
            return _Computed([], [], 0.0)
        # Each distinct input is computed once: repeats get the very same vector (a batch's
        # composition moves llama.cpp's float results in the 4th decimal) and cost nothing.
        slot: dict[str | tuple[int, ...], int] = {}
        order = [slot.setdefault(i if isinstance(i, str) else tuple(i), len(slot)) for i in items]
        unique = [items[order.index(k)] for k in range(len(slot))]
        started = time.perf_counter()
        if isinstance(backend, LocalEmbedder):
            vectors, tokens = await backend.embed(unique)
            vectors = self._local_dimensions(req, vectors)
        else:
            vectors, total = await backend.embed(req, unique)
            vectors = list(normalise(np.stack(vectors))) if _same_width(vectors) else vectors
            tokens = _share(total, unique)
        return _Computed(
            [vectors[k] for k in order], [tokens[k] for k in order], time.perf_counter() - started
        )

    def _local_dimensions(
        self, req: EmbeddingRequest, vectors: list[np.ndarray]
    ) -> list[np.ndarray]:
        width = vectors[0].shape[0]
        if req.dimensions is None or req.dimensions == width:
            return vectors
        if not self.settings.local.embedding.truncate_dimensions:
            raise InvalidRequest(
                f"'dimensions' {req.dimensions} is not supported by the local embedding model "
                f"(width {width}): it is not set up as Matryoshka-trained "
                "(local.embedding.truncate_dimensions).",
                param="dimensions",
                code="unsupported_value",
            )
        if req.dimensions > width:
            raise InvalidRequest(
                f"'dimensions' is {req.dimensions}; the local embedding model has {width}.",
                param="dimensions",
                code="invalid_value",
            )
        return list(normalise(np.stack([v[: req.dimensions] for v in vectors])))

    def _answer(
        self,
        req: EmbeddingRequest,
        f: Features,
        decision: Decision,
        backend: Embedder,
        items: list[Item],
        cached: list[tuple[np.ndarray, int] | None],
        missing: list[int],
        computed: _Computed,
        keys: list[str] | None,
        attempt: _Attempt,
        *,
        degraded: bool,
        store: bool,
    ) -> tuple[Outcome, int]:
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
        reason = decision.reason
        if attempt.causes:
            reason += f"; degraded: {'; '.join(attempt.causes)}"
        if not missing:
            reason += "; cache hit"
        obj = response(
            vectors, model=backend.name, tokens=sum(tokens), encoding_format=req.encoding_format
        )
        state = "skip" if keys is None else ("hit" if not missing else "miss")
        outcome = Outcome(
            route,
            backend.name,
            decision,
            f,
            completion=Completion(obj),
            degraded=degraded,
            reason=reason,
            cache=state,
            backend_seconds=computed.seconds,
            failovers=attempt.failovers,
        )
        return outcome, hits

    def cost(self, outcome: Outcome, tokens: int) -> float:
        """USD of a cloud embedding answer (litellm's cost map), for budgets and metrics."""
        if outcome.route != "cloud":
            return 0.0
        model = self.models.get(outcome.target)
        return self.prices.cost(model.model if model else None, tokens, 0)


def _same_width(vectors: list[np.ndarray]) -> bool:
    return len({v.shape[0] for v in vectors}) == 1


def _share(total: int, items: list[Item]) -> list[int]:
    """A cloud answer's prompt tokens spread over its inputs by length (cached per input)."""
    sizes = [max(1, len(i)) for i in items]
    whole = sum(sizes)
    return [round(total * s / whole) for s in sizes]


@functools.cache
def _vocabularies() -> tuple[Any, ...]:
    import tiktoken

    return (encoder(), tiktoken.get_encoding("cl100k_base"))  # encoder() sets the offline cache


def _pii(texts: list[str], token_inputs: list[list[int]]) -> tuple[str, ...]:
    """Private data in the inputs, token-id inputs included, and in every other string of the
    request (`user`, unknown fields: routing/privacy.py), all in one scan.

    Token ids are text in disguise: a client could send an e-mail address as OpenAI token ids
    and slip past a scan of the text inputs. They are decoded with both OpenAI vocabularies
    an embedding model may use (o200k, cl100k; shipped with litellm, nothing downloaded) and
    scanned like text; ids neither can decode cannot be scanned and count as private
    (`token_ids`), so a privacy rule keeps them on the box.
    """
    decoded = list(texts)
    unscanned = False
    for ids in token_inputs:
        readable = False
        for vocabulary in _vocabularies():
            try:
                decoded.append(vocabulary.decode(ids))
                readable = True
            except (KeyError, ValueError, OverflowError):  # ids outside this vocabulary
                pass
        unscanned = unscanned or not readable
    found = detect_pii("\x00".join(decoded))  # NUL: no match spans two strings (privacy.py)
    return (*found, "token_ids") if unscanned else found
