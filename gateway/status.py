"""What the status page shows: recent decisions, per-minute traffic, and a snapshot of the box.

`StatusBoard` is fed once per answered request (gateway/http/observe.py) and keeps only
bounded state: a ring buffer of recent decisions and one bucket per minute for the last hour.
`snapshot` adds what is true right now (breakers, policy, local model) for `GET /admin/status`.
Nothing secret goes in: no keys, no upstream URLs, no text unless `ui.show_prompts`.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HOUR_MINUTES = 60
RECENT_MINUTES = 5
_TEXT_CHARS = 500  # shown prompt or answer text is cut to this
# Breaker causes (BackendUnavailable.cause) in words a technician on site can act on.
CAUSES = {
    "connect": "cannot connect (refused or unreachable)",
    "timeout": "no answer in time",
    "429": "rate limited (429)",
    "5xx": "provider errors (5xx)",
    "auth": "credentials rejected (401/403)",
}


@dataclass
class RecentDecision:
    """One accounted request, as the page lists it."""

    time: float
    path: str
    model: str | None
    route: str
    rule: str
    reason: str | None
    degraded: bool
    cache: str | None
    failover: str | None
    status: int
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    prompt: str | None = None
    answer: str | None = None
    # The hop below when a tier answered: its name, route, degraded mark, reason, cache, file.
    upstream: dict[str, Any] | None = None


@dataclass
class _Minute:
    start: int  # epoch seconds, a multiple of 60
    routes: Counter[str] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    tokens_saved: int = 0  # prompt + completion tokens of answers served from the cache
    local_tokens: int = 0
    local_seconds: float = 0.0


class StatusBoard:
    """Bounded in-memory accounting for the page: O(recent + 60 minutes) whatever the traffic."""

    def __init__(
        self,
        *,
        recent: int = 200,
        show_prompts: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.show_prompts = show_prompts
        self.recent: deque[RecentDecision] = deque(maxlen=recent)
        self._minutes: deque[_Minute] = deque(maxlen=HOUR_MINUTES)
        self._clock = clock
        self.total_requests = 0
        self.total_tokens_saved = 0
        self.policy_loaded_at = clock()
        self.policy_last_result = "loaded at start"

    def record(
        self,
        line: dict[str, Any],
        *,
        model: str | None,
        failovers: Any = None,
        text: tuple[str, str] | None = None,
    ) -> None:
        """One request's log line (gateway/http/observe.py) becomes one listed decision."""
        moves = [f"{src}->{dst} ({cause})" for src, dst, cause in failovers or ()]
        self.add(
            RecentDecision(
                time=self._clock(),
                path=line["path"],
                model=model,
                route=line["route"],
                rule=line["rule"],
                reason=line["reason"],
                degraded=line["degraded"],
                cache=line["cache"],
                failover=", ".join(moves) or None,
                status=line["status"],
                latency_ms=line["latency_ms"],
                prompt_tokens=line["prompt_tokens"],
                completion_tokens=line["completion_tokens"],
                prompt=text[0] if text else None,
                answer=text[1] if text else None,
                upstream=line.get("upstream"),
            )
        )

    def add(self, d: RecentDecision) -> None:
        if not self.show_prompts:
            d.prompt = d.answer = None
        else:
            d.prompt = d.prompt[:_TEXT_CHARS] if d.prompt else d.prompt
            d.answer = d.answer[:_TEXT_CHARS] if d.answer else d.answer
        self.recent.append(d)
        self.total_requests += 1
        m = self._minute(d.time)
        m.routes[d.route] += 1
        m.rules[d.rule] += 1
        if d.cache:
            m.cache[d.cache] += 1
        if d.status >= 400:
            m.errors += 1
        if d.route == "cache" and d.status < 400:
            saved = d.prompt_tokens + d.completion_tokens
            m.tokens_saved += saved
            self.total_tokens_saved += saved
        if d.route == "local" and d.status < 400 and d.completion_tokens:
            m.local_tokens += d.completion_tokens
            m.local_seconds += d.latency_ms / 1000

    def policy_reloaded(self, result: str) -> None:
        """Called by the policy store on every reload attempt ('success' or 'failure')."""
        if result == "success":
            self.policy_loaded_at = self._clock()
        self.policy_last_result = f"{result} at {self._clock():.0f}"

    def _minute(self, t: float) -> _Minute:
        start = int(t) // 60 * 60
        if self._minutes and self._minutes[-1].start == start:
            return self._minutes[-1]
        m = _Minute(start)
        self._minutes.append(m)  # the deque's bound drops the minute an hour old
        return m

    def _window(self, minutes: int) -> list[_Minute]:
        since = int(self._clock()) // 60 * 60 - (minutes - 1) * 60
        return [m for m in self._minutes if m.start >= since]

    def traffic(self) -> dict[str, Any]:
        """Per-route and per-rule counts over the last minutes and the hour, and a time line."""
        now_min = int(self._clock()) // 60 * 60
        by_start = {m.start: m for m in self._minutes}
        timeline = []
        for i in range(HOUR_MINUTES - 1, -1, -1):
            start = now_min - i * 60
            m = by_start.get(start)
            tps = m.local_tokens / m.local_seconds if m and m.local_seconds > 0 else None
            timeline.append(
                {
                    "t": start,
                    "routes": dict(m.routes) if m else {},
                    "errors": m.errors if m else 0,
                    "local_tokens_per_s": round(tps, 2) if tps is not None else None,
                }
            )
        return {
            "last_minutes": RECENT_MINUTES,
            "recent": _totals(self._window(RECENT_MINUTES)),
            "hour": _totals(self._window(HOUR_MINUTES)),
            "per_minute": timeline,
        }

    def local_tokens_per_s(self) -> float | None:
        """Completion tokens per second of local answers over the last few minutes."""
        window = self._window(RECENT_MINUTES)
        seconds = sum(m.local_seconds for m in window)
        return round(sum(m.local_tokens for m in window) / seconds, 2) if seconds > 0 else None

    def cache_summary(self) -> dict[str, Any]:
        hour = self._window(HOUR_MINUTES)
        counts: Counter[str] = Counter()
        for m in hour:
            counts.update(m.cache)
        hits = counts["hit"] + counts["semantic"]  # a semantic hit is a hit by meaning
        looked_up = hits + counts["miss"]
        return {
            "hour": {k: counts[k] for k in ("hit", "semantic", "miss", "skip")},
            "hit_rate": round(hits / looked_up, 4) if looked_up else None,
            "tokens_saved_hour": sum(m.tokens_saved for m in hour),
            "tokens_saved_total": self.total_tokens_saved,
        }


def _totals(minutes: list[_Minute]) -> dict[str, Any]:
    routes: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    for m in minutes:
        routes.update(m.routes)
        rules.update(m.rules)
    return {
        "requests": sum(routes.values()),
        "errors": sum(m.errors for m in minutes),
        "routes": dict(routes),
        "rules": dict(rules),
    }


# -- the snapshot behind GET /admin/status ---------------------------------------------------
