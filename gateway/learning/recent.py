"""Request ids the gateway recently issued, per tenant, open to client feedback.

Bounded in count (`learning.feedback_window`) and age (`learning.feedback_ttl_s`), in memory
only: after a restart, earlier ids get 404. Replicas sharing a state Redis keep them there
instead (gateway/learning/shared_feedback.py). Keyed by (tenant, request id), so a tenant can
only ever find its own requests, even when two tenants send the same `x-request-id`.
"""

from __future__ import annotations

import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..routing.learned import FEATURE_VERSION, vector_version


@dataclass
class Issued:
    dense: dict[str, float]
    terms: array[int]  # uint32 CRC-32 terms: a tenth of a list of ints
    route: str
    private: bool
    prompt: str | None  # only when learning.keep_prompts and not private
    at: float
    fv: int = FEATURE_VERSION  # the feature version the vector was computed with
    labelled: bool = False

    @classmethod
    def of(
        cls, vec: dict[str, Any], route: str, private: bool, prompt: str | None, at: float
    ) -> Issued:
        """From a learned.vector() result."""
        return cls(
            vec["dense"], array("I", vec["terms"]), route, private, prompt, at, vector_version(vec)
        )

    def vec(self) -> dict[str, Any]:
        # The version travels with the vector: a label without it reads as version 1 and
        # is never trained on.
        return {"fv": self.fv, "dense": self.dense, "terms": list(self.terms)}


class RecentRequests:
    def __init__(
        self, size: int, ttl_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[tuple[str | None, str], Issued] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(
        self,
        tenant: str | None,
        request_id: str,
        vec: dict[str, Any],
        *,
        route: str,
        private: bool,
        prompt: str | None,
    ) -> None:
        key = (tenant, request_id)
        self._items.pop(key, None)  # a reused id means the newest request
        self._items[key] = Issued.of(vec, route, private, prompt, self._clock())
        self._expire()
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def get(self, tenant: str | None, request_id: str) -> Issued | None:
        self._expire()
        return self._items.get((tenant, request_id))

    def _expire(self) -> None:
        limit = self._clock() - self.ttl_s
        items = self._items
        while items:
            key = next(iter(items))
            if items[key].at >= limit:
                return
            del items[key]
