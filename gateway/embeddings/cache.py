"""Embeddings cached per input: re-embedding a corpus costs only the texts that changed.

Each input is its own entry, keyed by tenant, the model that made it (and its settings that
change vectors), `dimensions`, and the input itself, so a request that repeats some earlier
inputs computes only the new ones. Entries live in the response cache's store (Redis, or the
in-process LRU) under their own prefix; the store's failures bypass the cache as for chat.
"""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np

from ..cache import ResponseCache
from .request import Item


class EmbeddingCache:
    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache
        self.prefix = cache.settings.key_prefix + "emb:"

    def keys(
        self, items: list[Item], *, model_id: str, tenant: str | None, dimensions: int | None
    ) -> list[str]:
        head = json.dumps([model_id, tenant or "", dimensions], separators=(",", ":"))
        out = []
        for item in items:
            h = hashlib.sha256(head.encode())
            # Text and token ids never collide: a different tag goes before each.
            if isinstance(item, str):
                h.update(b"\x00t" + item.encode("utf-8", "surrogatepass"))
            else:
                h.update(b"\x00i" + np.asarray(item, dtype="<i8").tobytes())
            out.append(self.prefix + h.hexdigest())
        return out

    async def get_many(self, keys: list[str]) -> list[tuple[np.ndarray, int] | None]:
        # One batched look-up (MGET on Redis): a 2,048-input request must not take a pooled
        # connection per input, nor starve the chat cache that shares the pool.
        found = await self.cache.get_many(keys)
        out: list[tuple[np.ndarray, int] | None] = []
        for obj in found:
            if obj is None:
                out.append(None)
                continue
            try:
                vec = np.frombuffer(base64.b64decode(obj["v"]), dtype="<f4")
                out.append((vec.astype(np.float32), int(obj["t"])))
            except (KeyError, TypeError, ValueError):
                out.append(None)  # an entry of another shape is a miss, never an error
        return out

    def put_many(self, entries: list[tuple[str, np.ndarray, int]]) -> None:
        """In the background, as for chat (the client never waits), in batched store calls."""
        self.cache.put_many(
            [
                (key, {"v": base64.b64encode(v.astype("<f4").tobytes()).decode("ascii"), "t": t})
                for key, v, t in entries
            ]
        )
