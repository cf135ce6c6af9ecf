"""The box labels its own traffic and retrains its router (issue 15).

`Learning` is built by create_app only when `learning.enabled`; with it off nothing is
stored, nothing is shadowed and POST /v1/feedback answers 404. The pieces:
- labels.py: the bounded, durable label store (`add` is the way in for every source);
- recent.py: request ids recently issued per tenant, for client feedback;
- shadow.py and judge.py: shadow judging of a share of local answers by a cloud judge;
- retrain.py: periodic retraining with a canary, applied by policy reload.

Labels come from clients, so each API key is bounded (issue 21): its labels in the store
(`learning.max_labels_per_key`), its feedback per hour (`learning.feedback_per_key_per_hour`),
and, on a box with two or more keys, its share and weight in a retrain (verdict.Rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from ..errors import GatewayError, NotFound, RateLimited
from ..limits import MemoryCounters
from ..routing.complexity import Scorer
from ..routing.learned import vector
from ..routing.live_policy import PolicyStore
from ..routing.policy import LOCAL
from ..schemas import AnyRequest, ChatRequest
from .curve import routing_curve
from .labels import LabelStore
from .metrics import LearningMetrics
from .recent import Issued, RecentRequests
from .retrain import Retrainer
from .shadow import Answered, Shadower, ShadowJob
from .verdict import Rules

if TYPE_CHECKING:
    from ..backends.base import Endpoint
    from ..costs import Prices
    from ..dispatch import Dispatcher, Outcome
    from ..settings import Settings
    from ..state.state_store import StateStore
    from .fleet import FleetLearning

log = logging.getLogger(__name__)

# How long feedback waits for the answer it scores to finish (a stream still running).
FEEDBACK_WAIT_S = 10.0
# Keys whose feedback count for the hour is tracked: every key of a keyed box; on an open box
# (any bearer token is its own "key") the oldest are forgotten first.
_QUOTA_KEYS = 4096

__all__ = ["AlreadyLabelled", "LabelStore", "Learning"]


class AlreadyLabelled(GatewayError):
    status = 409
    type = "invalid_request_error"
    default_code = "already_labelled"


def label_of(score: float) -> float:
    """A client's score (-1 bad .. 1 good) as a label (1: the cloud should have answered)."""
    return round((1.0 - score) / 2.0, 6)


def asked_text(req: AnyRequest) -> str:
    """What the router scores: the user turns of a chat (as FeatureExtractor does)."""
    if isinstance(req, ChatRequest):
        return "\n".join(m.text() for m in req.messages if m.role == "user") or req.prompt_text()
    return req.prompt_text()


