"""The typed app keys of one gateway's resources, and its drain state.

Each resource has its own key, set once by create_app (or, for the outbox, by the cleanup
context that opens it) and never replaced: a handler reads `request.app[DISPATCHER]`, not a
container. The types are named only for the type checker, so this module imports no part of
the gateway at run time and anything may import it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from .costs import Prices
    from .dispatch import Dispatcher
    from .embeddings.service import EmbeddingService
    from .keyring import KeyRing
    from .learning import Learning
    from .limits import Limiter
    from .local.pool import ModelPool
    from .metrics import Metrics
    from .routing.live_policy import PolicyStore
    from .settings import Settings
    from .status import StatusBoard
    from .telemetry import Outbox


@dataclass
class Lifecycle:
    """Where the instance is in its life: serving, draining, or cutting what is left."""

    started_at: float = field(default_factory=time.time)
    # Shutdown: `draining` makes /readyz say 503 while in-flight requests finish; `stopping`
    # means the grace ran out and the requests still running are being cut.
    draining: bool = False
    stopping: bool = False
    in_flight: set[asyncio.Task[Any]] = field(default_factory=set)

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


SETTINGS: web.AppKey[Settings] = web.AppKey("settings")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
KEYRING: web.AppKey[KeyRing] = web.AppKey("keyring")
LIMITER: web.AppKey[Limiter] = web.AppKey("limiter")
POLICY_STORE: web.AppKey[PolicyStore] = web.AppKey("policy_store")  # hot-reloaded
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")
LOCAL: web.AppKey[ModelPool] = web.AppKey("local")  # the default model and local.models
PRICES: web.AppKey[Prices] = web.AppKey("prices")
EMBEDDINGS: web.AppKey[EmbeddingService] = web.AppKey("embeddings")  # POST /v1/embeddings
STATUS: web.AppKey[StatusBoard] = web.AppKey("status")  # what the status page shows
LIFECYCLE: web.AppKey[Lifecycle] = web.AppKey("lifecycle")
# Present only when learning.enabled: read with `app.get(LEARNING)`.
LEARNING: web.AppKey[Learning] = web.AppKey("learning")
# Present only once the outbox opened (a telemetry endpoint is set and its store opened).
OUTBOX: web.AppKey[Outbox] = web.AppKey("outbox")


async def shutdown(app: web.Application, grace_s: float) -> None:
    """SIGTERM: drain requests, then one last telemetry flush in what is left of the grace.

    The flush gets at least a second even when the drain used the whole grace: what it
    cannot ship stays on disk for the next start.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    await app[LIFECYCLE].drain(grace_s)
    outbox = app.get(OUTBOX)
    if outbox is not None:
        await outbox.final_flush(max(deadline - loop.time(), 1.0))


class Services:
    """A read-only view of one app's resources by name, for code holding the app (tests).

    It holds nothing but the app: every attribute reads the resource's own key.
    """

    __slots__ = ("_app",)

    def __init__(self, app: web.Application) -> None:
        self._app = app

    settings = property(lambda self: self._app[SETTINGS])
    metrics = property(lambda self: self._app[METRICS])
    keyring = property(lambda self: self._app[KEYRING])
    limiter = property(lambda self: self._app[LIMITER])
    policies = property(lambda self: self._app[POLICY_STORE])
    dispatcher = property(lambda self: self._app[DISPATCHER])
    local = property(lambda self: self._app[LOCAL])
    prices = property(lambda self: self._app[PRICES])
    status = property(lambda self: self._app[STATUS])
    lifecycle = property(lambda self: self._app[LIFECYCLE])

    @property
    def embeddings(self) -> EmbeddingService | None:
        return self._app.get(EMBEDDINGS)

    @property
    def learning(self) -> Learning | None:
        return self._app.get(LEARNING)

    @property
    def outbox(self) -> Outbox | None:
        return self._app.get(OUTBOX)


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
