"""The long-lived objects one gateway instance owns, built once by create_app."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .costs import Prices
from .dispatch import Dispatcher
from .http.keyring import KeyRing
from .limits import Limiter
from .metrics import Metrics
from .models.fleet import Fleet
from .routing.live_policy import PolicyStore
from .settings import Settings
from .status import StatusBoard

if TYPE_CHECKING:
    from .dispatch import Outcome
    from .embeddings.service import EmbeddingService
    from .learning import Learning
    from .telemetry import Outbox


@dataclass
class Services:
    settings: Settings
    local: Fleet
    dispatcher: Dispatcher
    policies: PolicyStore
    metrics: Metrics
    prices: Prices
    keyring: KeyRing
    limiter: Limiter
    status: StatusBoard = field(default_factory=StatusBoard)  # what the status page shows
    embeddings: EmbeddingService | None = None  # POST /v1/embeddings
    started_at: float = field(default_factory=time.time)
    # Shutdown: `draining` makes /readyz say 503 while in-flight requests finish; `stopping`
    # means the grace ran out and the requests still running are being cut.
    draining: bool = False
    stopping: bool = False
    in_flight: set[asyncio.Task[Any]] = field(default_factory=set)
    outbox: Outbox | None = None  # telemetry records on their way out; None without endpoint
    learning: Learning | None = None  # the label store and its loop, when learning.enabled

    async def drain(self, grace_s: float) -> None:
        """Stop looking ready, let in-flight requests finish, cut the rest after the grace."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.in_flight and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self.in_flight), timeout=left)
        if not self.in_flight:
            return
        self.stopping = True
        cut = list(self.in_flight)
        for task in cut:
            task.cancel()  # streams write an SSE error event on their way out
        await asyncio.wait(cut, timeout=5)

    async def shutdown(self, grace_s: float) -> None:
        """SIGTERM: drain requests, then one last telemetry flush in what is left of the grace.

        The flush gets at least a second even when the drain used the whole grace: what it
        cannot ship stays on disk for the next start.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        await self.drain(grace_s)
        if self.outbox is not None:
            await self.outbox.final_flush(max(deadline - loop.time(), 1.0))

    def price_model(self, outcome: Outcome) -> str | None:
        """The litellm model whose price an answer is counted at (what the cloud would cost)."""
        models = {m.name: m.model for m in self.settings.cloud.models}
        target = outcome.decision.target
        if target in models:
            return models[target]
        return next(iter(models.values()), None)


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
