"""The policy's `semantic_cache` block (routing/policy_models.py holds it in a Policy)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .verifier import THRESHOLD


class SemanticCacheConfig(BaseModel):
    """The semantic cache: a stored cloud answer for the same question asked another way.

    Only the last user message is compared by meaning; the rest of the request (tenant,
    model, system prompt, earlier turns, tools, response format, sampling) must match
    exactly. It serves only what the exact cache may serve (the policy's `cache` mode)."""

    model_config = ConfigDict(extra="forbid")  # a typo in the policy is an error

    enabled: bool = Field(False, description="off by default: answers served by meaning")
    threshold: float = Field(
        THRESHOLD,
        ge=0.5,
        le=1.0,
        description="cosine similarity (all-MiniLM-L6-v2) at and above which a stored"
        " question is a candidate; the verifier then decides",
    )
    verifier: Literal["strict", "off"] = Field(
        "strict",
        description="strict: a candidate whose numbers, negations, opposites, units, names or"
        " content words differ is a miss; off: cosine alone decides (not recommended)",
    )
    max_entries: int = Field(
        10_000, ge=1, le=100_000, description="stored questions per partition, oldest out"
    )
