"""A routing policy's typed models: rules and their conditions, cascade, offline order, scorer.

Strict (unknown fields are errors) so a typo in an operator's YAML never passes as a default;
policy_file.py reads the YAML into them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from ..semantic.policy_block import SemanticCacheConfig
from .complexity import Complexity
from .features import Features
from .learned import LearnedScorer
from .pii import UNKNOWN_KINDS, Detector, PrivacyConfig

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
    pii: bool | list[str] | None = Field(
        None,
        description="any private data (true), none (false), or any of these kinds (the "
        "policy's privacy.kinds and pattern names); a scan that could not finish matches all",
    )
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
                # `unscanned` and `token_ids` may hide any kind: they match every list (fail
                # closed).
                hit = [k for k in f.pii if k in self.pii or k in UNKNOWN_KINDS]
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

    @property
    def model(self) -> LearnedScorer | None:
        """The loaded weights (None until load_policy loads them)."""
        return self._model

    def load(self, path: Path) -> None:
        """Load the weights from `path` (the file `weights` names, resolved by the loader);
        WeightsError when the file is not a scorer's."""
        self._model = LearnedScorer.load(path)
        self._path = path

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
    privacy: PrivacyConfig = Field(
        default_factory=PrivacyConfig,
        description="what the private-data scan looks for (kinds, regions, own patterns)",
    )
    semantic_cache: SemanticCacheConfig = Field(
        default_factory=SemanticCacheConfig,
        description="answer the same question asked another way from the cache (off)",
    )
    _detector: Detector | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Policy:
        names = [r.name for r in self.rules]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"rule names must be unique: {sorted(dup)}")
        return self

    @model_validator(mode="after")
    def _known_pii_kinds(self) -> Policy:
        known = self.privacy.all_kinds()
        for r in self.rules:
            if isinstance(r.when.pii, list):
                unknown = [k for k in r.when.pii if k not in known]
                if unknown:
                    raise ValueError(
                        f"rule {r.name!r}: pii kinds {unknown} are not scanned for "
                        f"(privacy.kinds and pattern names: {list(known)})"
                    )
        return self

    @property
    def detector(self) -> Detector:
        """The private-data detector of this policy, built once (it loads libphonenumber's
        metadata for every region): a reload builds a new one with the new policy."""
        if self._detector is None:
            self._detector = Detector(self.privacy)
        return self._detector

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
