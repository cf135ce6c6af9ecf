"""One way to open a Redis client from a URL, for the cache and for the state store.

i24-redis extends this to Sentinel and Cluster URLs; callers only ever call `connect`.
"""

from __future__ import annotations

from typing import Any


def connect(url: str, *, timeout_s: float = 0.5, decode_responses: bool = False) -> Any:
    """An asyncio redis-py client for `url` (redis:// or rediss://), bounded by `timeout_s`."""
    import redis.asyncio as redis

    return redis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        decode_responses=decode_responses,
    )