class Learning:
    def __init__(
        self,
        settings: Settings,
        *,
        dispatcher: Dispatcher,
        policies: PolicyStore,
        registry: CollectorRegistry,
        prices: Prices,
        shipped: Scorer,
        keys: int = 0,
        clock: Callable[[], float] = time.time,
        state: StateStore | None = None,
    ) -> None:
        conf = self.conf = settings.learning
        self.policies = policies
        self.metrics = LearningMetrics(registry)
        # With a state Redis (state.redis_url) replicas share labels, feedback ids, the shadow
        # cap and one trainer (gateway/state/); without it this process keeps its own.
        self.fleet: FleetLearning | None = None
        if state is not None:
            from .fleet import FleetLearning  # gateway/state imports learning: not at the top

            self.fleet = FleetLearning(state, conf)
        self.store: LabelStore = (
            self.fleet.labels(conf, self._added)
            if self.fleet is not None
            else LabelStore(
                conf.store,
                conf.max_labels,
                keep_prompts=conf.keep_prompts,
                per_key=conf.max_labels_per_key,
                on_added=self._added,
            )
        )
        self._clock = clock
        self._feedback_counts = MemoryCounters(max_keys=_QUOTA_KEYS, clock=clock)
        self.metrics.stored.set_function(lambda: len(self.store))
        self.recent = RecentRequests(conf.feedback_window, conf.feedback_ttl_s)
        self._curve: tuple[tuple[int, int, int], dict[str, Any]] | None = None
        # Requests answered but not yet finished, by (tenant, request id): a few, briefly.
        self._pending: dict[tuple[str | None, str], asyncio.Task[Any]] = {}
        self.shadow = Shadower(
            settings,
            dispatcher=dispatcher,
            store=self.store,
            metrics=self.metrics,
            prices=prices,
            fleet_cap=self.fleet.shadow_cap if self.fleet is not None else None,
        )
        self.retrainer = Retrainer(
            every=conf.retrain_every,
            min_labels=conf.retrain_min_labels,
            share=conf.canary_share,
            store=self.store,
            policies=policies,
            shipped=shipped,
            metrics=self.metrics,
            rules=Rules(
                feedback_alone=conf.retrain_on_feedback,
                tenants=keys >= 2,
                max_key_share=conf.retrain_max_key_share,
                key_weight_share=conf.key_weight_share,
                canary_min_keys=conf.canary_min_keys,
            ),
            fleet=self.fleet,
        )

    def _added(self, source: str, dropped: int) -> None:
        self.metrics.labels.labels(source).inc()
        if dropped:
            self.metrics.dropped.inc(dropped)
        self.retrainer.noted()

    def private(self, outcome: Outcome) -> bool:
        """Private data, or answered by a privacy rule: such a request never leaves the box.

        A privacy rule is one that routes local and is enforced, or matches on private data
        or on the tenant.
        """
        if outcome.features.pii:
            return True
        rule = next(
            (r for r in self.policies.current.rules if r.name == outcome.decision.rule), None
        )
        if rule is None or rule.route != LOCAL:
            return False
        w = rule.when
        return rule.enforce or bool(w.pii) or w.tenant is not None

    async def answered(
        self,
        request_id: str,
        req: AnyRequest,
        endpoint: Endpoint,
        outcome: Outcome,
        record: Answered,
        answered: asyncio.Task[Any] | None,
    ) -> None:
        """A request got its answer (or is about to): remember it for feedback, maybe shadow it.

        Called from the handler once the outcome is known. The feature vector (up to 0.3 ms
        for a long prompt) is computed once `answered`, the request's task, has finished, so
        it never adds to the request's latency; the shadow job waits for the same before it
        sends anything anywhere.
        """
        tenant = outcome.features.tenant
        private = self.private(outcome)
        asked = asked_text(req)
        prompt = asked if self.conf.keep_prompts and not private else None

        key = (tenant, request_id)

        def remember(task: asyncio.Task[Any] | None = None) -> None:
            if self._pending.get(key) is task:
                del self._pending[key]
            if task is not None and task.cancelled():
                return  # the client went away: it has no answer to score
            if self.fleet is not None:
                self.fleet.issued(tenant, request_id, vector(asked), outcome.route, private, prompt)
                return
            self.recent.put(
                tenant,
                request_id,
                vector(asked),
                route=outcome.route,
                private=private,
                prompt=prompt,
            )

        if answered is None:
            remember()
        else:
            if self.fleet is not None:
                # Filed before the client has the id: its feedback may reach any replica next.
                await self.fleet.pending(tenant, request_id)
            self._pending[key] = answered  # feedback racing the end of the answer waits
            answered.add_done_callback(remember)
        c = outcome.cascade
        if c is not None and c.escalated and c.local_text and outcome.completion is not None:
            # An escalation holds both answers: one judge call turns it into a label.
            if private:  # the cascade never escalates private prompts; belt and braces
                return
            why = self.shadow.escalated(
                ShadowJob(
                    request_id, req, endpoint, outcome, record, asked, tenant, prompt, answered
                ),
                c.local_text,
                outcome.completion.obj,
            )
            if why is not None:
                self.metrics.skipped.labels(why).inc()
            return
        if outcome.route != LOCAL or not self.shadow.sampled():
            return
        why = self.shadow.why_not(req, outcome, private)
        if why is not None:
            self.metrics.skipped.labels(why).inc()
            return
        if req.stream and record.answer_parts is None:
            record.answer_parts = []  # collect the streamed text for the judge
        self.shadow.start(
            ShadowJob(request_id, req, endpoint, outcome, record, asked, tenant, prompt, answered)
        )

    async def feedback(self, tenant: str | None, request_id: str, score: float) -> float:
        """Store the client's score (-1 bad .. 1 good) of its own request; the label stored."""
        pending = self._pending.get((tenant, request_id))
        if pending is not None:
            # The id is out but the answer is still being written (or its last bytes just
            # left): feedback is about a whole answer, so wait for it, boundedly.
            await asyncio.wait([pending], timeout=FEEDBACK_WAIT_S)
            await asyncio.sleep(0)  # let the done callback file it
        if self.fleet is not None:
            return await self.fleet.feedback(self, tenant, request_id, score)
        issued = self.recent.get(tenant, request_id)
        if issued is None:
            raise NotFound(
                f"No request '{request_id}' was answered for this API key recently.",
                param="request_id",
                code="request_not_found",
            )
        if issued.labelled:
            raise AlreadyLabelled(
                f"Request '{request_id}' already has feedback.", param="request_id"
            )
        issued.labelled = True  # before the await: a concurrent duplicate gets the 409
        label = label_of(score)
        # Counted before the store is written (and given back if it is not), so concurrent
        # scores of one key cannot all slip under the cap.
        now = self._clock()
        hour = f"{tenant or ''}:{int(now // 3600)}"
        if await self._feedback_counts.add(hour, 1, 3600) > self.conf.feedback_per_key_per_hour:
            await self._feedback_counts.add(hour, -1, 3600)
            issued.labelled = False  # it may be scored next hour
            raise self.feedback_refused(now)
        try:
            await self.store_feedback(tenant, request_id, issued, score)
        except BaseException:
            issued.labelled = False
            await self._feedback_counts.add(hour, -1, 3600)
            raise
        return label

    async def store_feedback(
        self, tenant: str | None, request_id: str, issued: Issued, score: float
    ) -> None:
        await self.store.add(
            "feedback",
            label=label_of(score),
            tenant=tenant,
            route=issued.route,
            vec=issued.vec(),
            prompt=issued.prompt,
            private=issued.private,
            request_id=request_id,
            detail={"score": score},
        )

    def feedback_refused(self, now: float) -> RateLimited:
        self.metrics.feedback_refused.inc()
        limit = self.conf.feedback_per_key_per_hour
        return RateLimited(
            f"This API key has sent {limit} feedback scores this hour "
            "(learning.feedback_per_key_per_hour); try again later.",
            retry_after=3600 - now % 3600,
            code="feedback_rate_limited",
        )

    def start(self) -> None:
        """On the running loop: a fleet replica starts following the published weights."""
        if self.fleet is not None:
            self.fleet.follow(self.retrainer)

    async def curve(self) -> dict[str, Any]:
        """The routing curve over the stored labels (learning/curve.py), for the status page.

        Recomputed only when the store or the policy changed since the last time: the page
        polls it, and scoring every stored row is real work (off the event loop).
        """
        policy = self.policies.current
        key = (len(self.store), self.store.dropped, id(policy))
        if self._curve is not None and self._curve[0] == key:
            return self._curve[1]
        scorer: Scorer = (
            policy.scorer.model if policy.scorer is not None else None
        ) or self.retrainer.shipped
        rows = await self.store.rows() if len(self.store) else []
        result = await asyncio.to_thread(
            routing_curve,
            rows,
            scorer,
            threshold=policy.cloud_threshold(),
            min_labels=self.conf.curve_min_labels,
        )
        result["scorer"] = "learned" if policy.scorer is not None else "shipped"
        self._curve = (key, result)
        return result

    async def close(self) -> None:
        if self.fleet is not None:
            await self.fleet.close()
        await self.shadow.close()
        task = self.retrainer.task
        if task is not None:
            task.cancel()
            # Waited for: a retrain cut inside its file swap must not outlive the store.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.store.close()
