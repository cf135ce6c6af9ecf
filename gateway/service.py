"""The dispatcher: turns a parsed request into an answer from the right backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .backends.base import Chunk, Completion, Endpoint
from .backends.local import LocalBackend
from .errors import ModelNotFound
from .schemas import AnyRequest

LOCAL_ALIASES = ("auto", "local")


@dataclass
class Outcome:
    """Where an answer came from and the answer itself (whole, or a stream)."""

    route: str
    reason: str
    completion: Completion | None = None
    chunks: AsyncIterator[Chunk] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def headers(self) -> dict[str, str]:
        return {"x-gateway-route": self.route, "x-gateway-reason": self.reason, **self.extra}


async def _prepend(first: Chunk, rest: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


class Dispatcher:
    def __init__(self, *, local: LocalBackend) -> None:
        self.local = local

    def model_ids(self) -> list[tuple[str, str]]:
        return [
            ("auto", "edge-gateway"),
            ("local", "edge-gateway"),
            (self.local.model_name, "edge-gateway"),
        ]

    async def handle(self, req: AnyRequest, endpoint: Endpoint, request: web.Request) -> Outcome:
        if req.model not in (*LOCAL_ALIASES, self.local.model_name):
            raise ModelNotFound(
                f"The model '{req.model}' does not exist or you do not have access to it.",
                param="model",
            )
        reason = "model=local" if req.model != "auto" else "default"
        if not req.stream:
            return Outcome("local", reason, completion=await self.local.complete(req, endpoint))
        chunks = self.local.stream(req, endpoint)
        # Pull the first chunk before any byte is sent, so errors still get a real status.
        first = await anext(chunks)
        return Outcome("local", reason, chunks=_prepend(first, chunks))

    def extra(self) -> dict[str, Any]:
        return {}
