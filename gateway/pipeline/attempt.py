"""The attempt loop: one request's targets tried in order, for chat and embeddings alike.

The policy's decision lists a target and its fallbacks (`offline.order`). Each is tried in
turn: an open breaker skips a cloud target, a backend that fails before its first byte feeds
its breaker and hands over to the next, a full or unready local model hands over when a later
target can answer, and what the local model refuses is weighed against why it was asked. What
went wrong on the way becomes the answer's degraded reason and failovers; when nothing
answers, the 503 (with `Retry-After` while a breaker is open) or the error that stands.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from ..backends.base import BackendUnavailable
from ..backends.health import Breaker, retry_after
from ..errors import (
    GatewayError,
    InvalidRequest,
    NoRouteAvailable,
    NotReady,
    QueueFull,
    RateLimited,
)
from ..local.entry import ModelUnavailable
from ..routing.policy import LOCAL, Decision
from .outcome import Outcome

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Wording:
    """Where chat and embeddings answer differently once the loop is done (public text)."""

    local: str  # the model a local refusal names
    nothing: str  # the 503 when every target failed
    open_cause: str  # an open breaker without a recorded cause
    # Chat only: a policy forbidding degraded answers says so; a budget-bound request the
    # local model refuses is the budget's 429; a full local queue stands when nothing else
    # answered; a failure before the first byte is logged.
    chat: bool


CHAT = Wording("the local model", "No backend could answer", "breaker open", chat=True)
EMBEDDINGS = Wording(
    "the local embedding model", "No embedding model could answer", "open", chat=False
)


def budget_refusal(why_not_local: str, param: str | None = None) -> RateLimited:
    """The daily cloud budget is spent and the local model cannot answer: a 429 says why."""
    err = RateLimited(
        "The daily cloud budget is spent and the local model cannot "
        f"serve this request ({why_not_local}).",
        code="budget_exceeded",
        retry_after=3600,
    )
    err.param = param
    return err


class Skipped(Exception):
    """What one target's caller raises when that target has no answer to try (a cache
    miss): the attempt notes why and goes on to the next."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class Attempt:
    """The targets one request tries in order, and what went wrong with each.

    The decision is the router's, read and never changed. The attempt owns the breakers:
    which target is skipped, what a failure feeds back, and a cascade's escalation."""

    def __init__(self, decision: Decision, breakers: dict[str, Breaker], wording: Wording) -> None:
        self.decision = decision
        self.breakers = breakers
        self.wording = wording
        # Why the local model cannot answer: what the features showed (chat; an embedding
        # request's local refusals come when its fields are read), then what it refused.
        self.why_not_local = decision.why_not_local if wording.chat else None
        self.local_param: str | None = None  # the field the local model refused, if it named one
        self.targets = [decision.target, *decision.fallbacks]
        self.causes: list[str] = []
        self.failovers: list[tuple[str, str, str]] = []  # (from, to, cause)
        self.last_error: GatewayError | None = None

    async def run(self, one: Callable[[str, int], Awaitable[Outcome | None]]) -> Outcome:
        """The first target's answer that comes (`one` gives None when it cannot), finished."""
        for i, target in enumerate(self.targets):
            if i > 0 and not self.decision.allow_degraded:
                break
            if i > 0 and target == LOCAL and self.why_not_local:
                self.causes.append(f"local cannot serve: {self.why_not_local}")
                continue
            try:
                outcome = await one(target, i)
            except Skipped as skip:
                self.causes.append(skip.cause)
                continue
            if outcome is not None:
                return self.finish(outcome, degraded=i > 0)
        raise self.nothing_left()

    async def escalate(
        self, target: str, answer: Callable[[], Awaitable[T]]
    ) -> tuple[T | None, str | None]:
        """A cascade's second opinion from `target` after an answer was had: (its answer,
        None), or (None, why not) when its breaker is open or it fails (the failure fed to
        the breaker, as any attempt's)."""
        breaker = self.breakers[target]
        if not breaker.allow():
            return None, f"{target} unreachable ({breaker.last_cause or 'breaker open'})"
        try:
            got = await answer()
        except GatewayError as exc:
            cause = exc.cause if isinstance(exc, BackendUnavailable) else str(exc.status)
            if isinstance(exc, BackendUnavailable):
                breaker.failure(exc.cause, unreachable=exc.unreachable)
            log.warning("cascade escalation failed", extra={"target": target, "cause": cause})
            return None, f"{target} failed ({cause})"
        breaker.success()
        return got, None

    def allow(self, target: str, i: int) -> bool:
        """False (the skip noted) when the target's breaker is open."""
        breaker = self.breakers.get(target)
        if breaker is None or breaker.allow():
            return True
        cause = breaker.last_cause or self.wording.open_cause
        self.causes.append(f"{target} unreachable ({cause})")
        self.failovers.append((target, self._next(i), "breaker_open"))
        return False

    async def call(self, target: str, i: int, answer: Awaitable[T]) -> T | None:
        """One target's answer, or None with why it gave none (the error when it stands)."""
        try:
            return await answer
        except BackendUnavailable as exc:
            breaker = self.breakers.get(target)
            if breaker is not None:
                breaker.failure(exc.cause, unreachable=exc.unreachable)
            if self.wording.chat:
                log.warning(
                    "backend failed before first byte",
                    extra={"target": target, "cause": exc.cause},
                )
            self._failed(target, i, exc, exc.cause)
        except QueueFull as exc:
            if not self._later_answers(i):
                raise
            self._failed(target, i, exc, "queue_full", cause="local queue full")
        except (NotReady, ModelUnavailable) as exc:
            # The local model is loading, evicted and not reloadable in time, or will not fit:
            # like a full queue, the next target answers when the policy lists one.
            if not self._later_answers(i):
                raise
            self._failed(target, i, exc, "local_unavailable", cause=f"local: {exc.message}")
        except InvalidRequest as exc:
            if target != LOCAL:
                raise
            # What the local model refuses once it reads the request (a schema its grammar
            # cannot enforce, a field it cannot honour, a prompt past its exact context) is
            # the same kind of reason as those the features know beforehand (images, a long
            # prompt): one rule decides for all of them.
            self.local_refused(i, exc)
        return None

    def succeeded(self, target: str) -> None:
        breaker = self.breakers.get(target)
        if breaker is not None:
            breaker.success()

    def _next(self, i: int) -> str:
        return self.targets[i + 1] if i + 1 < len(self.targets) else "none"

    def _later_answers(self, i: int) -> bool:
        """A target after this one may still answer (the cache or a cloud model)."""
        return any(t != LOCAL for t in self.targets[i + 1 :])

    def _failed(
        self, target: str, i: int, exc: GatewayError, label: str, *, cause: str | None = None
    ) -> None:
        self.causes.append(cause or f"{target} failed ({label})")
        self.failovers.append((target, self._next(i), label))
        if self.wording.chat:
            self.last_error = exc

    def local_refused(self, i: int, exc: InvalidRequest) -> None:
        """The local model refused the request (a 400 of its own): who should hear what.

        The request needed the cloud (its budget spent, or the cloud was tried first and
        could not answer) and cannot get it: that is not the client's mistake, whatever the
        local model could not do, so it gets the same answer as a request the features
        already showed the local model cannot serve. Only where the local model was the
        choice itself (the client's `model`, or the policy's route with the cloud fine) does
        its 400 stand.
        """
        if self.wording.chat and self.decision.budget_bound:
            raise budget_refusal(exc.message, exc.param) from None
        if i == 0:
            raise exc
        self.why_not_local = exc.message
        self.local_param = exc.param
        self.causes.append(f"local cannot serve: {exc.code or 'refused'}")
        self.last_error = exc

    def finish(self, outcome: Outcome, *, degraded: bool, then: str = "") -> Outcome:
        outcome.degraded = degraded
        if outcome.route != "cache" or not outcome.reason:
            outcome.reason = self.decision.reason
        if self.causes:
            outcome.reason += f"; degraded: {'; '.join(self.causes)}"
        outcome.reason += then
        outcome.failovers = self.failovers
        outcome.mark_tier()
        return outcome

    def nothing_left(self) -> GatewayError:
        detail = "; ".join(self.causes) or "no target available"
        err: GatewayError
        if self.wording.chat and not self.decision.allow_degraded:
            err = NoRouteAvailable(
                f"The chosen backend is unavailable and the policy forbids degraded answers: "
                f"{detail}.",
                code="cloud_unavailable",
            )
        elif self.why_not_local:
            err = NoRouteAvailable(
                f"The cloud cannot answer now and {self.wording.local} cannot serve this "
                f"request ({self.why_not_local}): {detail}.",
                param=self.local_param,
                code="local_cannot_serve",
            )
        elif isinstance(self.last_error, QueueFull):
            return self.last_error
        else:
            err = NoRouteAvailable(f"{self.wording.nothing}: {detail}.", code="no_route_available")
        breakers = self.breakers
        err.headers.update(retry_after(breakers[t] for t in self.targets if t in breakers))
        return err
