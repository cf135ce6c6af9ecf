"""Retraining on the box, with a canary: new weights go live only if they rank at least as well.

A fixed share of the store (by row id, so a row stays held back for its whole life) is never
trained on. Every `learning.retrain_every` new labels, the router is fitted on the rest and
both it and the router in force score the held-back rows; APGR over their labels (the share
of the local-to-cloud gap recovered when the highest scores go to the cloud first) decides.
Accepted weights replace the file the policy's `scorer.weights` names (a new file renamed
over it) and the policy is reloaded, as `POST /admin/reload` would: never a restart. Refused
ones are logged with both figures and counted by reason.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..durable import Record
from ..routing.complexity import ComplexityScorer, Scorer
from ..routing.learned import LearnedScorer, WeightsError
from ..routing.policy import PolicyError
from ..routing.store import PolicyStore
from ..routing.train import dumps, gain_apgr, train
from .metrics import LearningMetrics
from .store import LabelStore, example_of, trains_router

log = logging.getLogger(__name__)

_GOLDEN = 2654435761  # Knuth's multiplicative hash: ids spread evenly over [0, 2^32)


def held_out(row_id: int, share: float) -> bool:
    return (row_id * _GOLDEN % 2**32) / 2**32 < share


@dataclass
class Outcome:
    accepted: bool
    reason: str  # "better", "as_good" when accepted; why not otherwise
    current: float | None = None  # APGR of the router in force on the held-back rows
    candidate: float | None = None
    trained_on: int = 0
    held_back: int = 0
    doc: dict[str, Any] | None = None


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
    rows: Sequence[Record], current: Scorer, *, share: float, min_labels: int, seed: int = 0
) -> Outcome:
    """Fit on the rows not held back and compare with `current` on those held back (CPU)."""
    rows = [r for r in rows if trains_router(r)]
    if len(rows) < min_labels:
        return Outcome(False, "too_few_labels")
    hold = [r for r in rows if held_out(r.id, share)]
    fit_rows = [r for r in rows if not held_out(r.id, share)]
    gains = [float(r.body["label"]) for r in hold]
    if not hold or not 0 < sum(gains) < len(gains):
        return Outcome(False, "holdout_one_label", held_back=len(hold))
    try:
        doc = train([example_of(r) for r in fit_rows], seed=seed, hashed=True)
        candidate = LearnedScorer(doc, source="<retrain>")
    except (ValueError, WeightsError) as exc:
        log.info("retrain: cannot fit", extra={"error": str(exc)})
        return Outcome(False, "cannot_fit", trained_on=len(fit_rows), held_back=len(hold))
    cand = [candidate.raw_vector(r.body["v"]) for r in hold]
    cur = [current_raw(current, r) for r in hold]
    base = Outcome(False, "", trained_on=len(fit_rows), held_back=len(hold), doc=doc)
    if any(c is None for c in cur):
        base.reason = "current_unscorable"  # text-term weights and no kept prompts
        return base
    base.candidate = gain_apgr([c or 0.0 for c in cand], gains)
    base.current = gain_apgr([c or 0.0 for c in cur], gains)
    if math.isnan(base.candidate) or math.isnan(base.current):
        base.reason = "holdout_one_label"
        return base
    if base.candidate + 1e-9 < base.current:
        base.reason = "worse"
        return base
    base.accepted = True
    base.reason = "better" if base.candidate > base.current + 1e-9 else "as_good"
    return base


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
    ) -> None:
        self.every = every
        self.min_labels = min_labels
        self.share = share
        self.store = store
        self.policies = policies
        self.shipped = shipped
        self.metrics = metrics
        self.new_labels = 0
        self.task: asyncio.Task[Outcome] | None = None
        self.last: Outcome | None = None

    def noted(self) -> None:
        """One more label; starts a retrain every `every` of them (one at a time)."""
        self.new_labels += 1
        if self.every and self.new_labels >= self.every and self.task is None:
            self.task = asyncio.create_task(self.run_once(), name="retrain-router")
            self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Outcome]) -> None:
        self.task = None
        if not task.cancelled() and task.exception() is not None:
            log.error("retrain failed", exc_info=task.exception())

    async def run_once(self) -> Outcome:
        self.new_labels = 0
        result = await self._run()
        self.last = result
        state = "accepted" if result.accepted else "refused"
        self.metrics.retrains.labels(state, result.reason).inc()
        log.info(
            f"router retrain {state}",
            extra={
                "reason": result.reason,
                "apgr_current": result.current,
                "apgr_candidate": result.candidate,
                "trained_on": result.trained_on,
                "held_back": result.held_back,
            },
        )
        return result

    async def _run(self) -> Outcome:
        policy = self.policies.current
        path = policy.scorer.path if policy.scorer is not None else None
        if path is None:
            return Outcome(False, "no_weights_file")  # the policy reads no weights to replace
        current: Scorer = getattr(policy.scorer, "_model", None) or self.shipped
        before = await asyncio.to_thread(_read_or_none, path)
        rows = await self.store.rows()
        result = await asyncio.to_thread(
            evaluate, rows, current, share=self.share, min_labels=self.min_labels
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
        old = await asyncio.to_thread(_swap, path, dumps(result.doc, path))
        try:
            self.policies.reload()
        except PolicyError:
            await asyncio.to_thread(_swap, path, old)
            result.accepted, result.reason = False, "reload_failed"
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
