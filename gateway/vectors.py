"""Embedding inputs and vectors as OpenAI has them, for the request, the service and the local
embedder alike. A leaf: the local wing's embedder uses it without importing the request layer."""

from __future__ import annotations

import numpy as np

Item = str | list[int]  # one input: text, or token ids


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 length, as OpenAI's embeddings are; a zero row stays zero."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32)
