"""Response cache for cloud answers: Redis when configured, an in-process LRU otherwise.

Entries are whole OpenAI responses (JSON bytes). A streamed answer is assembled and stored once
it completed; a hit is replayed as JSON or as SSE chunks, whichever the request wants. Redis
trouble never fails a request: operations are bounded by a short timeout, and after an error
the cache is bypassed until the next retry, with a log line and a metric.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from ..jsonfast import canonical, dumps, loads
from ..schemas import AnyRequest, ChatRequest
from ..settings import CacheSettings

log = logging.getLogger(__name__)

# Fields that change how an answer is delivered, not what it says.
_DELIVERY_ONLY = {"stream", "stream_options", "model"}


def cache_key(
    req: AnyRequest, *, target: str, endpoint: str, tenant: str | None, prefix: str
) -> str:
    """sha256 over the canonical JSON of everything that changes the answer, and the tenant."""
    return prefix + body_key(req.upstream_body(), target=target, endpoint=endpoint, tenant=tenant)


def body_key(body: dict[str, Any], *, target: str, endpoint: str, tenant: str | None) -> str:
    """The hex sha256 of a request body as the cache keys it (delivery-only fields left out):
    the exact cache's key, and the semantic cache's partition (a body without its question)."""
    kept = {k: v for k, v in body.items() if k not in _DELIVERY_ONLY}
    material = canonical(
        {"target": target, "endpoint": endpoint, "tenant": tenant or "", "body": kept}
    )
    return hashlib.sha256(material).hexdigest()


def cacheable(req: AnyRequest, mode: str) -> bool:
    if mode == "never":
        return False
    if mode == "always":
        return True
    # deterministic: the same request would get the same answer again. That takes an explicit
    # temperature of 0: without one the cloud samples at OpenAI's default temperature of 1.
    if req.temperature is None or req.temperature != 0 or (req.n or 1) != 1:
        return False
    return not (isinstance(req, ChatRequest) and (req.tools or req.functions))


class Store(Protocol):
    """The storage under the cache: bytes in, bytes out, failures as exceptions."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...

    async def get_many(self, keys: list[str]) -> list[bytes | None]: ...

    async def set_many(self, items: list[tuple[str, bytes]], ttl_s: int) -> None: ...

    async def close(self) -> None: ...


class LRUStore:
    """In-process LRU, bounded in entries and bytes, with per-entry expiry."""

    def __init__(
        self, *, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._clock = clock

    def __len__(self) -> int:
        return len(self._data)

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < self._clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self._data:
            self._drop(key)
        self._data[key] = (self._clock() + ttl_s, value)
        self.bytes += len(value)
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._data)))

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [await self.get(k) for k in keys]

    async def set_many(self, items: list[tuple[str, bytes]], ttl_s: int) -> None:
        for key, value in items:
            await self.set(key, value, ttl_s)

    def _drop(self, key: str) -> None:
        _, value = self._data.pop(key)
        self.bytes -= len(value)

    async def close(self) -> None:
        self._data.clear()
        self.bytes = 0


# Keys per MGET or pipeline of a batch: one request's many entries take one pooled connection
# at a time, a few round trips, never one connection (and one GET) per entry.
BATCH = 128


