"""Whether retrained weights may replace the router in force: the canary's verdict (CPU).

A fixed share of the labels (by row id, so a row stays held back for its whole life) is never
trained on; the candidate is fitted on the rest and both it and the router in force score the
held-back rows, whose APGR decides. `Rules` holds what a retrain demands of whose labels
these are (retrain.py says why). retrain.py runs it off the event loop and applies the result.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..durable import Record
from ..routing.complexity import ComplexityScorer, Scorer
from ..routing.learned import LearnedScorer, WeightsError
from ..routing.training import gain_apgr, train
from .labels import example_of, key_of, trains_router

log = logging.getLogger(__name__)

_GOLDEN = 2654435761  # Knuth's multiplicative hash: ids spread evenly over [0, 2^32)


def held_out(row_id: int, share: float) -> bool:
    return (row_id * _GOLDEN % 2**32) / 2**32 < share


@dataclass(frozen=True)
class Rules:
    """What a retrain demands beyond "at least as good" (see the module's docstring)."""

    feedback_alone: bool = False  # learning.retrain_on_feedback
    tenants: bool = False  # two or more API keys: the per-key rules below apply
    max_key_share: float = 0.5
    key_weight_share: float = 0.25
    canary_min_keys: int = 2


@dataclass
class RetrainResult:
    accepted: bool
    reason: str  # "better", "as_good" when accepted; why not otherwise
    current: float | None = None  # APGR of the router in force on the held-back rows
    candidate: float | None = None
    trained_on: int = 0
    held_back: int = 0
    doc: dict[str, Any] | None = None
    keys: int = 0  # tenants among the labels used
    top_key: str | None = None  # the tenant id supplying the most of them, and its share
    top_share: float | None = None
    worse_for: str | None = None  # a tenant whose held-back labels the candidate ranks worse
    at: float = 0.0  # when it ran (unix time)

    def summary(self) -> dict[str, Any]:
        """What the status page shows of it (tenant ids are hashes, never keys)."""
        return {
            "result": "accepted" if self.accepted else "refused",
            "reason": self.reason,
            "at": self.at or None,
            "apgr_current": self.current,
            "apgr_candidate": self.candidate,
            "trained_on": self.trained_on,
            "held_back": self.held_back,
            "keys": self.keys,
            "top_key": self.top_key,
            "top_key_share": self.top_share,
            "worse_for_key": self.worse_for,
        }


def key_weights(counts: dict[str, int], share: float) -> dict[str, float]:
    """Per-label weight of each key's labels so that no key's total is over `share` of all.

    Water-filling: keys over the cap are brought down to it, which lowers the total, so the
    cap is recomputed until no further key is over it. Keys under it keep weight 1. With
    fewer than 1/share keys the cap is an equal share (it cannot be lower).
    """
    live = {k: n for k, n in counts.items() if n > 0}
    if not live:
        return {}
    cap = max(share, 1.0 / len(live))
    capped: set[str] = set()
    level = 0.0
    while True:
        free = sum(n for k, n in live.items() if k not in capped)
        rest = 1.0 - cap * len(capped)
        if rest <= 1e-12 or free == 0:  # every key at the cap: equal totals
            level = float(max(live.values()))
            capped = set(live)
            break
        level = cap * free / rest  # the capped keys' total: cap x (free + capped totals)
        over = {k for k, n in live.items() if k not in capped and n > level * (1 + 1e-9)}
        if not over:
            break
        capped |= over
    return {k: (level / n if k in capped else 1.0) for k, n in live.items()}


def current_raw(scorer: Scorer, rec: Record) -> float | None:
    """The router in force's linear score of a stored row; None when it cannot be computed."""
    vec = rec.body["v"]
    prompt = rec.body.get("prompt")
    if isinstance(scorer, LearnedScorer):
        raw = scorer.raw_vector(vec)
        if raw is None and prompt:
            raw = scorer.raw(prompt)[0]
        return raw
    if isinstance(scorer, ComplexityScorer):
        # The shipped scorer is linear in the same dense features (length, signals, lines).
        return scorer.raw_dense(vec["dense"])
    if prompt:
        return scorer.score(prompt).score
    return None


class _Refused(Exception):
    """Why a retrain stops short of new weights (RetrainResult.reason)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def evaluate(
    rows: Sequence[Record],
    current: Scorer,
    *,
    share: float,
    min_labels: int,
    seed: int = 0,
    rules: Rules | None = None,
) -> RetrainResult:
    """Fit on the rows not held back and compare with `current` on those held back (CPU).

    Each step below either fills in the result or refuses (`_Refused`, its reason): who
    supplied the labels, the hold-out, the fit, the comparison, each key's own share of it.
    """
    rules = rules or Rules()
    rows = [r for r in rows if trains_router(r)]
    if len(rows) < min_labels:
        return RetrainResult(False, "too_few_labels")
    by_key = Counter(key_of(r) for r in rows)
    top_key, top_n = by_key.most_common(1)[0]
    result = RetrainResult(
        False, "", keys=len(by_key), top_key=top_key, top_share=top_n / len(rows)
    )
    try:
        _sources(rows, rules, min_labels, top_n)
        hold, fit_rows, gains = _hold_out(rows, rules, share, result)
        candidate = _fit(fit_rows, rules, seed, result)
        cand, cur = _compare(candidate, current, hold, gains, result)
        if rules.tenants:
            _each_key(hold, gains, cand, cur, result)
    except _Refused as refused:
        result.reason = refused.reason
        return result
    result.accepted = True
    assert result.candidate is not None and result.current is not None
    result.reason = "better" if result.candidate > result.current + 1e-9 else "as_good"
    return result


def _sources(rows: list[Record], rules: Rules, min_labels: int, top_n: int) -> None:
    """Who supplied the labels: judges, not clients' own scores alone, and no one key most."""
    judged = [r for r in rows if r.kind != "feedback"]
    if not rules.feedback_alone and len(judged) < min_labels:
        # Clients' own scores are theirs to choose: without the opt-in they never decide a
        # retrain by themselves.
        raise _Refused("feedback_only")
    if rules.tenants and top_n / len(rows) > rules.max_key_share + 1e-12:
        raise _Refused("one_key")


def _hold_out(
    rows: list[Record], rules: Rules, share: float, result: RetrainResult
) -> tuple[list[Record], list[Record], list[float]]:
    """(held back, fitted on, the held-back labels): both kinds of label, enough keys."""
    hold = [r for r in rows if held_out(r.id, share)]
    if not rules.feedback_alone:
        hold = [r for r in hold if r.kind != "feedback"]  # only judges vouch for new weights
    fit_rows = [r for r in rows if not held_out(r.id, share)]
    gains = [float(r.body["label"]) for r in hold]
    result.held_back = len(hold)
    if not hold or not 0 < sum(gains) < len(gains):
        raise _Refused("holdout_one_label")
    if rules.tenants and len({key_of(r) for r in hold}) < rules.canary_min_keys:
        raise _Refused("holdout_few_keys")
    return hold, fit_rows, gains


def _fit(fit_rows: list[Record], rules: Rules, seed: int, result: RetrainResult) -> LearnedScorer:
    examples = [example_of(r) for r in fit_rows]
    if rules.tenants:
        weight = key_weights(Counter(key_of(r) for r in fit_rows), rules.key_weight_share)
        examples = [
            dataclasses.replace(e, weight=weight[key_of(r)])
            for e, r in zip(examples, fit_rows, strict=True)
        ]
    result.trained_on = len(fit_rows)
    try:
        doc = train(examples, seed=seed, hashed=True)
        candidate = LearnedScorer(doc, source="<retrain>")
    except (ValueError, WeightsError) as exc:
        log.info("retrain: cannot fit", extra={"error": str(exc)})
        raise _Refused("cannot_fit") from None
    result.doc = doc
    return candidate


def _compare(
    candidate: LearnedScorer,
    current: Scorer,
    hold: list[Record],
    gains: list[float],
    result: RetrainResult,
) -> tuple[list[float], list[float]]:
    """Both routers' scores of the held-back rows; the candidate must rank them as well."""
    cand = [candidate.raw_vector(r.body["v"]) or 0.0 for r in hold]
    cur_or_none = [current_raw(current, r) for r in hold]
    if any(c is None for c in cur_or_none):
        raise _Refused("current_unscorable")  # text-term weights and no kept prompts
    cur = [c or 0.0 for c in cur_or_none]
    result.candidate = gain_apgr(cand, gains)
    result.current = gain_apgr(cur, gains)
    if math.isnan(result.candidate) or math.isnan(result.current):
        raise _Refused("holdout_one_label")
    if result.candidate + 1e-9 < result.current:
        raise _Refused("worse")
    return cand, cur


def _each_key(
    hold: list[Record],
    gains: list[float],
    cand: list[float],
    cur: list[float],
    result: RetrainResult,
) -> None:
    """A mix can hide one tenant's loss behind another's gain: each key's own held-back
    labels (where they hold both kinds) must be ranked at least as well."""
    for key in sorted({key_of(r) for r in hold}):
        idx = [i for i, r in enumerate(hold) if key_of(r) == key]
        g = [gains[i] for i in idx]
        if not 0 < sum(g) < len(g):
            continue
        mine_cand = gain_apgr([cand[i] for i in idx], g)
        mine_cur = gain_apgr([cur[i] for i in idx], g)
        if mine_cand + 1e-9 < mine_cur:
            result.worse_for = key
            raise _Refused("worse_for_a_key")
