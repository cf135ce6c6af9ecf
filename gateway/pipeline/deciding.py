"""What chat and embeddings do around the router's decision, one skeleton for both: features
(off the loop when the request is large) -> `Router.decide` -> the answer, with the decision
heard first (the request log) and named on any error raised after it was made."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import GatewayError, ModelNotFound
from ..routing.features import Features
from ..routing.policy import Decision, Router, UnknownModel
from ..routing.policy_models import Policy
from ..routing.privacy import TooLarge

T = TypeVar("T")

# Past this many characters of text, feature extraction (tiktoken, scans) leaves the loop.
OFF_LOOP_CHARS = 32_768


async def features_of(
    extract: Callable[..., Features], req: Any, tenant: str | None, *, size: int
) -> Features:
    """`extract(req, tenant)`, on the loop for a small request, else in a thread.

    The privacy scan reads every field; many or long ones besides the text (tool schemas,
    metadata) raise TooLarge past the scan budget and send the extraction off the loop too.
    """
    if size <= OFF_LOOP_CHARS:
        with contextlib.suppress(TooLarge):
            return extract(req, tenant, scan_budget=OFF_LOOP_CHARS)
    # Linear, but tens of milliseconds on a long prompt: not on the event loop.
    return await asyncio.to_thread(extract, req, tenant)


async def naming(decision: Decision, answer: Awaitable[T]) -> T:
    """The answer; an error raised on the way says which decision it followed, as a
    success's headers would."""
    try:
        return await answer
    except GatewayError as exc:
        exc.headers.setdefault("x-gateway-route", decision.route)
        exc.headers.setdefault("x-gateway-reason", decision.reason)
        raise


async def decide(
    router: Router,
    policy: Policy,
    extract: Callable[..., Features],
    req: Any,
    tenant: str | None,
    *,
    size: int,
    not_found: str,
    stream: bool = False,
    budget_spent: bool = False,
) -> tuple[Features, Decision]:
    """The request's features under `policy` (the one read of it for this request: its scorer
    and detector for the features, its rules for the decision) and the router's decision; a
    model nothing serves is the 404 `not_found` words (`{model}`: the name asked for)."""
    f = await features_of(functools.partial(extract, policy=policy), req, tenant, size=size)
    try:
        return f, router.decide(policy, f, stream=stream, budget_spent=budget_spent)
    except UnknownModel:
        raise ModelNotFound(not_found.format(model=req.model), param="model") from None


async def answer(
    decided: tuple[Features, Decision],
    on_decision: Callable[[Features, Decision], None] | None,
    handle: Callable[[Features, Decision], Awaitable[T]],
) -> T:
    """`handle`'s answer to the decision; `on_decision` hears it first (the request log keeps
    it for a request that fails after it was routed, as the error's headers do)."""
    f, decision = decided
    if on_decision is not None:
        on_decision(f, decision)
    return await naming(decision, handle(f, decision))