class RedisStore:
    """redis-py's asyncio client on a pooled connection, every call bounded by a timeout."""

    def __init__(self, url: str, *, timeout_s: float) -> None:
        from ..redis_client import connect

        self.timeout_s = timeout_s
        self.client = connect(
            url, timeout_s=timeout_s, max_connections=64, health_check_interval=30
        )
        # A Cluster spreads one batch's keys over slots: its MGET per slot, not one MGET.
        self._mget = getattr(self.client, "mget_nonatomic", self.client.mget)

    async def get(self, key: str) -> bytes | None:
        async with asyncio.timeout(self.timeout_s):
            value = await self.client.get(key)
        if value is None:
            return None
        return value.encode() if isinstance(value, str) else bytes(value)

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        async with asyncio.timeout(self.timeout_s):
            await self.client.set(key, value, ex=ttl_s)

    def _batch_timeout(self, n: int) -> float:
        # One round trip carries up to BATCH entries: the per-operation bound per 32 of them.
        return self.timeout_s * max(1, -(-n // 32))

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        out: list[bytes | None] = []
        for i in range(0, len(keys), BATCH):
            part = keys[i : i + BATCH]
            async with asyncio.timeout(self._batch_timeout(len(part))):
                values = await self._mget(part)
            out.extend(
                None if v is None else (v.encode() if isinstance(v, str) else bytes(v))
                for v in values
            )
        return out

    async def set_many(self, items: list[tuple[str, bytes]], ttl_s: int) -> None:
        for i in range(0, len(items), BATCH):
            part = items[i : i + BATCH]
            async with asyncio.timeout(self._batch_timeout(len(part))):
                async with self.client.pipeline(transaction=False) as pipe:
                    for key, value in part:
                        pipe.set(key, value, ex=ttl_s)
                    await pipe.execute()

    async def close(self) -> None:
        await self.client.aclose()


class ResponseCache:
    """Get and put whole responses; bypasses a failing store and tries it again later."""

    def __init__(
        self,
        store: Store,
        settings: CacheSettings,
        *,
        on_error: Callable[[str], None] = lambda _op: None,
        on_state: Callable[[bool], None] = lambda _up: None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.kind = "redis" if isinstance(store, RedisStore) else "memory"
        self.up = True
        self._retry_at = 0.0
        self._on_error = on_error
        self._on_state = on_state
        self._pending: set[asyncio.Task[None]] = set()

    def key(self, req: AnyRequest, *, target: str, endpoint: str, tenant: str | None) -> str:
        return cache_key(
            req, target=target, endpoint=endpoint, tenant=tenant, prefix=self.settings.key_prefix
        )

    def _usable(self) -> bool:
        return self.up or time.monotonic() >= self._retry_at

    def _failed(self, op: str, exc: BaseException) -> None:
        self._on_error(op)
        self._retry_at = time.monotonic() + self.settings.retry_interval_s
        if self.up:
            self.up = False
            self._on_state(False)
            log.warning(
                "response cache unavailable; bypassing it",
                extra={"op": op, "error": type(exc).__name__, "store": self.kind},
            )

    def _worked(self) -> None:
        if not self.up:
            self.up = True
            self._on_state(True)
            log.info("response cache available again", extra={"store": self.kind})

    async def get(self, key: str) -> dict[str, Any] | None:
        if not self._usable():
            return None
        try:
            raw = await self.store.get(key)
        except Exception as exc:  # any store failure: bypass, never fail the request
            self._failed("get", exc)
            return None
        self._worked()
        return _decode(raw)

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """Several entries in as few store calls as the store batches them into."""
        if not keys or not self._usable():
            return [None] * len(keys)
        try:
            raws = await self.store.get_many(keys)
        except Exception as exc:  # as get: bypass, never fail the request
            self._failed("get", exc)
            return [None] * len(keys)
        self._worked()
        return [_decode(raw) for raw in raws]

    def put_many(self, entries: list[tuple[str, dict[str, Any]]]) -> None:
        """Store several entries in the background, in one task and batched store calls."""
        if not entries or not self._usable():
            return
        items = []
        for key, obj in entries:
            raw = dumps(obj)
            if len(raw) <= self.settings.max_entry_bytes:
                items.append((key, raw))
        if items:
            self._spawn(self._put_many(items))

    async def _put_many(self, items: list[tuple[str, bytes]]) -> None:
        try:
            await self.store.set_many(items, self.settings.ttl_s)
        except Exception as exc:
            self._failed("set", exc)
            return
        self._worked()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def put(self, key: str, obj: dict[str, Any]) -> None:
        """Store in the background: the client never waits for the cache."""
        raw = dumps(obj)
        if len(raw) > self.settings.max_entry_bytes or not self._usable():
            return
        self._spawn(self._put(key, raw))

    async def _put(self, key: str, raw: bytes) -> None:
        try:
            await self.store.set(key, raw, self.settings.ttl_s)
        except Exception as exc:
            self._failed("set", exc)
            return
        self._worked()

    async def drain(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self.store.close()


def _decode(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        obj = loads(raw)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None
