"""Per-key limits: requests and tokens per minute, and a daily cloud budget in USD.

Counters live in Redis when `limits.redis_url` is set, so gateways behind one load balancer
share them; in process otherwise. A failing Redis fails open (the request goes on), with a log
line and a metric: a limiter outage must not become a gateway outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from .errors import RateLimited
from .settings import LimitSettings

log = logging.getLogger(__name__)


class Counters(Protocol):
    async def get(self, key: str) -> float: ...

    async def add(self, key: str, amount: float, ttl_s: int) -> float: ...

    async def close(self) -> None: ...


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

    async def get(self, key: str) -> float:
        item = self._data.get(key)
        if item is None or item[0] < self._clock():
            return 0.0
        return item[1]

    async def add(self, key: str, amount: float, ttl_s: int) -> float:
        now = self._clock()
        self._expire(now)
        item = self._data.get(key)
        if item is None or item[0] < now:
            item = (now + ttl_s, 0.0)
            self._fifos.setdefault(ttl_s, deque()).append((item[0], key))
        value = item[1] + amount
        self._data[key] = (item[0], value)
        return value

    async def close(self) -> None:
        self._data.clear()
        self._fifos.clear()


class RedisCounters:
    def __init__(self, url: str, *, timeout_s: float = 0.05) -> None:
        import redis.asyncio as redis

        self.timeout_s = timeout_s
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )

    async def get(self, key: str) -> float:
        async with asyncio.timeout(self.timeout_s):
            v = await self.client.get(key)
        return float(v) if v is not None else 0.0

    async def add(self, key: str, amount: float, ttl_s: int) -> float:
        async with asyncio.timeout(self.timeout_s):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(key, amount)
                pipe.expire(key, ttl_s, nx=True)
                value, _ = await pipe.execute()
        return float(value)

    async def close(self) -> None:
        await self.client.aclose()


class Limiter:
    def __init__(
        self,
        settings: LimitSettings,
        counters: Counters,
        *,
        keyed: bool = True,
        on_limited: Callable[[str], None] = lambda _r: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        # Without configured keys any Bearer token is accepted, so tokens are not identities:
        # all callers share one set of counters instead of one per made-up token.
        self.keyed = keyed
        self.counters = counters
        self._on_limited = on_limited
        self._clock = clock
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> bool:
        s = self.settings
        return bool(s.requests_per_minute or s.tokens_per_minute or s.daily_cloud_budget_usd)

    def _minute(self, tenant: str, what: str) -> tuple[str, float]:
        now = self._clock()
        return f"egw:rl:{tenant}:{what}:{int(now // 60)}", 60 - now % 60

    def _day(self, tenant: str) -> str:
        return f"egw:budget:{tenant}:{time.strftime('%Y%m%d', time.gmtime(self._clock()))}"

    async def admit(self, tenant: str | None) -> bool:
        """Count the request; raise 429 past a limit. True when the cloud budget is spent."""
        if not self.active:
            return False
        t = self._who(tenant)
        s = self.settings
        try:
            if s.requests_per_minute:
                key, left = self._minute(t, "req")
                if await self.counters.add(key, 1, 120) > s.requests_per_minute:
                    self._on_limited("requests")
                    raise RateLimited(
                        f"Rate limit reached: {s.requests_per_minute} requests per minute.",
                        retry_after=left,
                        code="rate_limit_exceeded",
                    )
            if s.tokens_per_minute:
                key, left = self._minute(t, "tok")
                if await self.counters.get(key) >= s.tokens_per_minute:
                    self._on_limited("tokens")
                    raise RateLimited(
                        f"Rate limit reached: {s.tokens_per_minute} tokens per minute.",
                        retry_after=left,
                        code="tokens_rate_limit_exceeded",
                    )
            if s.daily_cloud_budget_usd:
                spent = await self.counters.get(self._day(t))
                if spent >= s.daily_cloud_budget_usd:
                    if s.budget_exceeded == "refuse":
                        self._on_limited("budget")
                        raise RateLimited(
                            f"Daily cloud budget of ${s.daily_cloud_budget_usd:g} is spent.",
                            retry_after=self._seconds_to_midnight(),
                            code="budget_exceeded",
                        )
                    return True
        except RateLimited:
            raise
        except Exception as exc:  # counters unavailable: fail open
            log.warning(
                "limit counters unavailable; not enforcing", extra={"error": type(exc).__name__}
            )
        return False

    def _who(self, tenant: str | None) -> str:
        return tenant if tenant and self.keyed else "anonymous"

    def _seconds_to_midnight(self) -> float:
        return 86400 - self._clock() % 86400

    def record(self, tenant: str | None, tokens: int, cloud_usd: float) -> None:
        """Add what a finished request used, in the background."""
        if not self.active or (tokens <= 0 and cloud_usd <= 0):
            return
        task = asyncio.create_task(self._record(self._who(tenant), tokens, cloud_usd))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _record(self, tenant: str, tokens: int, cloud_usd: float) -> None:
        try:
            if self.settings.tokens_per_minute and tokens > 0:
                key, _ = self._minute(tenant, "tok")
                await self.counters.add(key, tokens, 120)
            if self.settings.daily_cloud_budget_usd and cloud_usd > 0:
                await self.counters.add(self._day(tenant), cloud_usd, 2 * 86400)
        except Exception as exc:
            log.warning(
                "limit counters unavailable; usage not recorded",
                extra={"error": type(exc).__name__},
            )

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await self.counters.close()
