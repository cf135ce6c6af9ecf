"""The counters per-key limits are kept in: in process, or in Redis (one Lua script a call).

Both reserve atomically: check every limit and, only when all admit, add the request's
amounts, in one step (see the package's docstring for the rules).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

MINUTE_TTL_S = 120  # a window outlives its minute so a late settle still finds it
DAY_TTL_S = 2 * 86400


@dataclass(frozen=True)
class Plan:
    """One admission: per limit (requests, tokens, budget) its key, cap (0: none) and amount."""

    keys: tuple[str, str, str]
    caps: tuple[float, float, float]
    amounts: tuple[float, float, float]
    refuse_spent: bool  # a spent budget refuses (429) rather than routing local


class Counters(Protocol):
    async def get(self, key: str) -> float: ...

    async def add(self, key: str, amount: float, ttl_s: int) -> float: ...

    async def reserve(self, plan: Plan) -> tuple[int, bool]:
        """(0 or the refused limit's number, budget spent); reserves only when admitted."""
        ...

    async def close(self) -> None: ...


def _ttl(index: int) -> int:
    return DAY_TTL_S if index == 2 else MINUTE_TTL_S


class MemoryCounters:
    """In-process counters with O(1) amortised expiry and a cap on how many keys it tracks.

    Keys are created with one of a few TTLs, so one FIFO per TTL is also in expiry order:
    expired keys are dropped from the front as requests come, never by scanning the table.
    Past `max_keys` the oldest keys go first (a flood of new keys forgets old windows early,
    it never slows every request down).
    """

    def __init__(self, *, max_keys: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.max_keys = max_keys
        self._data: dict[str, tuple[float, float]] = {}  # key -> (expires, value)
        self._fifos: dict[int, deque[tuple[float, str]]] = {}
        self._clock = clock

    def __len__(self) -> int:
        return len(self._data)

    def _expire(self, now: float) -> None:
        for fifo in self._fifos.values():
            while fifo and (fifo[0][0] < now or len(self._data) > self.max_keys):
                expires, key = fifo.popleft()
                item = self._data.get(key)
                if item is not None and item[0] == expires:
                    del self._data[key]

    def _get(self, key: str) -> float:
        item = self._data.get(key)
        if item is None or item[0] < self._clock():
            return 0.0
        return item[1]

    def _add(self, key: str, amount: float, ttl_s: int) -> float:
        now = self._clock()
        self._expire(now)
        item = self._data.get(key)
        if item is None or item[0] < now:
            item = (now + ttl_s, 0.0)
            self._fifos.setdefault(ttl_s, deque()).append((item[0], key))
        value = item[1] + amount
        self._data[key] = (item[0], value)
        return value

    async def get(self, key: str) -> float:
        return self._get(key)

    async def add(self, key: str, amount: float, ttl_s: int) -> float:
        return self._add(key, amount, ttl_s)

    async def reserve(self, plan: Plan) -> tuple[int, bool]:
        # No await between check and reservation: atomic on the event loop, as the script is.
        spent = False
        for i, (key, cap) in enumerate(zip(plan.keys, plan.caps, strict=True)):
            if cap and self._get(key) >= cap:
                if i < 2 or plan.refuse_spent:
                    return i + 1, i == 2
                spent = True
        for i, (key, cap, amount) in enumerate(
            zip(plan.keys, plan.caps, plan.amounts, strict=True)
        ):
            if cap and amount > 0 and not (i == 2 and spent):
                self._add(key, amount, _ttl(i))
        return 0, spent

    async def close(self) -> None:
        self._data.clear()
        self._fifos.clear()


# KEYS: requests, tokens and budget counters (one hash tag: one Cluster slot).
# ARGV: the three caps (0: none), the three amounts, the two TTLs, refuse-when-spent (1/0).
# Uses only commands of Redis 2.6+ (TTL then EXPIRE instead of Redis 7's EXPIRE NX).
_RESERVE = """
local spent = 0
for i = 1, 3 do
  local cap = tonumber(ARGV[i])
  if cap > 0 and tonumber(redis.call('GET', KEYS[i]) or '0') >= cap then
    if i < 3 or ARGV[9] == '1' then return {i, i == 3 and 1 or 0} end
    spent = 1
  end
end
for i = 1, 3 do
  local amount = tonumber(ARGV[i + 3])
  if tonumber(ARGV[i]) > 0 and amount > 0 and not (i == 3 and spent == 1) then
    redis.call('INCRBYFLOAT', KEYS[i], ARGV[i + 3])
    if redis.call('TTL', KEYS[i]) < 0 then
      redis.call('EXPIRE', KEYS[i], i == 3 and ARGV[8] or ARGV[7])
    end
  end
end
return {0, spent}
"""

_ADD = """
local v = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return v
"""


def _num(x: float) -> str:
    return repr(float(x))


class RedisCounters:
    """The counters in Redis, each operation one script call bounded by `timeout_s`."""

    def __init__(self, url: str, *, timeout_s: float = 0.1, client: Any = None) -> None:
        from ..redis_client import connect

        self.timeout_s = timeout_s
        self.client = client if client is not None else connect(url, timeout_s=timeout_s)
        # EVALSHA after the first call: the script's text does not cross the wire per request.
        self._add = self.client.register_script(_ADD)
        self._reserve = self.client.register_script(_RESERVE)

    async def get(self, key: str) -> float:
        async with asyncio.timeout(self.timeout_s):
            v = await self.client.get(key)
        return float(v) if v is not None else 0.0

    async def add(self, key: str, amount: float, ttl_s: int) -> float:
        async with asyncio.timeout(self.timeout_s):
            value = await self._add(keys=[key], args=[_num(amount), ttl_s])
        return float(value)

    async def reserve(self, plan: Plan) -> tuple[int, bool]:
        args = [*map(_num, plan.caps), *map(_num, plan.amounts), MINUTE_TTL_S, DAY_TTL_S]
        async with asyncio.timeout(self.timeout_s):
            code, spent = await self._reserve(
                keys=list(plan.keys), args=[*args, "1" if plan.refuse_spent else "0"]
            )
        return int(code), bool(spent)

    async def warm(self, timeout_s: float) -> None:
        """One round trip at start-up: a Cluster client learns its slot map, a Sentinel one
        its master, outside the per-request bound."""
        async with asyncio.timeout(timeout_s):
            await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
