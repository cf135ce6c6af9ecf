"""The attempt loop on its own, no sockets: targets are in-process stand-ins (as httpx tests
its client through a MockTransport), so each rule of the loop is one small test. The real
backends and the dispatcher around it are tested end to end elsewhere."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.backends.base import BackendUnavailable
from gateway.backends.health import Breaker
from gateway.errors import InvalidRequest, NoRouteAvailable, QueueFull, RateLimited
from gateway.pipeline.attempt import CHAT, EMBEDDINGS, Attempt, Skipped
from gateway.pipeline.outcome import Outcome
from gateway.routing.policy import Decision

FEATURES: Any = None  # the loop never reads the features


def decision(target: str, *fallbacks: str, **kw: Any) -> Decision:
    base: dict[str, Any] = {
        "target": target,
        "rule": "r",
        "reason": "rule=r",
        "fallbacks": fallbacks,
        "allow_degraded": True,
        "cache_mode": "deterministic",
    }
    return Decision(**{**base, **kw})


def breakers(*names: str) -> dict[str, Breaker]:
    return {n: Breaker(n, failures=2, retry_after_s=30) for n in names}


def answers(d: Decision, **by_target: Any) -> Callable[[str, int], Awaitable[Outcome | None]]:
    """A stand-in for the dispatcher's `one`: each target answers, raises, or is skipped as
    told (an exception instance is raised; "skip" is a cache miss)."""

    async def one(target: str, i: int) -> Outcome | None:
        what = by_target.get(target, "answer")
        if what == "skip":
            raise Skipped("no cached answer")
        if isinstance(what, BaseException):
            raise what
        return Outcome("cloud" if target != "local" else "local", target, d, FEATURES)

    return one


async def run(attempt: Attempt, **by_target: Any) -> Outcome:
    async def one(target: str, i: int) -> Outcome | None:
        # The loop's own rule: a failure before the first byte goes through `call`.
        return await attempt.call(target, i, answers(attempt.decision, **by_target)(target, i))

    async def guarded(target: str, i: int) -> Outcome | None:
        if target in attempt.breakers and not attempt.allow(target, i):
            return None
        return await one(target, i)

    return await attempt.run(guarded)


def down(cause: str = "timeout") -> BackendUnavailable:
    return BackendUnavailable("down", cause=cause, unreachable=True)


async def test_the_first_target_answers_undegraded() -> None:
    d = decision("gpt", "cache", "local")
    out = await run(Attempt(d, breakers("gpt"), CHAT))
    assert (out.target, out.degraded, out.failovers) == ("gpt", False, [])
    assert out.decision is d and out.reason == "rule=r"


async def test_a_failure_before_the_first_byte_fails_over_and_feeds_the_breaker() -> None:
    b = breakers("gpt")
    out = await run(Attempt(decision("gpt", "cache", "local"), b, CHAT), gpt=down(), cache="skip")
    assert (out.target, out.degraded) == ("local", True)
    assert out.failovers == [("gpt", "cache", "timeout")]
    assert "no cached answer" in out.reason and "gpt failed (timeout)" in out.reason
    assert not b["gpt"].reachable  # unreachable: open at once


async def test_an_open_breaker_skips_its_target_without_calling_it() -> None:
    b = breakers("gpt")
    b["gpt"].failure("timeout", unreachable=True)
    out = await run(Attempt(decision("gpt", "local"), b, CHAT), gpt=AssertionError("called"))
    assert out.target == "local"
    assert out.failovers == [("gpt", "local", "breaker_open")]


async def test_no_degraded_answers_when_the_policy_forbids_them() -> None:
    d = decision("gpt", "local", allow_degraded=False)
    with pytest.raises(NoRouteAvailable) as err:
        await run(Attempt(d, breakers("gpt"), CHAT), gpt=down())
    assert err.value.code == "cloud_unavailable"


async def test_the_local_model_is_skipped_when_the_decision_says_it_cannot_serve() -> None:
    d = decision("gpt", "local", why_not_local="needs images")
    with pytest.raises(NoRouteAvailable) as err:
        await run(Attempt(d, breakers("gpt"), CHAT), gpt=down(), local=AssertionError("called"))
    assert err.value.code == "local_cannot_serve" and "needs images" in err.value.message


async def test_a_full_local_queue_stands_when_nothing_after_it_answers() -> None:
    with pytest.raises(QueueFull):
        await run(Attempt(decision("local"), {}, CHAT), local=QueueFull("full"))
    out = await run(Attempt(decision("local", "gpt"), breakers("gpt"), CHAT), local=QueueFull("x"))
    assert out.target == "gpt" and out.failovers == [("local", "gpt", "queue_full")]


async def test_a_local_refusal_stands_unless_the_budget_bound_the_request_to_local() -> None:
    refusal = InvalidRequest("no", param="response_format", code="unsupported_schema")
    with pytest.raises(InvalidRequest):
        await run(Attempt(decision("local"), {}, CHAT), local=refusal)
    with pytest.raises(RateLimited) as err:
        await run(Attempt(decision("local", budget_bound=True), {}, CHAT), local=refusal)
    assert err.value.code == "budget_exceeded" and err.value.param == "response_format"


async def test_embeddings_word_their_503_as_embeddings() -> None:
    with pytest.raises(NoRouteAvailable) as err:
        await run(
            Attempt(decision("e1", "e2"), breakers("e1", "e2"), EMBEDDINGS), e1=down(), e2=down()
        )
    assert err.value.code == "no_route_available"
    assert err.value.message.startswith("No embedding model could answer")


async def test_escalation_owns_its_breaker() -> None:
    b = breakers("gpt")
    attempt = Attempt(decision("local"), b, CHAT)

    async def fails() -> str:
        raise down("5xx")

    got, why = await attempt.escalate("gpt", fails)
    assert got is None and why == "gpt failed (5xx)" and not b["gpt"].reachable
    got, why = await attempt.escalate("gpt", fails)  # open now: not called
    assert got is None and why is not None and "unreachable" in why

    async def answers_() -> str:
        return "cloud answer"

    b["gpt"].success()
    assert await attempt.escalate("gpt", answers_) == ("cloud answer", None)
