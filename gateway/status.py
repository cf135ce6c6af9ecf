"""What the status page shows: recent decisions, per-minute traffic, and a snapshot of the box.

`StatusBoard` is fed once per answered request (gateway/http/observe.py) and keeps only
bounded state: a ring buffer of recent decisions and one bucket per minute for the last hour.
`snapshot` adds what is true right now (breakers, policy, local model) for `GET /admin/status`.
Nothing secret goes in: no keys, no upstream URLs, no text unless `ui.show_prompts`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .services import Services

HOUR_MINUTES = 60
RECENT_MINUTES = 5
_TEXT_CHARS = 500  # shown prompt or answer text is cut to this
# Breaker causes (BackendUnavailable.cause) in words a technician on site can act on.
_CAUSES = {
    "connect": "cannot connect (refused or unreachable)",
    "timeout": "no answer in time",
    "429": "rate limited (429)",
    "5xx": "provider errors (5xx)",
    "auth": "credentials rejected (401/403)",
}


@dataclass
class Decision:
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
        self.recent: deque[Decision] = deque(maxlen=recent)
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
            Decision(
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
            )
        )

    def add(self, d: Decision) -> None:
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
        looked_up = counts["hit"] + counts["miss"]
        return {
            "hour": {k: counts[k] for k in ("hit", "miss", "skip")},
            "hit_rate": round(counts["hit"] / looked_up, 4) if looked_up else None,
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


def snapshot(services: Services) -> dict[str, Any]:
    board = services.status
    now = time.time()
    return {
        "now": now,
        "started_at": services.started_at,
        "uptime_s": round(now - services.started_at, 1),
        "draining": services.draining,
        "show_prompts": board.show_prompts,
        "uplink": _uplink(services),
        "policy": _policy(services),
        "traffic": board.traffic(),
        "cache": {**board.cache_summary(), **_cache_store(services)},
        "local": _local(services),
        "recent": [asdict(d) for d in reversed(board.recent)],
        "recent_bound": board.recent.maxlen,
        "requests_total": board.total_requests,
    }


def _uplink(services: Services) -> dict[str, Any]:
    models = {m.name: m for m in services.settings.cloud.models}
    targets = []
    for name, b in services.dispatcher.breakers.items():
        m = models.get(name)
        targets.append(
            {
                "name": name,
                # litellm's model string names the provider; api_base may hold credentials.
                "model": m.model if m else None,
                "state": b.state.name.lower(),
                "reachable": b.reachable,
                "changed_at": b.changed_at,
                "change_reason": _CAUSES.get(b.change_reason, b.change_reason) or None,
                "last_failure": _CAUSES.get(b.last_cause, b.last_cause) or None,
                "consecutive_failures": b.consecutive,
            }
        )
    return {
        "configured": bool(targets),
        "reachable": services.dispatcher.cloud_reachable() if targets else None,
        "targets": targets,
    }


def _policy(services: Services) -> dict[str, Any]:
    store = services.policies
    p = store.current
    return {
        "file": str(store.path),
        "default": p.default,
        "cache": p.cache,
        "scorer": "learned" if p.scorer is not None else "shipped",
        "rules": [{"name": r.name, "route": r.route, "enforce": r.enforce} for r in p.rules],
        "offline_order": list(p.offline.order),
        "loaded_at": services.status.policy_loaded_at,
        "last_reload": services.status.policy_last_result,
        "last_error": store.last_error,
    }


def _cache_store(services: Services) -> dict[str, Any]:
    cache = services.dispatcher.cache
    if cache is None:
        return {"store": None}
    return {"store": "redis" if services.settings.cache.redis_url else "memory"}


def _local(services: Services) -> dict[str, Any]:
    local = services.local
    s = services.settings.local
    engine = local.engine
    kv = getattr(engine, "kv_bytes", None)
    return {
        "model": local.model_name,
        "file": _model_file(services),
        "ready": local.ready,
        "parallel": s.parallel,
        "slots_busy": local.slots_busy,
        "queue_depth": local.queue_depth,
        "queue_capacity": s.max_queue,
        "n_ctx_slot": local.n_ctx,
        "kv_mib": round(kv / 2**20, 1) if isinstance(kv, int | float) else None,
        "tokens_per_s": services.status.local_tokens_per_s(),
        "rss_mib": _rss_mib(),
    }


def _model_file(services: Services) -> dict[str, Any] | None:
    return _file_info(services.settings.local.model_path)


@functools.cache
def _file_info(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        from .backends.local.model import embedded_model_path

        try:
            path = embedded_model_path()
        except Exception:
            return None
    size = None
    with contextlib.suppress(OSError):
        size = round(path.stat().st_size / 2**20, 1)
    return {"name": path.name, "size_mib": size}  # the name only: no filesystem layout


def _rss_mib() -> float | None:
    """This process's resident memory (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
