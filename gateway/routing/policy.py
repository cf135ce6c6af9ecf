"""Operator routing policies: YAML validated into typed models, and the decision they make."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from .complexity import Complexity
from .features import LOCAL_CANNOT, Features
from .learned import LearnedScorer, WeightsError

LOCAL = "local"
CLOUD = "cloud"
CACHE = "cache"
CASCADE = "cascade"  # a rule's route: answer locally, escalate when the answer looks unsure

Need = Literal["tools", "images", "json_schema", "multiple_choices", "logprobs", "any"]
CacheMode = Literal["deterministic", "always", "never"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(_Strict):
    """A numeric condition; every bound given must hold."""

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Range:
        if self.gt is None and self.gte is None and self.lt is None and self.lte is None:
            raise ValueError("give at least one of gt, gte, lt, lte")
        return self

    def holds(self, v: float) -> bool:
        return (
            (self.gt is None or v > self.gt)
            and (self.gte is None or v >= self.gte)
            and (self.lt is None or v < self.lt)
            and (self.lte is None or v <= self.lte)
        )

    def describe(self, name: str, v: float) -> str:
        parts = [
            f"{op}{bound:g}"
            for op, bound in ((">", self.gt), (">=", self.gte), ("<", self.lt), ("<=", self.lte))
            if bound is not None
        ]
        return f"{name}={v:g} {' '.join(parts)}"


class When(_Strict):
    """Conditions over the request's features; all given must hold (an empty `when` matches)."""

    model: list[str] | None = Field(None, description="requested model alias or name, any of")
    prompt_tokens: Range | None = None
    complexity: Range | None = None
    needs: list[Need] | None = Field(None, description="any of these needs; `any` for any need")
    pii: bool | list[Literal["email", "phone", "card", "iban"]] | None = None
    tenant: list[str] | None = Field(None, description="tenant ids (sha256 of the key, 12 hex)")
    cloud_reachable: bool | None = None
    local_queue_depth: Range | None = None
    local_queue_full: bool | None = None
    exceeds_local_context: bool | None = None

    def match(self, f: Features) -> list[str] | None:
        """Why it matches (one phrase per condition), or None when it does not."""
        why: list[str] = []
        if self.model is not None:
            if f.model not in self.model:
                return None
            why.append(f"model={f.model}")
        for name in ("prompt_tokens", "complexity", "local_queue_depth"):
            cond: Range | None = getattr(self, name)
            if cond is not None:
                value = getattr(f, name)
                if not cond.holds(value):
                    return None
                why.append(cond.describe(name, value))
        if self.needs is not None:
            hit = [n for n in f.needs if "any" in self.needs or n in self.needs]
            if not hit:
                return None
            why.append("needs=" + ",".join(hit))
        if self.pii is not None:
            if isinstance(self.pii, bool):
                if bool(f.pii) != self.pii:
                    return None
                why.append("pii=" + (",".join(f.pii) if f.pii else "none"))
            else:
                hit = [k for k in f.pii if k in self.pii]
                if not hit:
                    return None
                why.append("pii=" + ",".join(hit))
        if self.tenant is not None:
            if f.tenant not in self.tenant:
                return None
            why.append(f"tenant={f.tenant}")
        for name in ("cloud_reachable", "local_queue_full", "exceeds_local_context"):
            flag: bool | None = getattr(self, name)
            if flag is not None:
                if getattr(f, name) != flag:
                    return None
                why.append(f"{name}={str(flag).lower()}")
        return why


class Thresholds(_Strict):
    """Escalate when the local answer's token logprobs fall below any bound given."""

    mean_logprob: float | None = Field(
        None, le=0, description="mean logprob of the answer's tokens (natural log)"
    )
    min_logprob: float | None = Field(None, le=0, description="the least likely token's logprob")

    @model_validator(mode="after")
    def _some_bound(self) -> Thresholds:
        if self.mean_logprob is None and self.min_logprob is None:
            raise ValueError("give mean_logprob, min_logprob or both")
        return self


class CascadeConfig(_Strict):
    """`route: cascade`: the local model answers; an unsure answer is redone by `to`."""

    to: str = Field(CLOUD, min_length=1, description="cloud or a cloud model's name")
    threshold: Thresholds
    stream: Literal["local", "cloud"] = Field(
        "local",
        description="streams: `local` answers locally, never escalated; `cloud` sends them "
        "to `to` directly",
    )


