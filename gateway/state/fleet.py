"""What the fleet decides once: the shadow cap, who trains, which weights are in force.

All keys carry the tag `{fleet}`:
- `P:{fleet}:shadow`: a zset of shadow judgements started in the last hour (score: start,
  ms), so `learning.shadow_max_per_hour` bounds the fleet's judge bill in any hour;
- `P:{fleet}:trainer`: the trainer lease (SET NX PX, renewed while training, deleted by its
  holder when done; a crashed holder's lease lapses after `state.lease_ttl_s`);
- `P:{fleet}:weights:version` and `P:{fleet}:weights:<version>`: the router weights the
  lease holder accepted, published once; every replica loads the newest version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator

from .state_store import StateStore

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000

# KEYS[1] the zset; ARGV: now ms, cap, member. 1 when a slot was taken.
_TAKE = """
local now, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600000)
if redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], 3600000)
return 1
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] version counter; ARGV: key base, weights bytes. Keeps the previous version too.
_PUBLISH = """
local v = redis.call('INCR', KEYS[1])
redis.call('SET', ARGV[1] .. v, ARGV[2])
if v > 2 then redis.call('DEL', ARGV[1] .. (v - 2)) end
return v
"""


class ShadowCap:
    """`learning.shadow_max_per_hour` for the whole fleet: a sliding hour, taken atomically."""

    def __init__(self, state: StateStore, per_hour: int) -> None:
        self.state = state
        self.per_hour = per_hour
        self._take = state.script("fleet.shadow", _TAKE)

    async def take(self) -> bool:
        key = self.state.fleet_key("shadow")
        args = [int(time.time() * 1000), self.per_hour, secrets.token_hex(8)]
        got = await self.state.run("take a shadow slot", lambda: self._take(keys=[key], args=args))
        return bool(got)


class TrainerLease:
    """The trainer lease and the published weights."""

    def __init__(self, state: StateStore) -> None:
        self.state = state
        self.lease_ms = max(1, int(state.settings.lease_ttl_s * 1000))
        self._renew = state.script("fleet.renew", _RENEW)
        self._release = state.script("fleet.release", _RELEASE)
        self._publish = state.script("fleet.publish", _PUBLISH)

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[bool]:
        """Yields True to the one replica that may train now (renewed until the block ends)."""
        key = self.state.fleet_key("trainer")
        token = secrets.token_hex(16).encode()
        got = await self.state.run(
            "take the trainer lease",
            lambda: self.state.client.set(key, token, nx=True, px=self.lease_ms),
        )
        if not got:
            yield False
            return

        # Every wait below has the state store's bound: a Redis call that never answers (a
        # connection left mid-reply by a cancelled renewal, a master mid-failover) must not
        # hold the trainer, or the replica's shutdown, for ever; the lease lapses by itself.
        bound = self.state.settings.timeout_ms / 1000

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.lease_ms / 3000)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        self._renew(keys=[key], args=[token, self.lease_ms]), bound
                    )

        renewing = asyncio.create_task(renew(), name="trainer-lease")
        try:
            yield True
        finally:
            renewing.cancel()
            await asyncio.wait({renewing}, timeout=bound)
            try:
                await asyncio.wait_for(self._release(keys=[key], args=[token]), bound)
            except Exception:  # it lapses by itself after lease_ttl_s
                log.warning("trainer lease not released; it expires by itself")

    async def publish(self, weights: bytes) -> int:
        """Store accepted weights as the next version; the version."""
        key = self.state.fleet_key("weights", "version")
        base = self.state.fleet_key("weights", "")
        v = await self.state.run(
            "publish router weights", lambda: self._publish(keys=[key], args=[base, weights])
        )
        return int(v)

    async def version(self) -> int:
        key = self.state.fleet_key("weights", "version")
        v = await self.state.run("read the weights version", lambda: self.state.client.get(key))
        return int(v) if v is not None else 0

    async def weights(self, version: int) -> bytes | None:
        key = self.state.fleet_key("weights", str(version))
        data: bytes | None = await self.state.run(
            "read router weights", lambda: self.state.client.get(key)
        )
        return data
