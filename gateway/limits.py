"""Per-key limits: requests and tokens per minute, and a daily cloud budget in USD.

Counters live in Redis when `limits.redis_url` is set, so gateways behind one load balancer
share them; in process otherwise. A failing Redis fails open (the request goes on), with a log
line and a metric: a limiter outage must not become a gateway outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
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
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._data: dict[str, tuple[float, float]] = {}  # key -> (expires, value)
        self._clock = clock

    async def get(self, key: str) -> float:
        item = self._data.get(key)
        if item is None or item[0] < self._clock():
            return 0.0
        return item[1]

    async def add(self, key: str, amount: float, ttl_s: int) -> float:
        now = self._clock()
        if len(self._data) > 10_000:  # windows expire; keep the dict from growing forever
            self._data = {k: v for k, v in self._data.items() if v[0] >= now}
        expires, value = self._data.get(key, (now + ttl_s, 0.0))
        if expires < now:
            expires, value = now + ttl_s, 0.0
        self._data[key] = (expires, value + amount)
        return value + amount

    async def close(self) -> None:
        self._data.clear()


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
        on_limited: Callable[[str], None] = lambda _r: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
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
        t = tenant or "anonymous"
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

    def _seconds_to_midnight(self) -> float:
        return 86400 - self._clock() % 86400

    def record(self, tenant: str | None, tokens: int, cloud_usd: float) -> None:
        """Add what a finished request used, in the background."""
        if not self.active or (tokens <= 0 and cloud_usd <= 0):
            return
        task = asyncio.create_task(self._record(tenant or "anonymous", tokens, cloud_usd))
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
