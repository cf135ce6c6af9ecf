"""The routing decision: a policy (policy_models.py) applied to a request's features."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import NamedTuple

from ..errors import ContextLengthExceeded
from ..semantic.policy_block import SemanticCacheConfig
from .features import LOCAL_CANNOT, Features
from .policy_models import (
    CACHE,
    CLOUD,
    LOCAL,
    CacheMode,
    CascadeConfig,
    Policy,
    Rule,
    Thresholds,
)
from .windows import ContextWindow


@dataclass(frozen=True, slots=True)
class Decision:
    target: str  # "local" or a cloud model's name
    rule: str
    reason: str
    fallbacks: tuple[str, ...]
    allow_degraded: bool
    cache_mode: CacheMode
    cascade: CascadeRoute | None = None  # `route: cascade`: target is local, this escalates
    # The policy's semantic cache when it is on (the decision carries the policy it was made
    # under, so a reload mid-request changes nothing for that request).
    semantic: SemanticCacheConfig | None = None
    model: str | None = None  # the named local model to answer with; None: the default
    # Worked out here once, for every later step: why the local model cannot answer this
    # request (None: it can), whether the spent budget put the request on the local model,
    # and the backend the client's `model` names (None for `auto`).
    why_not_local: str | None = None
    budget_bound: bool = False
    requested: str | None = None

    @property
    def route(self) -> str:
        return LOCAL if self.target == LOCAL else CLOUD


@dataclass(frozen=True, slots=True)
class CascadeRoute:
    """A cascade rule as decided: where unsure answers go, and how streams are served."""

    to: str  # the resolved cloud model's name
    threshold: Thresholds
    stream_decision: Decision | None  # `stream: cloud`: the decision streams take instead


class _Given(NamedTuple):
    """What `decide` works out once, before any rule, for every decision it builds."""

    why_not_local: str | None
    requested: str | None


class UnknownModel(KeyError):
    """The request names a model this router serves under no name (the caller's 404)."""


class Router:
    """Applies a policy to features. Cheap: a few comparisons per rule.

    The decision is final when `decide` returns it: what the request itself says (a stream)
    and what its key may still spend (a spent daily cloud budget) are inputs, not edits made
    afterwards. `embeddings` routes vectors: two models' vectors share no space, so only
    `model: auto` falls back to another model, and never to the cache as a target (embedding
    caches are looked up per input, for every target).
    """

    BUDGET_RULE = "budget-exceeded"

    def __init__(
        self,
        *,
        cloud_names: list[str],
        local_names: Iterable[str],
        windows: Mapping[str, ContextWindow] | None = None,
        embeddings: bool = False,
    ) -> None:
        self.cloud_names = cloud_names
        self.local_names = {LOCAL, *local_names}
        self.local_models = set(local_names)  # names a request or rule may pick a model by
        self.windows = dict(windows or {})  # cloud models' context windows; absent: unchecked
        self.embeddings = embeddings

    def resolve(self, target: str) -> str | None:
        """A policy target as a backend name; None when it names no configured backend."""
        if target == CLOUD:
            return self.cloud_names[0] if self.cloud_names else None
        if target in self.local_names:
            return LOCAL
        return target if target in self.cloud_names else None

    def decide(
        self, policy: Policy, f: Features, *, stream: bool = False, budget_spent: bool = False
    ) -> Decision:
        """The decision, final: every later step reads it and none changes it. Raises
        UnknownModel when the request names a model nothing here serves, before any rule
        (an enforced privacy rule would otherwise answer a typo from the local model)."""
        requested = None
        if f.model != "auto":
            requested = self.resolve(f.model)
            if requested is None:
                raise UnknownModel(f.model)
        why_not_local = why_local_cannot(f)
        d = self._by_rules(policy, f, _Given(why_not_local, requested))
        if self.embeddings:
            # The cache is looked up for every target anyway; only `auto` may change models.
            fallbacks = tuple(t for t in d.fallbacks if t != CACHE) if f.model == "auto" else ()
            d = replace(d, fallbacks=fallbacks if d.allow_degraded else ())
        elif d.cascade is not None:
            # Streams take `cascade.stream: cloud`'s decision; a spent budget never escalates.
            if stream and d.cascade.stream_decision is not None:
                d = d.cascade.stream_decision
            elif budget_spent:
                d = replace(d, cascade=None)
        if budget_spent and d.target != LOCAL:
            # The local model answers, or (when it cannot) the budget's 429 says why not.
            d = replace(
                d,
                target=LOCAL,
                fallbacks=() if self.embeddings else d.fallbacks,
                rule=self.BUDGET_RULE,
                reason=f"rule={self.BUDGET_RULE}; daily cloud budget spent",
                budget_bound=True,
            )
        return d

    def _by_rules(self, policy: Policy, f: Features, given: _Given) -> Decision:
        requested = given.requested
        explicit = requested is not None
        for rule in policy.rules:
            if explicit and not rule.enforce:
                continue
            why = rule.when.match(f)
            if why is not None and rule.cascade is not None:
                cascaded = self._cascade(policy, rule, rule.cascade, why, f, given)
                if cascaded is not None:
                    return cascaded
            elif why is not None:
                target = self.resolve(rule.route)
                if target is None:  # e.g. a cloud rule on a box with no cloud models
                    continue
                # A local rule on private data keeps it on the box when the local model fails
                # too: no cloud target of `offline.order` is tried after it.
                on_box = target == LOCAL and bool(rule.when.pii)
                if rule.model is not None and target == LOCAL:
                    # A model this router does not serve (the embeddings router knows only its
                    # embedding model) still means local: a privacy rule must never be skipped.
                    model = rule.model if rule.model in self.local_models else None
                    return self._decision(
                        policy, f, target, rule.name, why, given, model=model, on_box=on_box
                    )
                return self._decision(
                    policy,
                    f,
                    target,
                    rule.name,
                    why,
                    given,
                    model=self._named(f),
                    on_box=on_box,
                )
        if requested is not None:
            return self._decision(
                policy,
                f,
                requested,
                "model",
                [f"model={f.model}"],
                given,
                model=self._named(f),
            )
        target = self.resolve(policy.default) or LOCAL
        return self._decision(policy, f, target, "default", [], given)

    def _cascade(
        self,
        policy: Policy,
        rule: Rule,
        config: CascadeConfig,
        why: list[str],
        f: Features,
        given: _Given,
    ) -> Decision | None:
        """Local first, `config.to` for unsure answers; None when no such cloud model exists."""
        to = self.resolve(config.to)
        if to is None or to == LOCAL or self.too_small(to, f) is not None:
            return None  # like a cloud rule on a box with no cloud models: the next rule
        streams = None
        if config.stream == CLOUD:
            streams = self._decision(
                policy, f, to, rule.name, [*why, "stream: cascade.stream=cloud"], given
            )
        model = rule.model if rule.model in self.local_models else self._named(f)
        local = self._decision(
            policy, f, LOCAL, rule.name, [*why, f"cascade to {to}"], given, model=model
        )
        return replace(local, cascade=CascadeRoute(to, config.threshold, streams))

    def _named(self, f: Features) -> str | None:
        """The local model the client named, if it named one."""
        return f.model if f.model in self.local_models else None

    def too_small(self, target: str, f: Features) -> str | None:
        """Why cloud model `target`'s context window cannot hold the request; None if it can."""
        window = self.windows.get(target)
        return window.too_small(f) if window is not None else None

    def _decision(
        self,
        policy: Policy,
        f: Features,
        target: str,
        rule: str,
        why: list[str],
        given: _Given,
        *,
        model: str | None = None,
        on_box: bool = False,
    ) -> Decision:
        """`on_box`: fall back to the cache and the local model only, never a cloud model."""
        fallbacks: list[str] = []
        for t in policy.offline.order:
            resolved = CACHE if t == CACHE else self.resolve(t)
            if on_box and resolved not in (CACHE, LOCAL):
                continue
            if resolved and resolved != target and resolved not in fallbacks:
                if self.too_small(resolved, f) is None:
                    fallbacks.append(resolved)
        too_small = self.too_small(target, f)
        if too_small is not None:
            why = [*why, f"{target} cannot serve: {too_small}"]
            target = self._past_window(f, target, rule, fallbacks, given.why_not_local)
        reason = f"rule={rule}" + (f"; {'; '.join(why)}" if why else "")
        return Decision(
            target=target,
            rule=rule,
            reason=reason,
            fallbacks=tuple(fallbacks),
            allow_degraded=policy.offline.allow_degraded,
            cache_mode=policy.cache,
            semantic=policy.semantic_cache if policy.semantic_cache.enabled else None,
            model=model if target == LOCAL else None,
            why_not_local=given.why_not_local,
            requested=given.requested,
        )

    def _past_window(
        self,
        f: Features,
        target: str,
        rule: str,
        fallbacks: list[str],
        why_not_local: str | None,
    ) -> str:
        """The target standing in for one whose context window the request exceeds, taken out
        of `fallbacks`: the next that can serve (never the cache, which answers nothing new;
        the local model when it fits). The model the client named is refused, as OpenAI
        refuses it, and so is a request no target can hold."""
        window = self.windows[target]
        nxt = None
        if rule != "model":
            able = (t for t in fallbacks if t != CACHE and (t != LOCAL or not why_not_local))
            nxt = next(able, None)
        if nxt is None:
            raise ContextLengthExceeded(
                f"The model {target!r} holds at most {window.tokens} tokens; this request "
                f"needs about {window.needed(f)} (its messages and max_tokens). Shorten the "
                "messages or lower max_tokens.",
                param="messages",
            )
        fallbacks.remove(nxt)
        return nxt


def why_local_cannot(f: Features) -> str | None:
    """Why the local model cannot answer this request, or None when it can."""
    if f.exceeds_local_context:
        return "prompt exceeds the local context"
    hard = [n for n in f.needs if n in LOCAL_CANNOT]
    if hard:
        return "needs " + ",".join(hard)
    return None
