"""What `GET /admin/status` returns: the status board, and what is true of the box right now.

Kept apart from gateway/status.py, which only collects: this module reads the whole gateway
(breakers, policy, cache, local model), so it sits with the HTTP layer that serves it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..services import Services
from ..status import CAUSES


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
        "learning": _learning(services),
    }


def _learning(services: Services) -> dict[str, Any] | None:
    """The label store's size and the last on-box retrain (None with learning off)."""
    learning = services.learning
    if learning is None:
        return None
    last = learning.retrainer.last
    return {
        "labels": len(learning.store),
        "last_retrain": last.summary() if last is not None else None,
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
                "tier": bool(m and m.tier),  # another edge-gateway: answers report their hop
                "state": b.state.name.lower(),
                "reachable": b.reachable,
                "changed_at": b.changed_at,
                "change_reason": CAUSES.get(b.change_reason, b.change_reason) or None,
                "last_failure": CAUSES.get(b.last_cause, b.last_cause) or None,
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
        from ..local.model import embedded_model_path

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
