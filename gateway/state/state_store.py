"""The state Redis: one client, its key layout and the error an outage becomes.

Every key starts with `state.key_prefix`, then a Redis Cluster hash tag that names what one
operation touches, so that the keys of one script or transaction always share a hash slot:
- `{r:<tenant>}`: one tenant's stored responses (responses/stores.py);
- `{f:<tenant>}`: one tenant's issued request ids, feedback claims and feedback counts;
- `{fleet}`: what the whole fleet shares: the shadow cap, the labels, the trainer lease and
  the published weights.
A tenant is the 12-hex digest of its API key (http/auth.tenant_id) or `-` without one.

An operation that needs the state Redis and cannot reach it raises `StateUnavailable`: a 503
`state_store_unavailable`, never an answer that quietly forgot something.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import GatewayError
from ..redis_client import connect
from ..settings import StateSettings

log = logging.getLogger(__name__)

T = TypeVar("T")


class StateUnavailable(GatewayError):
    """The state Redis did not answer: the operation was not done (nor half done)."""

    status = 503
    type = "service_unavailable"
    default_code = "state_store_unavailable"


def tenant_tag(tenant: str | None) -> str:
    return tenant or "-"


class StateStore:
    """The shared state Redis of a fleet (`state.redis_url`)."""

    def __init__(self, settings: StateSettings, *, client: Any = None) -> None:
        assert settings.redis_url, "StateStore needs state.redis_url"
        self.settings = settings
        self.prefix = settings.key_prefix
        self.client = client or connect(
            settings.redis_url, timeout_s=settings.timeout_ms / 1000, decode_responses=False
        )
        self._scripts: dict[str, Any] = {}

    def key(self, tag: str, *parts: str) -> str:
        """`<prefix>:{<tag>}:<parts...>`: every key of one operation gets the same tag."""
        return ":".join((self.prefix, "{" + tag + "}", *parts))

    def responses_key(self, tenant: str | None, *parts: str) -> str:
        return self.key(f"r:{tenant_tag(tenant)}", *parts)

    def feedback_key(self, tenant: str | None, *parts: str) -> str:
        return self.key(f"f:{tenant_tag(tenant)}", *parts)

    def fleet_key(self, *parts: str) -> str:
        return self.key("fleet", *parts)

    def script(self, name: str, source: str) -> Any:
        s = self._scripts.get(name)
        if s is None:
            s = self._scripts[name] = self.client.register_script(source)
        return s

    async def run(self, what: str, op: Callable[[], Awaitable[T]], *, durable: bool = False) -> T:
        """`op()` against the state Redis; an outage becomes StateUnavailable (logged).

        `durable`: a write the client is told is kept (a stored response, a label, a feedback
        claim). With `state.wait_replicas` the answer waits (Redis WAIT) until that many
        replicas hold it, so a Sentinel failover cannot lose it: replication is asynchronous,
        and a master that dies right after answering takes its last writes with it.
        """
        from redis.exceptions import RedisError

        try:
            result = await op()
            if durable and self.settings.wait_replicas:
                await self._replicated(what)
            return result
        except (TimeoutError, RedisError, OSError) as exc:
            log.error(
                "state redis unavailable",
                extra={"operation": what, "error": type(exc).__name__},
            )
            raise StateUnavailable(
                f"The gateway's shared state store did not answer ({what}); try again.",
            ) from exc

    async def _replicated(self, what: str) -> None:
        n = self.settings.wait_replicas
        # Half the operation bound: the socket timeout (the whole bound) must not fire first.
        wait_ms = max(1, self.settings.timeout_ms // 2)
        acked = int(await self.client.execute_command("WAIT", n, wait_ms))
        if acked < n:
            log.error(
                "state write not replicated in time",
                extra={"operation": what, "replicas": acked, "wanted": n},
            )
            raise StateUnavailable(
                f"The gateway's shared state store kept this ({what}) on {acked} of the"
                f" {n} replicas state.wait_replicas asks for; try again.",
            )

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except Exception:
            return False

    async def close(self) -> None:
        # Bounded: a connection stuck mid-reply must not hold the shutdown. Closing is local
        # (no round trip), so a second is plenty even when the operation bound is tighter.
        try:
            await asyncio.wait_for(self.client.aclose(), max(1.0, self.settings.timeout_ms / 1000))
        except (TimeoutError, OSError):
            log.warning("state redis connections not closed in time")
