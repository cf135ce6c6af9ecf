"""State that replicas of one gateway share: a Redis that does not evict (`state.redis_url`).

Without it every process keeps its own state as it always did (stored responses in memory,
labels in SQLite, feedback ids and the shadow cap in memory): right for one process. With
`state.replicas` above 1 start-up refuses to run without it (settings.py); in a Kubernetes
pod without it a warning says that replicas would not share state.

- state_store.py: the client, the key layout (one hash tag per operation) and StateUnavailable;
- fleet.py: the fleet-wide shadow cap, the trainer lease and the published weights.

Stored Responses keep their Redis half beside the in-process one (responses/stores.py), and
the learning loop's shared feedback registry and labels live with the loop
(learning/shared_feedback.py, learning/shared_labels.py), all on this store's client; the one
Redis client factory every Redis user shares is redis_client.py.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from ..settings import Settings
from .state_store import StateStore, StateUnavailable

log = logging.getLogger(__name__)

STATE: web.AppKey[StateStore | None] = web.AppKey("state_store")

__all__ = ["STATE", "StateStore", "StateUnavailable", "build_state"]


def build_state(settings: Settings) -> StateStore | None:
    """The shared state store when `state.redis_url` is set; None (and maybe a warning) else."""
    if settings.state.redis_url:
        return StateStore(settings.state)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        log.warning(
            "running in Kubernetes without state.redis_url: replicas of this gateway will not"
            " share stored responses, feedback, labels or the shadow cap; set state.redis_url"
            " (and state.replicas) when the Deployment runs more than one"
        )
    return None


async def state_ctx(app: web.Application) -> AsyncIterator[None]:
    """Start-up says whether the state Redis answers; shutdown closes the client."""
    state = app[STATE]
    if state is not None:
        if await state.ping():
            log.info("state redis reachable", extra={"key_prefix": state.prefix})
        else:
            log.error(
                "state redis not reachable: stored responses, feedback and labels answer 503"
                " state_store_unavailable until it is"
            )
    yield
    if state is not None:
        await state.close()
