"""What chat and embeddings do around the router's decision: features off the loop when the
request is large, and the decision named on any error raised after it was made."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import GatewayError
from ..routing.features import Features
from ..routing.policy import Decision
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
