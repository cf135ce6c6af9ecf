"""The dispatcher: features -> policy decision -> cache | backend, failover before the first byte.

One request's walk: `handle` decides (routing/), opens the cache step (cache/), tries the
targets in order (backends/), and returns an `Outcome` for the HTTP layer to render.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from .backends.base import Backend, BackendUnavailable, Chunk, Endpoint
from .backends.health import Breaker
from .cache import CacheControl, CacheHit, CachePlan, ResponseCache
from .cascade import (
    CascadeRecord,
    client_wants_logprobs,
    of_logprobs,
    probing,
    strip_logprobs,
    token_logprobs,
)
from .errors import ContextLengthExceeded
from .local.pool import ModelPool
from .pipeline import deciding
from .pipeline.attempt import CHAT, Attempt, Skipped, budget_refusal
from .pipeline.outcome import Outcome, choice_text
from .routing.features import FeatureExtractor, Features
from .routing.live_policy import PolicyStore
from .routing.policy import CACHE, LOCAL, Decision, Router
from .routing.policy_models import Policy
from .schemas import AnyRequest
from .semantic.semcache import SemanticCache

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Dispatcher:
    local: ModelPool
    clouds: dict[str, Backend]
    breakers: dict[str, Breaker]
    extractor: FeatureExtractor
    router: Router
    policies: PolicyStore
    cache: ResponseCache | None
    semantic: SemanticCache | None = None  # the semantic cache, used where a policy turns it on
    max_prompt_tokens: int = 200_000

    # -- what clients can ask for ---------------------------------------------------------

    def model_ids(self) -> list[tuple[str, str]]:
        ids = [
            ("auto", "edge-gateway"),
            ("local", "edge-gateway"),
            (self.local.model_name, "edge-gateway"),
        ]
        ids += [(n, "edge-gateway") for n in self.local.names if n != self.local.model_name]
        if self.clouds:
            ids.append(("cloud", "edge-gateway"))
            ids += [(name, "edge-gateway") for name in self.clouds]
        return ids

    def cloud_reachable(self) -> bool:
        return any(b.reachable for b in self.breakers.values())

    # -- deciding ---------------------------------------------------------------------------

    def features(
        self,
        req: AnyRequest,
        tenant: str | None,
        *,
        scan_budget: int | None = None,
        policy: Policy | None = None,
    ) -> Features:
        policy = policy or self.policies.current
        return self.extractor.extract(
            req,
            tenant=tenant,
            cloud_reachable=self.cloud_reachable(),
            local_queue_depth=self.local.queue_depth,
            local_queue_full=not self.local.has_room(),
            scorer=policy.scorer,
            detector=policy.detector,
            scan_budget=scan_budget,
        )

    async def decide(
        self,
        req: AnyRequest,
        tenant: str | None,
        *,
        budget_spent: bool = False,
        stream: bool = False,
    ) -> tuple[Features, Decision]:
        return await deciding.decide(
            self.router,
            self.policies.current,
            self.features,
            req,
            tenant,
            size=req.content_chars(),
            not_found="The model '{model}' does not exist or you do not have access to it.",
            stream=stream,
            budget_spent=budget_spent,
        )

    # -- answering --------------------------------------------------------------------------

    async def handle(
        self,
        req: AnyRequest,
        endpoint: Endpoint,
        tenant: str | None,
        cc: CacheControl | None = None,
        *,
        budget_spent: bool = False,
        on_decision: Callable[[Features, Decision], None] | None = None,
    ) -> Outcome:
        """The answer; `on_decision` hears the decision first."""
        decided = await self.decide(req, tenant, budget_spent=budget_spent, stream=bool(req.stream))
        return await deciding.answer(
            decided, on_decision, lambda f, d: self._handle(req, endpoint, tenant, cc, f, d)
        )

    async def _handle(
        self,
        req: AnyRequest,
        endpoint: Endpoint,
        tenant: str | None,
        cc: CacheControl | None,
        f: Features,
        decision: Decision,
    ) -> Outcome:
        if f.prompt_tokens > self.max_prompt_tokens:
            raise ContextLengthExceeded(
                f"The prompt has about {f.prompt_tokens} tokens; this gateway accepts at most "
                f"{self.max_prompt_tokens}.",
                param="messages",
            )
        if decision.budget_bound and decision.why_not_local:
            # The budget is spent and the local model cannot answer: the budget's 429.
            raise budget_refusal(decision.why_not_local)
        # Entries are cloud answers keyed by the cloud model that gave them; a local-bound
        # request may still fall back to one (offline order `cache`) under the first model.
        cloud_bound = decision.target != LOCAL
        plan = CachePlan.make(
            self.cache,
            req,
            endpoint=endpoint,
            tenant=tenant,
            target=decision.target if cloud_bound else next(iter(self.clouds), None),
            cloud_bound=cloud_bound,
            mode=decision.cache_mode,
            cc=cc or CacheControl(),
            semantic=self.semantic if decision.semantic is not None else None,
            semantic_cfg=decision.semantic,
        )
        attempt = Attempt(decision, self.breakers, CHAT)
        outcome = await attempt.run(
            lambda target, i: self._try(target, i, attempt, req, endpoint, f, plan)
        )
        if decision.cascade is not None and outcome.route == LOCAL:
            return await self._escalate(req, endpoint, f, outcome, attempt)
        return outcome

    async def _try(
        self,
        target: str,
        i: int,
        attempt: Attempt,
        req: AnyRequest,
        endpoint: Endpoint,
        f: Features,
        plan: CachePlan,
    ) -> Outcome | None:
        """One target of the attempt list: an outcome, or None with the cause noted."""
        # The one look-up: the cache as a fallback (`offline.order`), or ahead of the cloud
        # model the request is bound for while that model is reachable (no look-up spent on
        # an open breaker, and a half-open one keeps its probe for the real call).
        if target == CACHE or (i == 0 and target != LOCAL and self.breakers[target].reachable):
            hit = await plan.fetch(stream=req.stream, degraded=i > 0)
            if hit is not None:
                return self._from_cache(hit, plan, f, attempt.decision)
            if target == CACHE:
                raise Skipped("no cached answer")
        backend: Backend
        if target == LOCAL:
            backend = self.local.route(attempt.decision.model)  # leases that model's file
            if attempt.decision.cascade is not None and not req.stream:
                req = probing(req)  # token logprobs for the confidence, stripped afterwards
        else:
            if not attempt.allow(target, i):
                return None
            backend = self.clouds[target]
        outcome = await attempt.call(
            target, i, self._attempt(backend, req, endpoint, f, attempt.decision)
        )
        if outcome is None:
            return None
        outcome.model_file = getattr(backend, "served_by", None)
        if target in self.breakers:
            attempt.succeeded(target)
            if outcome.tier is None or not outcome.tier.degraded:
                # A tier's degraded answer (its local model standing in for the cloud) is not
                # the cloud's: kept, it would be served as one long after the uplink is back.
                outcome.chunks = plan.keep(outcome.completion, outcome.chunks)
        outcome.cache = plan.state
        return outcome

    async def _escalate(
        self, req: AnyRequest, endpoint: Endpoint, f: Features, local: Outcome, attempt: Attempt
    ) -> Outcome:
        """`route: cascade`: keep a confident local answer, redo an unsure one in the cloud."""
        cascade = local.decision.cascade
        assert cascade is not None
        record = local.cascade = CascadeRecord(to=cascade.to)
        if local.completion is None:  # `cascade.stream: local`: served as it is generated
            record.outcome, record.why = "stream_local", "streams are not escalated"
            return local
        obj = local.completion.obj
        usage = obj.get("usage") or {}
        record.local_prompt_tokens = int(usage.get("prompt_tokens") or 0)
        record.local_completion_tokens = int(usage.get("completion_tokens") or 0)
        lps = token_logprobs(obj)
        if not client_wants_logprobs(req):
            strip_logprobs(obj)
            local.completion.raw = None
        if not lps and record.local_completion_tokens:
            record.outcome, record.why = "no_logprobs", "no token logprobs for this request"
            return local
        conf = of_logprobs(lps)
        record.mean_logprob, record.min_logprob, record.tokens = (
            conf.mean_logprob,
            conf.min_logprob,
            conf.tokens,
        )
        unsure = conf.below(cascade.threshold)
        if unsure is None:
            return local
        record.signal, record.why = unsure
        if f.pii:
            # Whatever the rule order, private text never leaves the box for a second opinion.
            record.outcome = "private"
            record.why += "; not escalated: private data in the prompt"
            return local
        cloud, why_not = await attempt.escalate(
            cascade.to,
            lambda: self._attempt(self.clouds[cascade.to], req, endpoint, f, local.decision),
        )
        if cloud is None:
            # Down, failing or refusing this request: the local answer is still an answer.
            return _keep_unsure(local, record, why_not or "")
        record.escalated, record.outcome = True, "escalated"
        # A tier that answered degraded gave its own local model's answer, not the cloud's:
        # no cloud answer to judge the local one against (learning pairs need one).
        record.cloud_answer = cloud.tier is None or not cloud.tier.degraded
        record.local_text = choice_text(obj) if record.cloud_answer else None
        cloud.cascade = record
        cloud.reason = f"{local.reason}; escalated: {record.why}"
        cloud.mark_tier()
        cloud.backend_seconds += local.backend_seconds
        log.info("cascade escalation", extra={"cascade": record.as_dict()})
        return cloud

    def _from_cache(
        self, hit: CacheHit, plan: CachePlan, f: Features, decision: Decision
    ) -> Outcome:
        return Outcome(
            "cache",
            "cache",
            decision,
            f,
            completion=hit.completion,
            chunks=hit.chunks,
            cache=plan.state,
            cache_similarity=hit.similarity,
            reason=decision.reason
            + ("; cache hit" if hit.similarity is None else "; semantic cache hit"),
            backend_seconds=hit.seconds,
            first_chunk_seconds=hit.seconds if hit.chunks is not None else None,
        )

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
                tier=completion.tier,
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
            tier=first.tier,
        )


def _keep_unsure(local: Outcome, record: CascadeRecord, cause: str) -> Outcome:
    """The cloud cannot take an unsure answer over: the local one, marked degraded."""
    record.outcome = "degraded"
    record.why += f"; not escalated: {cause}"
    local.degraded = True
    local.reason += f"; degraded: unsure local answer kept, {cause}"
    return local


async def _prepend(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
