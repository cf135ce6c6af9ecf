"""What one request's answer is: where it came from, the answer, and what went wrong first.

Chat and embeddings both end in an `Outcome`: the HTTP layer renders it and the request log
reads it. `choice_text` is the one reading of "the text of choice 0" of an OpenAI answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Chunk, Completion
from ..backends.tier import TierReport
from ..cascade import CascadeRecord
from ..routing.features import Features
from ..routing.policy import Decision


@dataclass
class Outcome:
    """Where an answer came from and the answer itself (whole, or a stream)."""

    route: str  # local | cloud | cache
    target: str  # backend name
    decision: Decision
    features: Features
    completion: Completion | None = None
    chunks: AsyncIterator[Chunk] | None = None
    degraded: bool = False
    reason: str = ""
    cache: str | None = None  # hit | semantic | miss | skip
    cache_similarity: float | None = None  # a semantic hit: the stored question's cosine
    backend_seconds: float = 0.0
    first_chunk_seconds: float | None = None
    failovers: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, cause)
    cascade: CascadeRecord | None = None  # `route: cascade`: confidence and escalation
    model_file: str | None = None  # sha256 prefix of the local GGUF that answered
    tier: TierReport | None = None  # a tier answered: what it said about its own answer

    def headers(self) -> dict[str, str]:
        h = {"x-gateway-route": self.route, "x-gateway-reason": self.reason}
        if self.degraded:
            h["x-gateway-degraded"] = "true"
        if self.cache:
            h["x-gateway-cache"] = self.cache
        if self.cache_similarity is not None:
            h["x-gateway-cache-similarity"] = f"{self.cache_similarity:.4f}"
        if self.cascade is not None:
            h.update(self.cascade.headers())
        if self.model_file:
            h["x-gateway-model-file"] = self.model_file
        if self.tier is not None:
            h.update(self.tier.headers())
        return h

    def mark_tier(self) -> None:
        """A tier's degraded answer is this box's degraded answer too, and says why."""
        if self.tier is not None and self.tier.degraded:
            self.degraded = True
            self.reason += (
                f"; degraded: tier {self.tier.tier} answered degraded (its route: "
                f"{self.tier.route})"
            )


def choice_text(obj: dict[str, Any]) -> str:
    """The text of choice 0 of a chat or completions answer or chunk ("" when it has none)."""
    choices = obj.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else {}
    if not isinstance(first, dict):
        return ""
    part = first.get("message") or first.get("delta") or {}
    text = part.get("content") if isinstance(part, dict) else None
    return str(text or first.get("text") or "")