class Rule(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    when: When = Field(default_factory=When)
    route: str = Field(min_length=1, description="local, cloud, a cloud model's name, or cascade")
    enforce: bool = Field(
        False, description="also applies when the client names a model (e.g. privacy rules)"
    )
    cascade: CascadeConfig | None = Field(None, description="settings of `route: cascade`")

    @model_validator(mode="after")
    def _cascade_settings(self) -> Rule:
        if (self.route == CASCADE) != (self.cascade is not None):
            raise ValueError("`route: cascade` and a `cascade:` block go together")
        if self.cascade is not None and self.cascade.to in (LOCAL, CACHE, CASCADE):
            raise ValueError("cascade.to names a cloud target: cloud or a cloud model's name")
        return self

    model: str | None = Field(
        None,
        min_length=1,
        description="with route local or cascade: which local model answers (local.models)",
    )

    @model_validator(mode="after")
    def _model_needs_local(self) -> Rule:
        if self.model is not None and self.route not in (LOCAL, CASCADE):
            raise ValueError("`model` picks a local model: it needs `route: local` or `cascade`")
        return self


class Offline(_Strict):
    order: list[str] = Field(
        default_factory=lambda: [CACHE, LOCAL],
        description="where to go, in order, when the chosen target cannot answer",
    )
    allow_degraded: bool = Field(True, description="false: fail fast (503) instead")


class ScorerConfig(_Strict):
    """Where the `complexity` feature comes from when not from the shipped scorer."""

    weights: str = Field(
        min_length=1,
        description="weights file written by `train-router`, relative to the policy file",
    )
    _model: LearnedScorer | None = PrivateAttr(default=None)
    _path: Path | None = PrivateAttr(default=None)  # the weights file as resolved at load

    @property
    def path(self) -> Path | None:
        return self._path

    def score(self, text: str, *, max_tokens: int | None = None) -> Complexity:
        """Scores with the loaded weights (load_policy loads them; unloaded is a bug)."""
        if self._model is None:
            raise RuntimeError(f"scorer weights {self.weights!r} were never loaded")
        return self._model.score(text, max_tokens=max_tokens)


class Policy(_Strict):
    version: Literal[1] = 1
    default: str = Field(min_length=1)
    cache: CacheMode = "deterministic"
    scorer: ScorerConfig | None = Field(
        None, description="learned scorer weights; absent: the shipped scorer"
    )
    rules: list[Rule] = Field(default_factory=list)
    offline: Offline = Field(default_factory=Offline)

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Policy:
        names = [r.name for r in self.rules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"rule names must be unique: {sorted(dup)}")
        return self

    def cloud_threshold(self) -> float | None:
        """The complexity at and above which the first complexity rule sends `auto` traffic
        away from the local model (its `gte` or `gt`), or None when no rule does: where the
        policy sits on the routing curve."""
        for r in self.rules:
            c = r.when.complexity
            if c is None or r.route == LOCAL:
                continue
            bound = c.gte if c.gte is not None else c.gt
            if bound is not None:
                return bound
        return None

    def targets(self) -> Iterable[tuple[str, str]]:
        """(location, target) of every route the policy names, for checking them."""
        yield "default", self.default
        for i, r in enumerate(self.rules):
            yield f"rules.{i}.route", r.route
            if r.cascade is not None:
                yield f"rules.{i}.cascade.to", r.cascade.to
        for i, t in enumerate(self.offline.order):
            yield f"offline.order.{i}", t


@dataclass(frozen=True, slots=True)
class Decision:
    target: str  # "local" or a cloud model's name
    rule: str
    reason: str
    fallbacks: tuple[str, ...]
    allow_degraded: bool
    cache_mode: CacheMode
    cascade: CascadeRoute | None = None  # `route: cascade`: target is local, this escalates
    model: str | None = None  # the named local model to answer with; None: the default

    @property
    def route(self) -> str:
        return LOCAL if self.target == LOCAL else CLOUD


@dataclass(frozen=True, slots=True)
class CascadeRoute:
    """A cascade rule as decided: where unsure answers go, and how streams are served."""

    to: str  # the resolved cloud model's name
    threshold: Thresholds
    stream_decision: Decision | None  # `stream: cloud`: the decision streams take instead


class PolicyError(Exception):
    """A policy file is wrong: the message names file, line and field."""


def parse_policy(
    text: str,
    *,
    source: str = "<policy>",
    cloud_names: Iterable[str] | None = None,
    base_dir: Path | None = None,
    local_models: Iterable[str] | None = None,
) -> Policy:
    """Validates a policy and loads its scorer weights (relative paths from `base_dir`)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"{where}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{source}:1: a policy is a mapping with at least `default:`")
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = [p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS)]
            line = _line_of(node, loc)
            field = ".".join(str(p) for p in loc) or "(top level)"
            lines.append(f"{source}:{line}: field {field}: {err['msg']}")
        raise PolicyError("\n".join(lines)) from None
    if cloud_names is not None:
        known = {LOCAL, CLOUD, *cloud_names}
        for where, target in policy.targets():
            allowed = known | ({CACHE} if where.startswith("offline") else set())
            allowed |= {CASCADE} if where.endswith(".route") else set()
            if target not in allowed:
                parts: list[str | int] = [int(p) if p.isdigit() else p for p in where.split(".")]
                line = _line_of(node, parts)
                raise PolicyError(
                    f"{source}:{line}: field {where}: unknown target {target!r} "
                    f"(known: {', '.join(sorted(allowed))})"
                )
    if local_models is not None:
        named = set(local_models)
        for i, r in enumerate(policy.rules):
            if r.model is not None and r.model not in named:
                line = _line_of(node, ["rules", i, "model"])
                raise PolicyError(
                    f"{source}:{line}: field rules.{i}.model: unknown local model {r.model!r} "
                    f"(known: {', '.join(sorted(named))})"
                )
    if policy.scorer is not None:
        weights = Path(policy.scorer.weights).expanduser()
        if not weights.is_absolute():
            weights = (base_dir or Path.cwd()) / weights
        try:
            policy.scorer._model = LearnedScorer.load(weights)
            policy.scorer._path = weights
        except WeightsError as exc:
            line = _line_of(node, ["scorer", "weights"])
            raise PolicyError(f"{source}:{line}: field scorer.weights: {exc}") from None
    return policy


# pydantic puts the union member's type name into error locations; the YAML has no such level.
_UNION_TAGS = {"bool", "list[literal['email','phone','card','iban']]", "float", "int", "str"}


def _line_of(node: Any, loc: list[Any]) -> int:
    """The 1-based line of the deepest YAML node along `loc` that exists."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key, value in node.value:
                if key.value == part:
                    nxt = value
                    line = key.start_mark.line + 1
                    break
            if nxt is None:
                break
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def load_policy(
    path: Path,
    *,
    cloud_names: Iterable[str] | None = None,
    local_models: Iterable[str] | None = None,
) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read: {exc.strerror}") from None
    # Weights are read here too, so every reload of the policy re-reads its weights file.
    return parse_policy(
        text,
        source=str(path),
        cloud_names=cloud_names,
        base_dir=path.parent,
        local_models=local_models,
    )


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
        self, *, cloud_names: list[str], local_names: Iterable[str], embeddings: bool = False
    ) -> None:
        self.cloud_names = cloud_names
        self.local_names = {LOCAL, *local_names}
        self.local_models = set(local_names)  # names a request or rule may pick a model by
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
        d = self._by_rules(policy, f)
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
            )
        return d

    def _by_rules(self, policy: Policy, f: Features) -> Decision:
        explicit = f.model != "auto"
        for rule in policy.rules:
            if explicit and not rule.enforce:
                continue
            why = rule.when.match(f)
            if why is not None and rule.cascade is not None:
                cascaded = self._cascade(policy, rule, rule.cascade, why, f)
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
                        policy, target, rule.name, why, model=model, on_box=on_box
                    )
                return self._decision(
                    policy, target, rule.name, why, model=self._named(f), on_box=on_box
                )
        if explicit:
            target = self.resolve(f.model)
            if target is None:
                raise KeyError(f.model)
            return self._decision(
                policy, target, "model", [f"model={f.model}"], model=self._named(f)
            )
        target = self.resolve(policy.default) or LOCAL
        return self._decision(policy, target, "default", [])

    def _cascade(
        self, policy: Policy, rule: Rule, config: CascadeConfig, why: list[str], f: Features
    ) -> Decision | None:
        """Local first, `config.to` for unsure answers; None when no such cloud model exists."""
        to = self.resolve(config.to)
        if to is None or to == LOCAL:
            return None  # like a cloud rule on a box with no cloud models: the next rule
        streams = None
        if config.stream == CLOUD:
            streams = self._decision(policy, to, rule.name, [*why, "stream: cascade.stream=cloud"])
        model = rule.model if rule.model in self.local_models else self._named(f)
        local = self._decision(policy, LOCAL, rule.name, [*why, f"cascade to {to}"], model=model)
        return replace(local, cascade=CascadeRoute(to, config.threshold, streams))

    def _named(self, f: Features) -> str | None:
        """The local model the client named, if it named one."""
        return f.model if f.model in self.local_models else None

    def _decision(
        self,
        policy: Policy,
        target: str,
        rule: str,
        why: list[str],
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
                fallbacks.append(resolved)
        reason = f"rule={rule}" + (f"; {'; '.join(why)}" if why else "")
        return Decision(
            target=target,
            rule=rule,
            reason=reason,
            fallbacks=tuple(fallbacks),
            allow_degraded=policy.offline.allow_degraded,
            cache_mode=policy.cache,
            model=model if target == LOCAL else None,
        )


def local_can_serve(f: Features) -> str | None:
    """Why the local model cannot answer this request, or None when it can."""
    if f.exceeds_local_context:
        return "prompt exceeds the local context"
    hard = [n for n in f.needs if n in LOCAL_CANNOT]
    if hard:
        return "needs " + ",".join(hard)
    return None
