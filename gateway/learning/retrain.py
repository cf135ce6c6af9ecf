"""Retraining on the box, with a canary: new weights go live only if they rank at least as well.

A fixed share of the store (by row id, so a row stays held back for its whole life) is never
trained on. Every `learning.retrain_every` new labels, the router is fitted on the rest and
both it and the router in force score the held-back rows; APGR over their labels (the share
of the local-to-cloud gap recovered when the highest scores go to the cloud first) decides.
Accepted weights replace the file the policy's `scorer.weights` names (a new file renamed
over it) and the policy is reloaded, as `POST /admin/reload` would: never a restart. Refused
ones are logged with both figures and counted by reason.

Labels come from clients, so one client must not be able to steer the router for the others
(issue 21). `Rules` holds what a retrain then demands:
- client feedback alone never retrains (nor vouches for new weights in the held-back slice)
  unless the operator opts in: `retrain_min_labels` judge labels (shadow, cascade) are needed,
  feedback only joins their fit;
- on a box with two or more API keys (tenants that are not one operator): no key may supply
  more than `retrain_max_key_share` of the labels; each key's labels weigh at most
  `key_weight_share` of the fit; the held-back slice must hold labels of `canary_min_keys`
  keys, and the new weights must rank no key's held-back labels worse than the current ones.
A box without keys, or with one, is one tenant: whoever calls it is its operator, and any
bearer token would do on an open box, so counting "keys" there would measure nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..durable import Record
from ..routing.complexity import ComplexityScorer, Scorer
from ..routing.learned import LearnedScorer, WeightsError
from ..routing.live_policy import PolicyStore
from ..routing.policy_file import PolicyError
from ..routing.training import dumps, gain_apgr, train
from .labels import LabelStore, example_of, key_of, trains_router
from .metrics import LearningMetrics

if TYPE_CHECKING:
    from .fleet import FleetLearning

log = logging.getLogger(__name__)

# Refusals about whose labels these are (issue 21), logged as warnings.
_TENANT_REASONS = frozenset({"feedback_only", "one_key", "holdout_few_keys", "worse_for_a_key"})

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


def evaluate(
    rows: Sequence[Record],
    current: Scorer,
    *,
    share: float,
    min_labels: int,
    seed: int = 0,
    rules: Rules | None = None,
) -> RetrainResult:
    """Fit on the rows not held back and compare with `current` on those held back (CPU)."""
    rules = rules or Rules()
    rows = [r for r in rows if trains_router(r)]
    if len(rows) < min_labels:
        return RetrainResult(False, "too_few_labels")
    by_key = Counter(key_of(r) for r in rows)
    top_key, top_n = by_key.most_common(1)[0]
    who = RetrainResult(False, "", keys=len(by_key), top_key=top_key, top_share=top_n / len(rows))
    judged = [r for r in rows if r.kind != "feedback"]
    if not rules.feedback_alone and len(judged) < min_labels:
        # Clients' own scores are theirs to choose: without the opt-in they never decide a
        # retrain by themselves.
        who.reason = "feedback_only"
        return who
    if rules.tenants and top_n / len(rows) > rules.max_key_share + 1e-12:
        who.reason = "one_key"
        return who
    hold = [r for r in rows if held_out(r.id, share)]
    if not rules.feedback_alone:
        hold = [r for r in hold if r.kind != "feedback"]  # only judges vouch for new weights
    fit_rows = [r for r in rows if not held_out(r.id, share)]
    gains = [float(r.body["label"]) for r in hold]
    who.held_back = len(hold)
    if not hold or not 0 < sum(gains) < len(gains):
        who.reason = "holdout_one_label"
        return who
    if rules.tenants and len({key_of(r) for r in hold}) < rules.canary_min_keys:
        who.reason = "holdout_few_keys"
        return who
    examples = [example_of(r) for r in fit_rows]
    if rules.tenants:
        weight = key_weights(Counter(key_of(r) for r in fit_rows), rules.key_weight_share)
        examples = [
            dataclasses.replace(e, weight=weight[key_of(r)])
            for e, r in zip(examples, fit_rows, strict=True)
        ]
    who.trained_on = len(fit_rows)
    try:
        doc = train(examples, seed=seed, hashed=True)
        candidate = LearnedScorer(doc, source="<retrain>")
    except (ValueError, WeightsError) as exc:
        log.info("retrain: cannot fit", extra={"error": str(exc)})
        who.reason = "cannot_fit"
        return who
    cand = [candidate.raw_vector(r.body["v"]) or 0.0 for r in hold]
    cur_or_none = [current_raw(current, r) for r in hold]
    who.doc = doc
    if any(c is None for c in cur_or_none):
        who.reason = "current_unscorable"  # text-term weights and no kept prompts
        return who
    cur = [c or 0.0 for c in cur_or_none]
    who.candidate = gain_apgr(cand, gains)
    who.current = gain_apgr(cur, gains)
    if math.isnan(who.candidate) or math.isnan(who.current):
        who.reason = "holdout_one_label"
        return who
    if who.candidate + 1e-9 < who.current:
        who.reason = "worse"
        return who
    if rules.tenants:
        # A mix can hide one tenant's loss behind another's gain: each key's own held-back
        # labels (where they hold both kinds) must be ranked at least as well.
        for key in sorted({key_of(r) for r in hold}):
            idx = [i for i, r in enumerate(hold) if key_of(r) == key]
            g = [gains[i] for i in idx]
            if not 0 < sum(g) < len(g):
                continue
            mine_cand = gain_apgr([cand[i] for i in idx], g)
            mine_cur = gain_apgr([cur[i] for i in idx], g)
            if mine_cand + 1e-9 < mine_cur:
                who.reason, who.worse_for = "worse_for_a_key", key
                return who
    who.accepted = True
    who.reason = "better" if who.candidate > who.current + 1e-9 else "as_good"
    return who


class Retrainer:
    def __init__(
        self,
        *,
        every: int,
        min_labels: int,
        share: float,
        store: LabelStore,
        policies: PolicyStore,
        shipped: Scorer,
        metrics: LearningMetrics,
        rules: Rules | None = None,
        fleet: FleetLearning | None = None,
    ) -> None:
        self.rules = rules or Rules()
        self.fleet = fleet  # replicas sharing a state Redis: one trains, all load its weights
        self.every = every
        self.min_labels = min_labels
        self.share = share
        self.store = store
        self.policies = policies
        self.shipped = shipped
        self.metrics = metrics
        self.new_labels = 0
        self.task: asyncio.Task[RetrainResult] | None = None
        self.last: RetrainResult | None = None

    def noted(self) -> None:
        """One more label; starts a retrain every `every` of them (one at a time)."""
        # A fleet counts the labels of every replica since the last retrain (the label store).
        self.new_labels = self.store.since if self.store.since is not None else self.new_labels + 1
        if self.every and self.new_labels >= self.every and self.task is None:
            self.task = asyncio.create_task(self.run_once(), name="retrain-router")
            self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[RetrainResult]) -> None:
        self.task = None
        if not task.cancelled() and task.exception() is not None:
            log.error("retrain failed", exc_info=task.exception())

    async def run_once(self) -> RetrainResult:
        self.new_labels = 0
        if self.fleet is None:
            result = await self._run()
        else:
            async with self.fleet.trainer.lease() as mine:
                if not mine:
                    # Another replica is training on the same labels: it publishes for all.
                    log.info("router retrain skipped: another replica holds the trainer lease")
                    return RetrainResult(False, "another_replica_training")
                await self.store.reset_since()
                result = await self._run(publish=True)
        result.at = time.time()
        self.last = result
        state = "accepted" if result.accepted else "refused"
        self.metrics.retrains.labels(state, result.reason).inc()
        if result.top_share is not None:
            self.metrics.top_key_share.set(result.top_share)
        # A refusal for who supplied the labels is what an operator must see: a warning.
        level = logging.WARNING if result.reason in _TENANT_REASONS else logging.INFO
        log.log(
            level,
            f"router retrain {state}",
            extra={
                "reason": result.reason,
                "apgr_current": result.current,
                "apgr_candidate": result.candidate,
                "trained_on": result.trained_on,
                "held_back": result.held_back,
                "keys": result.keys,
                "top_key": result.top_key,
                "top_key_share": result.top_share,
                "worse_for_key": result.worse_for,
            },
        )
        return result

    async def load_published(self, fleet: FleetLearning) -> bool:
        """Load weights another replica published, if newer than those running here."""
        version = await fleet.trainer.version()
        if version <= fleet.weights_version:
            return False
        policy = self.policies.current
        path = policy.scorer.path if policy.scorer is not None else None
        data = await fleet.trainer.weights(version)
        if path is None or data is None:
            fleet.weights_version = version  # nothing to replace here, or already superseded
            return False
        if await asyncio.to_thread(_read_or_none, path) != data:
            old = await asyncio.to_thread(_swap, path, data)
            try:
                self.policies.reload()
            except PolicyError:
                await asyncio.to_thread(_swap, path, old)
                log.error("published router weights refused by policy reload", extra={"v": version})
        fleet.weights_version = version
        log.info("router weights loaded from the fleet", extra={"weights_version": version})
        return True

    async def _run(self, *, publish: bool = False) -> RetrainResult:
        policy = self.policies.current
        path = policy.scorer.path if policy.scorer is not None else None
        if path is None:
            return RetrainResult(False, "no_weights_file")  # the policy reads no weights to replace
        current: Scorer = (
            policy.scorer.model if policy.scorer is not None else None
        ) or self.shipped
        before = await asyncio.to_thread(_read_or_none, path)
        rows = await self.store.rows()
        result = await asyncio.to_thread(
            evaluate, rows, current, share=self.share, min_labels=self.min_labels, rules=self.rules
        )
        if not result.accepted:
            return result
        assert result.doc is not None
        # The candidate beat the weights in force when it started; if the operator reloaded
        # the policy or replaced the weights file since, it was compared with the wrong ones.
        if (
            self.policies.current is not policy
            or (await asyncio.to_thread(_read_or_none, path)) != before
        ):
            result.accepted, result.reason = False, "policy_changed"
            return result
        data = dumps(result.doc, path)
        old = await asyncio.to_thread(_swap, path, data)
        try:
            self.policies.reload()
        except PolicyError:
            await asyncio.to_thread(_swap, path, old)
            result.accepted, result.reason = False, "reload_failed"
            return result
        if publish and self.fleet is not None:
            # Once, by the lease holder; every other replica loads this version.
            self.fleet.weights_version = await self.fleet.trainer.publish(data)
        return result


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _swap(path: Path, data: bytes) -> bytes:
    """Write `data` to a new file renamed over `path` (never half a file); the old bytes."""
    old = path.read_bytes()
    tmp = path.with_name(f".{path.name}.retrain")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return old
