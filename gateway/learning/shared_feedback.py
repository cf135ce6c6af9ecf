"""The feedback registry in the state Redis: a request answered by one replica takes feedback
on any other, once.

Keys of one tenant T share the tag `{f:T}`: `P:{f:T}:issued:<request id>` (what the label
needs: the router's vector, route, privacy, the prompt when kept; or `pending` while the
answer is still being written), `P:{f:T}:order` (zset request id -> issued at, ms, to keep
the tenant within `learning.feedback_window` ids), `P:{f:T}:claimed:<request id>` (SET NX:
the one feedback a request takes, fleet-wide) and `P:{f:T}:count:<hour>` (the tenant's
feedback this hour, for `learning.feedback_per_key_per_hour`). Everything expires with
`learning.feedback_ttl_s`.
"""

from __future__ import annotations

import json
import time
from array import array
from typing import Any, Literal

from ..state.state_store import StateStore
from .recent import Issued

PENDING: Literal["pending"] = "pending"

# KEYS[1] order zset; ARGV: base, request id, record, now ms, ttl ms, window.
_PUT = """
local base, rid, now, ttl, window = ARGV[1], ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5]),
  tonumber(ARGV[6])
redis.call('SET', base .. 'issued:' .. rid, ARGV[3], 'PX', ttl)
redis.call('ZADD', KEYS[1], now, rid)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ttl))
local over = redis.call('ZCARD', KEYS[1]) - window
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[1], 0, over - 1)) do
    redis.call('DEL', base .. 'issued:' .. old)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, over - 1)
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

# KEYS[1] the counter; ARGV: delta, ttl s. Redis 6 has no EXPIRE NX: set the TTL when new.
_COUNT = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return n
"""


def _encode(issued: Issued) -> bytes:
    return json.dumps(
        {
            "dense": issued.dense,
            "terms": list(issued.terms),
            "route": issued.route,
            "private": issued.private,
            "prompt": issued.prompt,
            "at": issued.at,
            "fv": issued.fv,
        },
        separators=(",", ":"),
    ).encode()


def _decode(raw: bytes) -> Issued:
    d = json.loads(raw)
    return Issued(
        d["dense"], array("I", d["terms"]), d["route"], d["private"], d["prompt"], d["at"], d["fv"]
    )


class FeedbackRegistry:
    def __init__(self, state: StateStore, *, window: int, ttl_s: float) -> None:
        self.state = state
        self.window = window
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._put = state.script("feedback.put", _PUT)
        self._count = state.script("feedback.count", _COUNT)

    def _base(self, tenant: str | None) -> str:
        return self.state.feedback_key(tenant, "")

    async def _write(self, tenant: str | None, request_id: str, record: bytes) -> None:
        base = self._base(tenant)
        args = [base, request_id, record, int(time.time() * 1000), self.ttl_ms, self.window]
        await self.state.run(
            "remember a request for feedback",
            lambda: self._put(keys=[base + "order"], args=args),
        )

    async def pending(self, tenant: str | None, request_id: str) -> None:
        """The id is out, its answer still being written: feedback elsewhere waits for it."""
        await self._write(tenant, request_id, PENDING.encode())

    async def put(self, tenant: str | None, request_id: str, issued: Issued) -> None:
        await self._write(tenant, request_id, _encode(issued))

    async def get(self, tenant: str | None, request_id: str) -> Issued | Literal["pending"] | None:
        key = self._base(tenant) + "issued:" + request_id
        raw = await self.state.run(
            "find a request for feedback", lambda: self.state.client.get(key)
        )
        if raw is None:
            return None
        return PENDING if raw == PENDING.encode() else _decode(raw)

    async def claim(self, tenant: str | None, request_id: str) -> bool:
        """True for the first feedback of this request across the fleet, False after."""
        key = self._base(tenant) + "claimed:" + request_id
        got: Any = await self.state.run(
            "claim feedback",
            lambda: self.state.client.set(key, b"1", nx=True, px=self.ttl_ms),
            durable=True,
        )
        return bool(got)

    async def release(self, tenant: str | None, request_id: str) -> None:
        key = self._base(tenant) + "claimed:" + request_id
        await self.state.run("release a feedback claim", lambda: self.state.client.delete(key))

    async def count(self, tenant: str | None, hour: int, delta: int) -> int:
        key = self._base(tenant) + f"count:{hour}"
        n = await self.state.run(
            "count feedback", lambda: self._count(keys=[key], args=[delta, 3600])
        )
        return int(n)
