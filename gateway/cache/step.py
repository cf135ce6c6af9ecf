"""The cache's part in one request: plan once, look up, and store the cloud's answer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backends.base import Chunk, Completion
from ..schemas import AnyRequest
from .answers import ResponseCache, cacheable
from .question import Asked, asked_of
from .streams import as_hit, assemble_then, replay

if TYPE_CHECKING:
    import numpy as np

    from ..semantic.policy_block import SemanticCacheConfig
    from ..semantic.semcache import SemanticCache


@dataclass(frozen=True, slots=True)
class CacheControl:
    """The request's Cache-Control: no-cache skips the lookup, no-store skips storing."""

    no_cache: bool = False
    no_store: bool = False

    @classmethod
    def parse(cls, header: str | None) -> CacheControl:
        if not header:
            return cls()
        tokens = {t.strip().lower() for t in header.split(",")}
        return cls(no_cache="no-cache" in tokens, no_store="no-store" in tokens)


@dataclass(slots=True)
class CacheHit:
    """A stored answer, shaped as the request wants it (whole, or replayed as a stream)."""

    completion: Completion | None
    chunks: AsyncIterator[Chunk] | None
    seconds: float
    similarity: float | None = None  # a semantic hit: how close the stored question was


@dataclass
class CachePlan:
    """What the cache does for one request; `state` is what the response reports."""

    cache: ResponseCache | None = None
    key: str | None = None
    lookup_first: bool = False  # look up before calling the cloud
    store: bool = False
    fallback: bool = False  # may serve as a degraded answer (never when the client said no-cache)
    state: str = "skip"  # "miss", "hit" or "semantic" once looked up
    # The semantic cache, when the policy turned it on and the request has a question.
    semantic: SemanticCache | None = None
    semantic_cfg: SemanticCacheConfig | None = None
    asked: Asked | None = None
    vector: np.ndarray | None = None  # the question's, once encoded by the look-up

    @classmethod
    def make(
        cls,
        cache: ResponseCache | None,
        req: AnyRequest,
        *,
        endpoint: str,
        tenant: str | None,
        target: str | None,
        cloud_bound: bool,
        mode: str,
        cc: CacheControl,
        semantic: SemanticCache | None = None,
        semantic_cfg: SemanticCacheConfig | None = None,
    ) -> CachePlan:
        """Entries are cloud answers keyed by the cloud model (`target`) that gave them."""
        if cache is None or target is None or not cacheable(req, mode):
            return cls()
        lookup_first = cloud_bound and not cc.no_cache
        store = cloud_bound and not cc.no_store
        asked = None
        if semantic is not None and semantic_cfg is not None and (store or not cc.no_cache):
            asked = asked_of(req, target=target, endpoint=endpoint, tenant=tenant)
        return cls(
            cache=cache,
            key=cache.key(req, target=target, endpoint=endpoint, tenant=tenant),
            lookup_first=lookup_first,
            store=store,
            fallback=not cc.no_cache,
            semantic=semantic if asked is not None else None,
            semantic_cfg=semantic_cfg,
            asked=asked,
        )

    async def fetch(self, *, stream: bool, degraded: bool) -> CacheHit | None:
        """The stored answer; None on a miss or a skip. A request that missed once (ahead of
        its cloud model) does not look again as that model's fallback."""
        if self.cache is None or self.key is None or self.state != "skip":
            return None
        if not (self.lookup_first or (degraded and self.fallback)):
            return None
        started = time.perf_counter()
        obj = await self.cache.get(self.key)
        similarity = None
        if obj is None and self.semantic is not None:
            assert self.asked is not None and self.semantic_cfg is not None
            match, self.vector = await self.semantic.lookup(
                self.semantic_cfg, self.asked.question, self.asked.partition, self.cache.get
            )
            if match is not None:
                obj, similarity = match.answer, match.similarity
        if obj is None:
            self.state = "miss"
            return None
        self.state = "hit" if similarity is None else "semantic"
        seconds = time.perf_counter() - started
        if stream:
            return CacheHit(None, replay(obj), seconds, similarity)
        return CacheHit(Completion(as_hit(obj)), None, seconds, similarity)

    def keep(
        self, completion: Completion | None, chunks: AsyncIterator[Chunk] | None
    ) -> AsyncIterator[Chunk] | None:
        """Store a cloud answer (a stream once it completed); returns the chunks to send."""
        cache, key = self.cache, self.key
        if cache is None or key is None or not self.store:
            return chunks
        if completion is not None:
            cache.put(key, completion.obj)
            self._remember(key)
            return chunks
        if chunks is None:
            return None

        def done(obj: dict[str, Any]) -> None:
            cache.put(key, obj)
            self._remember(key)

        return assemble_then(chunks, done)

    def _remember(self, key: str) -> None:
        """The stored answer, found by its question's meaning from now on."""
        if self.semantic is not None and self.asked is not None and self.semantic_cfg:
            a = self.asked
            self.semantic.remember(a.question, a.partition, self.vector, key, self.semantic_cfg)
