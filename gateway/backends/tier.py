"""What an upstream edge-gateway (a tier) said about its own answer, relayed under our names.

A `cloud.models` entry with `tier: true` is another edge-gateway. Its answer carries its own
`x-gateway-*` headers (which route it took, why, whether it was degraded, which GGUF answered).
This box relays that decision to its client under `x-gateway-upstream-*`, so the two never mix
with this box's own headers, and counts its answer degraded when the tier's was.

Only these headers are read, only from entries the operator marked as tiers, and each value is
bounded, scrubbed of this box's key for that tier and cut to printable ASCII: an upstream can
tell the client what it decided, never inject anything else. From every other upstream nothing
of its response headers reaches the client.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ..settings import CloudModel
from .scrub import scrub

PREFIX = "x-gateway-upstream-"
# Routes an edge-gateway reports; anything else is relayed as `other` (metric labels stay few).
ROUTES = frozenset({"local", "cloud", "cache"})
_CACHE_STATES = frozenset({"hit", "miss", "skip"})
_MAX_REASON = 512
_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_HEX = re.compile(r"[0-9a-f]{1,64}")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]+")


@dataclass(frozen=True, slots=True)
class TierReport:
    """One tier's account of its answer, as this box relays it."""

    tier: str  # this box's name for the tier (its cloud.models entry)
    route: str  # local | cloud | cache | other
    degraded: bool
    reason: str | None = None
    cache: str | None = None
    model_file: str | None = None  # sha256 prefix of the tier's GGUF, when it answered locally
    via: str | None = None  # the tier's own tier, when it too answered through one

    @classmethod
    def from_headers(
        cls, tier: str, headers: Mapping[str, str], model: CloudModel
    ) -> TierReport | None:
        """The report in a tier's response headers; None when it carries none (not a gateway)."""
        route = headers.get("x-gateway-route")
        if route is None:
            return None
        route = route.strip().lower()
        return cls(
            tier=tier,
            route=route if route in ROUTES else "other",
            degraded=headers.get("x-gateway-degraded", "").strip().lower() == "true",
            reason=_text(headers.get("x-gateway-reason"), model),
            cache=_one_of(headers.get("x-gateway-cache"), _CACHE_STATES),
            model_file=_match(headers.get("x-gateway-model-file"), _HEX),
            via=_match(headers.get("x-gateway-tier"), _TOKEN),
        )

    def headers(self) -> dict[str, str]:
        """The tier's decision under `x-gateway-upstream-*`, and this box's name for the tier."""
        h = {"x-gateway-tier": self.tier, PREFIX + "route": self.route}
        if self.degraded:
            h[PREFIX + "degraded"] = "true"
        if self.reason:
            h[PREFIX + "reason"] = self.reason
        if self.cache:
            h[PREFIX + "cache"] = self.cache
        if self.model_file:
            h[PREFIX + "model-file"] = self.model_file
        if self.via:
            h[PREFIX + "tier"] = self.via
        return h

    def as_dict(self) -> dict[str, Any]:
        """For the request log, the telemetry record and the status page."""
        return asdict(self)


def _text(value: str | None, model: CloudModel) -> str | None:
    if not value:
        return None
    # The tier may echo what it was sent: never relay this box's key for it.
    clean = _UNPRINTABLE.sub(" ", scrub(value, model)).strip()
    return clean[:_MAX_REASON] or None


def _one_of(value: str | None, allowed: frozenset[str]) -> str | None:
    v = (value or "").strip().lower()
    return v if v in allowed else None


def _match(value: str | None, pattern: re.Pattern[str]) -> str | None:
    v = (value or "").strip()
    return v if pattern.fullmatch(v) else None
