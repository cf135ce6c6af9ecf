"""Response cache for cloud answers: stores, stream assembly and replay, the per-request step."""

from .answers import LRUStore, RedisStore, ResponseCache, Store, cache_key, cacheable
from .step import CacheControl, CacheHit, CachePlan
from .streams import StreamAssembler, as_hit, assemble_then, replay

__all__ = [
    "CacheControl",
    "CacheHit",
    "CachePlan",
    "LRUStore",
    "RedisStore",
    "ResponseCache",
    "Store",
    "StreamAssembler",
    "as_hit",
    "assemble_then",
    "cache_key",
    "cacheable",
    "replay",
]
