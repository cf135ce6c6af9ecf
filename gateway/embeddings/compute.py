"""Vectors for the inputs a model still has to embed: each distinct input once, unit length."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import InvalidRequest
from ..local.embedder import LocalEmbedder
from ..vectors import Item, normalise
from .request import EmbeddingRequest


class Embedder(Protocol):
    name: str
    kind: str

    async def embed(
        self, req: EmbeddingRequest, items: list[Item]
    ) -> tuple[list[np.ndarray], int]: ...

    async def probe(self, *, deep: bool = False) -> bool | None: ...


@dataclass
class Computed:
    vectors: list[np.ndarray]
    tokens: list[int]
    seconds: float


async def compute(
    backend: Embedder | LocalEmbedder,
    req: EmbeddingRequest,
    items: list[Item],
    *,
    truncate_dimensions: bool,
) -> Computed:
    if not items:
        return Computed([], [], 0.0)
    # Each distinct input is computed once: repeats get the very same vector (a batch's
    # composition moves llama.cpp's float results in the 4th decimal) and cost nothing.
    slot: dict[str | tuple[int, ...], int] = {}
    order = [slot.setdefault(i if isinstance(i, str) else tuple(i), len(slot)) for i in items]
    unique = [items[order.index(k)] for k in range(len(slot))]
    started = time.perf_counter()
    if isinstance(backend, LocalEmbedder):
        vectors, tokens = await backend.embed(unique)
        vectors = local_dimensions(req, vectors, truncate=truncate_dimensions)
    else:
        vectors, total = await backend.embed(req, unique)
        vectors = list(normalise(np.stack(vectors))) if _same_width(vectors) else vectors
        tokens = _share(total, unique)
    return Computed(
        [vectors[k] for k in order], [tokens[k] for k in order], time.perf_counter() - started
    )


def local_dimensions(
    req: EmbeddingRequest, vectors: list[np.ndarray], *, truncate: bool
) -> list[np.ndarray]:
    width = vectors[0].shape[0]
    if req.dimensions is None or req.dimensions == width:
        return vectors
    if not truncate:
        raise InvalidRequest(
            f"'dimensions' {req.dimensions} is not supported by the local embedding model "
            f"(width {width}): it is not set up as Matryoshka-trained "
            "(local.embedding.truncate_dimensions).",
            param="dimensions",
            code="unsupported_value",
        )
    if req.dimensions > width:
        raise InvalidRequest(
            f"'dimensions' is {req.dimensions}; the local embedding model has {width}.",
            param="dimensions",
            code="invalid_value",
        )
    return list(normalise(np.stack([v[: req.dimensions] for v in vectors])))


def _same_width(vectors: list[np.ndarray]) -> bool:
    return len({v.shape[0] for v in vectors}) == 1


def _share(total: int, items: list[Item]) -> list[int]:
    """A cloud answer's prompt tokens spread over its inputs by length (cached per input)."""
    sizes = [max(1, len(i)) for i in items]
    whole = sum(sizes)
    return [round(total * s / whole) for s in sizes]
