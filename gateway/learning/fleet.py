"""The learning loop of a fleet: replicas sharing the state Redis (`state.redis_url`).

What one process keeps for itself otherwise is kept once for all here (gateway/state/):
request ids open to feedback and their once-only claim, the feedback rate per key, the
labels, the shadow cap, one trainer at a time and the weights it publishes. A replica that
did not train follows: it polls the published version and loads newer weights the way the
trainer did (the policy's `scorer.weights` file replaced, the policy reloaded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import NotFound
from ..settings import LearningSettings
from ..state.fleet import ShadowCap, TrainerLease
from ..state.state_store import StateStore, StateUnavailable
from .recent import Issued
from .shared_feedback import PENDING, FeedbackRegistry
from .shared_labels import RedisLabelStore

if TYPE_CHECKING:
    from . import Learning

log = logging.getLogger(__name__)


class Follower(Protocol):
    """What follows the fleet's published weights (the retrainer): a protocol, so this module
    need not import the retrainer that imports it."""

    async def load_published(self, fleet: FleetLearning) -> bool: ...


# How long feedback waits for an answer another replica is still writing, and how often it
# looks (a request id the client holds is normally filed well before its feedback arrives).
PENDING_WAIT_S = 10.0
_PENDING_POLL_S = 0.05
# How often a replica looks for weights another replica published.
WEIGHTS_POLL_S = 2.0


class FleetLearning:
    def __init__(self, state: StateStore, conf: LearningSettings) -> None:
        self.state = state
        self.registry = FeedbackRegistry(
            state, window=conf.feedback_window, ttl_s=conf.feedback_ttl_s
        )
        self.shadow_cap = ShadowCap(state, conf.shadow_max_per_hour)
        self.trainer = TrainerLease(state)
        self._writes: dict[tuple[str | None, str], asyncio.Task[None]] = {}
        self._follower: asyncio.Task[None] | None = None
        self.weights_version = 0  # the published version this replica runs

    def labels(
        self, conf: LearningSettings, on_added: Callable[[str, int], None]
    ) -> RedisLabelStore:
        return RedisLabelStore(
            self.state,
            conf.max_labels,
            keep_prompts=conf.keep_prompts,
            per_key=conf.max_labels_per_key,
            on_added=on_added,
        )

    def _write(self, key: tuple[str | None, str], work: Any) -> None:
        before = self._writes.get(key)

        async def run() -> None:
            if before is not None:  # in order: the full record never lands before `pending`
                with contextlib.suppress(Exception):
                    await before
            try:
                await work
            except Exception:
                # The answer is out: its feedback on another replica will be a 404.
                log.error("request not filed for feedback: state redis unavailable")
            finally:
                if self._writes.get(key) is task:
                    del self._writes[key]

        task = asyncio.get_running_loop().create_task(run())
        self._writes[key] = task

    async def pending(self, tenant: str | None, request_id: str) -> None:
        """The id is about to go out: mark it in the state Redis first (one round trip), so
        feedback on another replica finds it and waits for the full record."""
        try:
            await self.registry.pending(tenant, request_id)
        except StateUnavailable:
            # The answer itself needs no shared state: it goes out; its feedback cannot.
            log.error("request not filed for feedback: state redis unavailable")

    def issued(
        self,
        tenant: str | None,
        request_id: str,
        vec: dict[str, Any],
        route: str,
        private: bool,
        prompt: str | None,
    ) -> None:
        issued = Issued.of(vec, route, private, prompt, time.time())
        self._write((tenant, request_id), self.registry.put(tenant, request_id, issued))

    async def feedback(
        self, learning: Learning, tenant: str | None, request_id: str, score: float
    ) -> float:
        """Learning.feedback across the fleet: found on any replica, claimed once (SET NX)."""
        from . import AlreadyLabelled, label_of

        mine = self._writes.get((tenant, request_id))
        if mine is not None:  # answered here and still being filed
            await asyncio.wait([mine], timeout=PENDING_WAIT_S)
        issued = await self.registry.get(tenant, request_id)
        deadline = time.monotonic() + PENDING_WAIT_S
        while issued == PENDING and time.monotonic() < deadline:
            await asyncio.sleep(_PENDING_POLL_S)
            issued = await self.registry.get(tenant, request_id)
        if issued is None or issued == PENDING:
            raise NotFound(
                f"No request '{request_id}' was answered for this API key recently.",
                param="request_id",
                code="request_not_found",
            )
        assert isinstance(issued, Issued)
        if not await self.registry.claim(tenant, request_id):
            raise AlreadyLabelled(
                f"Request '{request_id}' already has feedback.", param="request_id"
            )
        label = label_of(score)
        now = time.time()
        hour = int(now // 3600)
        counted = False
        try:
            n = await self.registry.count(tenant, hour, 1)
            counted = True
            if n > learning.conf.feedback_per_key_per_hour:
                raise learning.feedback_refused(now)
            await learning.store_feedback(tenant, request_id, issued, score)
        except BaseException:
            # Not stored: the claim and the count are given back (it may be scored again).
            with contextlib.suppress(Exception):
                await self.registry.release(tenant, request_id)
                if counted:
                    await self.registry.count(tenant, hour, -1)
            raise
        return label

    def follow(self, retrainer: Follower) -> None:
        if self._follower is None:
            self._follower = asyncio.get_running_loop().create_task(
                self._follow(retrainer), name="follow-weights"
            )

    async def _follow(self, retrainer: Follower) -> None:
        while True:
            try:
                await retrainer.load_published(self)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("published router weights not loaded yet", exc_info=True)
            await asyncio.sleep(WEIGHTS_POLL_S)

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        writes = list(self._writes.values())
        if writes:  # filing the last answers for feedback: briefly
            await asyncio.wait(writes, timeout=2.0)
