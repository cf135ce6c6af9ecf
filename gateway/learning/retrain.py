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
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..routing.complexity import Scorer
from ..routing.live_policy import PolicyStore
from ..routing.policy_file import PolicyError
from ..routing.training import dumps
from .labels import LabelStore
from .metrics import LearningMetrics
from .verdict import RetrainResult, Rules, evaluate

if TYPE_CHECKING:
    from .fleet import FleetLearning

log = logging.getLogger(__name__)

# Refusals about whose labels these are (issue 21), logged as warnings.
_TENANT_REASONS = frozenset({"feedback_only", "one_key", "holdout_few_keys", "worse_for_a_key"})


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
