"""Shadow judging: a share of local answers is also asked of the cloud and judged, later.

After the client has its answer (the job waits for the request's own task to finish, which
in aiohttp is after the last byte is written), off the request path, with bounded
concurrency: the same request goes to the cloud, then the judge model compares the two
answers (judge.py) and the verdict becomes a `shadow` label. Never for a private request;
never while the cloud is unreachable or refusing us (429), and never above the hourly cap.
Every cloud token spent is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..backends.base import BackendUnavailable, Endpoint
from ..errors import GatewayError
from ..routing.learned import vector
from ..schemas import AnyRequest, ChatRequest
from . import judge
from .labels import LabelStore, Source
from .metrics import LearningMetrics

if TYPE_CHECKING:
    from ..costs import Prices
    from ..dispatch import Dispatcher, Outcome
    from ..settings import LearningSettings, Settings
    from ..state.fleet import ShadowCap

log = logging.getLogger(__name__)

HOUR_S = 3600.0


class Answered(Protocol):
    """What a job reads of the request's record (http/observe.py's RequestRecord)."""

    stream_error: str | None
    answer_parts: list[str] | None


@dataclass
class ShadowJob:
    request_id: str
    req: AnyRequest
    endpoint: Endpoint
    outcome: Outcome
    record: Answered
    asked: str  # what the router scores (the user turns); turned into its vector here
    tenant: str | None
    prompt: str | None
    answered: asyncio.Task[Any] | None  # the request's task: done once the client has it all

    def local_text(self) -> str | None:
        """The local answer as the client got it; None if it did not get all of it."""
        if self.record.stream_error is not None:
            return None
        if self.outcome.completion is not None:
            return _text(self.outcome.completion.obj)
        if self.record.answer_parts is None:
            return None
        return "".join(self.record.answer_parts)


def _text(obj: dict[str, Any]) -> str:
    choices = obj.get("choices") or [{}]
    c = choices[0]
    msg = c.get("message") or {}
    return str(msg.get("content") or c.get("text") or "")


class Shadower:
    def __init__(
        self,
        settings: Settings,
        *,
        dispatcher: Dispatcher,
        store: LabelStore,
        metrics: LearningMetrics,
        prices: Prices,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        coin: Callable[[], bool] = judge.local_first,
        fleet_cap: ShadowCap | None = None,
    ) -> None:
        self.conf: LearningSettings = settings.learning
        self.dispatcher = dispatcher
        self.store = store
        self.metrics = metrics
        self.prices = prices
        self._clock = clock
        self._rng = rng
        self._coin = coin  # where the local answer sits for the judge; tests fix it
        self.cloud = dispatcher.router.resolve("cloud")  # the policy's `cloud`: first model
        self.judge = self.conf.judge_model or self.cloud
        self._litellm = {m.name: m.model for m in settings.cloud.models}
        self._started: deque[float] = deque()  # start times within the last hour
        # Replicas sharing a state Redis share the hourly cap: a slot is taken there, atomically,
        # as each judgement starts (the local deque then stays unused).
        self.fleet_cap = fleet_cap
        self.paused_until = 0.0
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> bool:
        return self.conf.shadow_rate > 0 and self.cloud is not None

    def sampled(self) -> bool:
        return self.active and self._rng() < self.conf.shadow_rate

    def why_not(self, req: AnyRequest, outcome: Outcome, private: bool) -> str | None:
        """Why this sampled local answer is not shadowed, or None when it is."""
        if private:
            return "private"  # first, always: private data never leaves the box for learning
        if req.model != "auto":
            return "not_auto"  # the client asked for a model; it did not ask for the cloud
        if outcome.features.needs:
            return "needs"  # tools, JSON schemas, n > 1, logprobs: not a text comparison
        if outcome.degraded:
            return "offline"  # answered locally because the cloud could not
        return self._no_room({self.cloud, self.judge})

    def _no_room(self, targets: set[str | None]) -> str | None:
        """Pause, uplink, hourly cap and concurrency: why no judgement may start now, or None."""
        now = self._clock()
        if now < self.paused_until:
            return "rate_limited"
        self.metrics.paused.set(0)
        breakers = self.dispatcher.breakers
        if not all(breakers[n].reachable for n in targets if n in breakers):
            return "offline"
        while self._started and self._started[0] <= now - HOUR_S:
            self._started.popleft()
        if self.fleet_cap is None and len(self._started) >= self.conf.shadow_max_per_hour:
            return "hourly_cap"
        if len(self.tasks) >= self.conf.shadow_concurrency:
            return "busy"
        return None

    def start(self, job: ShadowJob) -> None:
        self._launch(self._run(job), f"shadow-{job.request_id}")

    def _launch(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._started.append(self._clock())  # counts toward the hourly cap
        task = asyncio.create_task(work, name=name)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _pause(self, why: str) -> None:
        self.paused_until = self._clock() + self.conf.pause_s
        self.metrics.paused.set(1)
        log.warning("shadow judging paused", extra={"cause": why, "pause_s": self.conf.pause_s})

    def _spent(self, call: str, target: str, obj: dict[str, Any]) -> None:
        u = obj.get("usage") or {}
        p, c = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
        self.metrics.cloud_tokens.labels(call, "prompt").inc(p)
        self.metrics.cloud_tokens.labels(call, "completion").inc(c)
        self.metrics.cloud_spend.inc(self.prices.cost(self._litellm.get(target), p, c))

    def escalated(self, job: ShadowJob, local: str, cloud_obj: dict[str, Any]) -> str | None:
        """A cascade escalation already has both answers: only the judge is asked, off the
        request path, within the same hourly cap, pause and concurrency as shadowing.
        Returns why it is not judged, or None when it is."""
        if self.judge is None:
            return "no_judge"
        why = self._no_room({self.judge})
        if why is None:
            self._launch(
                self._run(job, source="cascade", local=local, cloud_obj=cloud_obj),
                f"cascade-judge-{job.request_id}",
            )
        return why

    async def _run(
        self,
        job: ShadowJob,
        *,
        source: Source = "shadow",
        local: str | None = None,
        cloud_obj: dict[str, Any] | None = None,
    ) -> None:
        try:
            if self.fleet_cap is not None and not await self.fleet_cap.take():
                self.metrics.skipped.labels("hourly_cap").inc()  # the fleet's hour is spent
                return
            if job.answered is not None:
                await asyncio.wait([job.answered])
            if local is None:
                local = job.local_text()
            if not local or not local.strip():
                self.metrics.shadow.labels("no_answer").inc()
                return
            assert self.judge is not None
            if cloud_obj is None:  # shadowing: the cloud's answer to the same request first
                assert self.cloud is not None
                cloud_obj = (
                    await self.dispatcher.clouds[self.cloud].complete(job.req, job.endpoint)
                ).obj
                self._spent("answer", self.cloud, cloud_obj)
            pair = judge.pair(job.req, local, _text(cloud_obj), local_is_a=self._coin())
            judge_req = ChatRequest.model_validate(
                {
                    "model": self.judge,
                    "messages": pair.messages,
                    "temperature": 0.0,
                    "max_tokens": self.conf.judge_max_tokens,
                }
            )
            judged = (await self.dispatcher.clouds[self.judge].complete(judge_req, "chat")).obj
            self._spent("judge", self.judge, judged)
            verdict = judge.verdict(_text(judged))
            if verdict is None:
                self.metrics.shadow.labels("unparsable").inc()
                log.info("judge verdict unparsable: no label", extra={"request_id": job.request_id})
                return
            await self.store.add(
                source,
                label=judge.label_of(verdict, pair.local_is_a),
                tenant=job.tenant,
                route="local",
                vec=vector(job.asked),
                prompt=job.prompt,
                request_id=job.request_id,
                detail={"verdict": verdict, "local_is_a": pair.local_is_a},
            )
            self.metrics.shadow.labels("labelled").inc()
        except BackendUnavailable as exc:
            self.metrics.shadow.labels("failed").inc()
            if exc.cause == "429" or exc.unreachable:
                self._pause(exc.cause)
            else:
                log.warning("shadow call failed", extra={"cause": exc.cause})
        except GatewayError as exc:
            self.metrics.shadow.labels("failed").inc()
            log.warning("shadow call refused", extra={"code": exc.code})
        except asyncio.CancelledError:
            raise
        except Exception:
            self.metrics.shadow.labels("failed").inc()
            log.exception("shadow judging failed", extra={"request_id": job.request_id})

    async def close(self) -> None:
        """Shutdown: cancel running judgements (their labels are optional) and wait for them."""
        tasks = list(self.tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
