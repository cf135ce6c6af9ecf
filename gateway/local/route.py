"""One request's local backend: the lease on its model's file, held for the whole answer."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from ..backends.base import Chunk, Completion, Endpoint, Kind
from ..schemas import AnyRequest
from .entry import Entry, Loaded


class Leases(Protocol):
    """What a route needs of the model pool (pool.py): a lease on the name's file, and its end."""

    @property
    def ready(self) -> bool: ...

    async def acquire(self, entry: Entry) -> Loaded: ...

    def release(self, loaded: Loaded, entry: Entry) -> None: ...


class ModelRoute:
    """One request's local backend: leases its model's current file for the whole answer."""

    kind: Kind = "local"
    name = "local"

    def __init__(self, pool: Leases, entry: Entry, *, metrics: Any = None) -> None:
        self.pool = pool
        self.entry = entry
        self._metrics = metrics
        self.model_name = entry.name
        self.served_by: str | None = None  # the file's sha256 prefix, once leased

    async def complete(self, req: AnyRequest, endpoint: Endpoint) -> Completion:
        loaded = await self._lease()
        try:
            return await loaded.backend.complete(req, endpoint)
        finally:
            self.pool.release(loaded, self.entry)

    async def _lease(self) -> Loaded:
        loaded = await self.pool.acquire(self.entry)
        self.served_by = loaded.file_id
        metrics = self._metrics
        if metrics is not None:
            metrics.local_file_requests.labels(self.entry.name, loaded.file_id).inc()
        return loaded

    async def stream(self, req: AnyRequest, endpoint: Endpoint) -> AsyncGenerator[Chunk, None]:
        loaded = await self._lease()
        try:
            chunks = loaded.backend.stream(req, endpoint)
            try:
                async for chunk in chunks:
                    yield chunk
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
        finally:
            self.pool.release(loaded, self.entry)

    # The Backend protocol's other two members, which the dispatcher's attempt types a route
    # by: nobody probes a local route (the model pool is not behind a breaker) and it owns nothing
    # to close (the pool closes the engines).
    async def probe(self, *, deep: bool = False) -> bool | None:
        return self.pool.ready

    async def close(self) -> None:
        return None
