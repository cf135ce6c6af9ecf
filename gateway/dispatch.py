"""The dispatcher: features -> policy decision -> cache | backend, failover before the first byte.

One request's walk: `handle` decides (routing/), opens the cache step (cache/), tries the
targets in order (backends/), and returns an `Outcome` for the HTTP layer to render.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from .backends.base import Backend, BackendUnavailable, Chunk, Completion, Endpoint
from .backends.health import Breaker, retry_after
from .backends.tier import TierReport
from .cache import CacheControl, CacheHit, CachePlan, ResponseCache
from .cascade import (
    CascadeRecord,
    client_wants_logprobs,
    of_logprobs,
    probing,
    strip_logprobs,
    token_logprobs,
)
from .errors import (
    ContextLengthExceeded,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    NoRouteAvailable,
    NotReady,
    QueueFull,
    RateLimited,
)
from .local.entry import ModelUnavailable
from .local.fleet import Fleet
from .routing.features import FeatureExtractor, Features
from .routing.live_policy import PolicyStore
from .routing.policy import CACHE, LOCAL, Decision, Router, why_local_cannot
from .routing.privacy import TooLarge
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
    cascade: CascadeRecord | None = None  # `route: cascade`: confidence and escalation
    model_file: str | None = None  # sha256 prefix of the local GGUF that answered
    tier: TierReport | None = None  # a tier answered: what it said about its own answer

    def headers(self) -> dict[str, str]:
        h = {"x-gateway-route": self.route, "x-gateway-reason": self.reason}
        if self.degraded:
            h["x-gateway-degraded"] = "true"
        if self.cache:
            h["x-gateway-cache"] = self.cache
        if self.cascade is not None:
            h.update(self.cascade.headers())
        if self.model_file:
            h["x-gateway-model-file"] = self.model_file
        if self.tier is not None:
            h.update(self.tier.headers())
        return h

    def mark_tier(self) -> None:
        """A tier's degraded answer is this box's degraded answer too, and says why."""
        if self.tier is not None and self.tier.degraded:
            self.degraded = True
            self.reason += (
                f"; degraded: tier {self.tier.tier} answered degraded (its route: "
                f"{self.tier.route})"
            )


class Dispatcher:
    def __init__(
        self,
        *,
        local: Fleet,
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
        ids += [(n, "edge-gateway") for n in self.local.names if n != self.local.model_name]
        if self.clouds:
            ids.append(("cloud", "edge-gateway"))
            ids += [(name, "edge-gateway") for name in self.clouds]
        return ids

    def cloud_reachable(self) -> bool:
        return any(b.reachable for b in self.breakers.values())

    # -- deciding ---------------------------------------------------------------------------

    def features(
        self, req: AnyRequest, tenant: str | None, *, scan_budget: int | None = None
    ) -> Features:
        return self.extractor.extract(
            req,
            tenant=tenant,
            cloud_reachable=self.cloud_reachable(),
            local_queue_depth=self.local.queue_depth,
            local_queue_full=not self.local.has_room(),
            scorer=self.policies.current.scorer,
            scan_budget=scan_budget,
        )

    async def decide(self, req: AnyRequest, tenant: str | None) -> tuple[Features, Decision]:
        # An unknown model is refused before any rule can match it (an enforced privacy rule
        # would otherwise answer a typo from the local model).
        if req.model != "auto" and self.router.resolve(req.model) is None:
            raise ModelNotFound(
                f"The model '{req.model}' does not exist or you do not have access to it.",
                param="model",
            )
        f = None
        if req.content_chars() <= OFF_LOOP_CHARS:
            # The privacy scan reads every field; many or long ones besides the text (tool
            # schemas, metadata) send the extraction off the loop too.
            with contextlib.suppress(TooLarge):
                f = self.features(req, tenant, scan_budget=OFF_LOOP_CHARS)
        if f is None:
            # Linear, but tens of milliseconds on a long prompt: not on the event loop.
            f = await asyncio.to_thread(self.features, req, tenant)
        return f, self.router.decide(self.policies.current, f)

    # -- answering --------------------------------------------------------------------------

    async def handle(
        self,
        req: AnyRequest,
        endpoint: Endpoint,
        tenant: str | None,
        cc: CacheControl | None = None,
        *,
        force_local: bool = False,
        on_decision: Callable[[Features, Decision], None] | None = None,
    ) -> Outcome:
        """The answer; `on_decision` hears the decision first (the request log keeps it for a
        request that fails after it was routed, as the error's headers do)."""
        f, decision = await self.decide(req, tenant)
        if on_decision is not None:
            on_decision(f, decision)
        try:
            return await self._handle(req, endpoint, tenant, cc, f, decision, force_local)
        except GatewayError as exc:
            # A decision was made: the error says which, as a success would.
            exc.headers.setdefault("x-gateway-route", decision.route)
            exc.headers.setdefault("x-gateway-reason", decision.reason)
            raise

    async def _handle(
        self,
        req: AnyRequest,
        endpoint: Endpoint,
        tenant: str | None,
        cc: CacheControl | None,
        f: Features,
        decision: Decision,
        force_local: bool,
    ) -> Outcome:
        if f.prompt_tokens > self.max_prompt_tokens:
            raise ContextLengthExceeded(
                f"The prompt has about {f.prompt_tokens} tokens; this gateway accepts at most "
                f"{self.max_prompt_tokens}.",
                param="messages",
            )
        why_not_local = why_local_cannot(f)  # once per request; None when local can answer
        if decision.cascade is not None:
            # Streams take `cascade.stream: cloud`'s decision; a spent budget never escalates.
            if req.stream and decision.cascade.stream_decision is not None:
                decision = decision.cascade.stream_decision
            elif force_local:
                decision = replace(decision, cascade=None)
        if force_local and decision.target != LOCAL:
            decision = _budget_spent(decision, why_not_local)
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
        )
        if not cloud_bound or self.breakers[decision.target].reachable:
            hit = await plan.fetch(stream=req.stream, degraded=False)
            if hit is not None:
                return self._from_cache(hit, plan, f, decision)
        attempt = _Attempt(decision, why_not_local)
        for i, target in enumerate(attempt.targets):
            if i > 0 and not decision.allow_degraded:
                break
            outcome = await self._try(target, i, attempt, req, endpoint, f, plan)
            if outcome is not None and decision.cascade is not None and outcome.route == LOCAL:
                return await self._escalate(
                    req, endpoint, f, attempt.finish(outcome, degraded=i > 0)
                )
            if outcome is not None:
                return attempt.finish(outcome, degraded=i > 0)
        raise attempt.nothing_left(self.breakers)

    async def _try(
        self,
        target: str,
        i: int,
        attempt: _Attempt,
        req: AnyRequest,
        endpoint: Endpoint,
        f: Features,
        plan: CachePlan,
    ) -> Outcome | None:
        """One target of the attempt list: an outcome, or None with the cause noted."""
        if target == CACHE:
            hit = await plan.fetch(stream=req.stream, degraded=i > 0)
            if hit is None:
                attempt.causes.append("no cached answer")
                return None
            return self._from_cache(hit, plan, f, attempt.decision)
        backend: Backend
        if target == LOCAL:
            if i > 0 and attempt.why_not_local:
                attempt.causes.append(f"local cannot serve: {attempt.why_not_local}")
                return None
            backend = self.local.route(attempt.decision.model)  # leases that model's file
            if attempt.decision.cascade is not None and not req.stream:
                req = probing(req)  # token logprobs for the confidence, stripped afterwards
        else:
            breaker = self.breakers[target]
            if not breaker.allow():
                attempt.skip(target, i, f"unreachable ({breaker.last_cause or 'breaker open'})")
                return None
            backend = self.clouds[target]
        try:
            outcome = await self._attempt(backend, req, endpoint, f, attempt.decision)
        except BackendUnavailable as exc:
            self.breakers[target].failure(exc.cause, unreachable=exc.unreachable)
            log.warning(
                "backend failed before first byte", extra={"target": target, "cause": exc.cause}
            )
            attempt.failed(target, i, exc, exc.cause)
            return None
        except QueueFull as exc:
            if not any(t in self.clouds or t == CACHE for t in attempt.targets[i + 1 :]):
                raise
            attempt.failed(target, i, exc, "queue_full", cause="local queue full")
            return None
        except (NotReady, ModelUnavailable) as exc:
            # The local model is loading, evicted and not reloadable in time, or will not fit:
            # like a full queue, the next target answers when the policy lists one.
            if not any(t in self.clouds or t == CACHE for t in attempt.targets[i + 1 :]):
                raise
            attempt.failed(target, i, exc, "local_unavailable", cause=f"local: {exc.message}")
            return None
        except InvalidRequest as exc:
            if target != LOCAL:
                raise
            # What the local model refuses once it reads the request (a schema its grammar
            # cannot enforce, a field it cannot honour, a prompt past its exact context) is
            # the same kind of reason as those the features know beforehand (images, a long
            # prompt): one rule decides for all of them.
            attempt.local_refused(i, exc)
            return None
        outcome.model_file = getattr(backend, "served_by", None)
        if target in self.breakers:
            self.breakers[target].success()
            if outcome.tier is None or not outcome.tier.degraded:
                # A tier's degraded answer (its local model standing in for the cloud) is not
                # the cloud's: kept, it would be served as one long after the uplink is back.
                outcome.chunks = plan.keep(outcome.completion, outcome.chunks)
        outcome.cache = plan.state
        return outcome

    async def _escalate(
        self, req: AnyRequest, endpoint: Endpoint, f: Features, local: Outcome
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
        breaker = self.breakers[cascade.to]
        if not breaker.allow():
            cause = breaker.last_cause or "breaker open"
            return _keep_unsure(local, record, f"{cascade.to} unreachable ({cause})")
        try:
            cloud = await self._attempt(
                self.clouds[cascade.to],
                req,
                endpoint,
                f,
                replace(local.decision, target=cascade.to),
            )
        except GatewayError as exc:
            # Down, failing or refusing this request: the local answer is still an answer.
            cause = exc.cause if isinstance(exc, BackendUnavailable) else str(exc.status)
            if isinstance(exc, BackendUnavailable):
                breaker.failure(exc.cause, unreachable=exc.unreachable)
            log.warning("cascade escalation failed", extra={"target": cascade.to, "cause": cause})
            return _keep_unsure(local, record, f"{cascade.to} failed ({cause})")
        breaker.success()
        record.escalated, record.outcome = True, "escalated"
        # A tier that answered degraded gave its own local model's answer, not the cloud's:
        # no cloud answer to judge the local one against (learning pairs need one).
        record.cloud_answer = cloud.tier is None or not cloud.tier.degraded
        record.local_text = _first_text(obj) if record.cloud_answer else None
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
            reason=decision.reason + "; cache hit",
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


def _first_text(obj: dict[str, object]) -> str:
    """The first choice's text, chat or completions shape."""
    choices = obj.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else {}
    msg = first.get("message") or {} if isinstance(first, dict) else {}
    text = msg.get("content") if isinstance(msg, dict) else None
    if text is None and isinstance(first, dict):
        text = first.get("text")
    return str(text or "")


def _keep_unsure(local: Outcome, record: CascadeRecord, cause: str) -> Outcome:
    """The cloud cannot take an unsure answer over: the local one, marked degraded."""
    record.outcome = "degraded"
    record.why += f"; not escalated: {cause}"
    local.degraded = True
    local.reason += f"; degraded: unsure local answer kept, {cause}"
    return local


BUDGET_RULE = "budget-exceeded"


def _budget_refusal(why_not_local: str, param: str | None = None) -> RateLimited:
    err = RateLimited(
        "The daily cloud budget is spent and the local model cannot "
        f"serve this request ({why_not_local}).",
        code="budget_exceeded",
        retry_after=3600,
    )
    err.param = param
    return err


def _budget_spent(decision: Decision, why_not_local: str | None) -> Decision:
    """The key's daily cloud budget is spent: the local model answers, or a 429 says why not."""
    if why_not_local:
        raise _budget_refusal(why_not_local)
    return replace(
        decision,
        target=LOCAL,
        rule=BUDGET_RULE,
        reason=f"rule={BUDGET_RULE}; daily cloud budget spent",
    )


class _Attempt:
    """The targets one request tries in order, and what went wrong with each."""

    def __init__(self, decision: Decision, why_not_local: str | None) -> None:
        self.decision = decision
        self.why_not_local = why_not_local
        self.local_param: str | None = None  # the field the local model refused, if it named one
        self.targets = [decision.target, *decision.fallbacks]
        self.causes: list[str] = []
        self.failovers: list[tuple[str, str, str]] = []  # (from, to, cause)
        self.last_error: GatewayError | None = None

    def _next(self, i: int) -> str:
        return self.targets[i + 1] if i + 1 < len(self.targets) else "none"

    def skip(self, target: str, i: int, why: str) -> None:
        self.causes.append(f"{target} {why}")
        self.failovers.append((target, self._next(i), "breaker_open"))

    def failed(
        self, target: str, i: int, exc: GatewayError, label: str, *, cause: str | None = None
    ) -> None:
        self.causes.append(cause or f"{target} failed ({label})")
        self.failovers.append((target, self._next(i), label))
        self.last_error = exc

    def local_refused(self, i: int, exc: InvalidRequest) -> None:
        """The local model refused the request (a 400 of its own): who should hear what.

        The request needed the cloud (its budget spent, or the cloud was tried first and
        could not answer) and cannot get it: that is not the client's mistake, whatever the
        local model could not do, so it gets the same answer as a request the features
        already showed the local model cannot serve. Only where the local model was the
        choice itself (the client's `model`, or the policy's route with the cloud fine) does
        its 400 stand.
        """
        if self.decision.rule == BUDGET_RULE:
            raise _budget_refusal(exc.message, exc.param) from None
        if i == 0:
            raise exc
        self.why_not_local = exc.message
        self.local_param = exc.param
        self.causes.append(f"local cannot serve: {exc.code or 'refused'}")
        self.last_error = exc

    def finish(self, outcome: Outcome, *, degraded: bool) -> Outcome:
        outcome.degraded = degraded
        if outcome.route != "cache" or not outcome.reason:
            outcome.reason = self.decision.reason
        if self.causes:
            outcome.reason += f"; degraded: {'; '.join(self.causes)}"
        outcome.failovers = self.failovers
        outcome.mark_tier()
        return outcome

    def nothing_left(self, breakers: dict[str, Breaker]) -> GatewayError:
        detail = "; ".join(self.causes) or "no target available"
        err: GatewayError
        if not self.decision.allow_degraded:
            err = NoRouteAvailable(
                f"The chosen backend is unavailable and the policy forbids degraded answers: "
                f"{detail}.",
                code="cloud_unavailable",
            )
        elif self.why_not_local:
            err = NoRouteAvailable(
                f"The cloud cannot answer now and the local model cannot serve this request "
                f"({self.why_not_local}): {detail}.",
                param=self.local_param,
                code="local_cannot_serve",
            )
        elif isinstance(self.last_error, QueueFull):
            return self.last_error
        else:
            err = NoRouteAvailable(f"No backend could answer: {detail}.", code="no_route_available")
        err.headers.update(retry_after(breakers[t] for t in self.targets if t in breakers))
        return err


async def _prepend(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]
