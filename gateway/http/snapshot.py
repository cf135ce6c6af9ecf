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

from aiohttp import web

from ..services import DISPATCHER, LEARNING, LIFECYCLE, LOCAL, POLICY_STORE, SETTINGS, STATUS
from ..status import CAUSES


def snapshot(app: web.Application) -> dict[str, Any]:
    board = app[STATUS]
    life = app[LIFECYCLE]
    now = time.time()
    return {
        "now": now,
        "started_at": life.started_at,
        "uptime_s": round(now - life.started_at, 1),
        "draining": life.draining,
        "show_prompts": board.show_prompts,
        "uplink": _uplink(app),
        "policy": _policy(app),
        "traffic": board.traffic(),
        "cache": {**board.cache_summary(), **_cache_store(app)},
        "local": _local(app),
        "recent": [asdict(d) for d in reversed(board.recent)],
        "recent_bound": board.recent.maxlen,
        "requests_total": board.total_requests,
        "learning": _learning(app),
    }


def _learning(app: web.Application) -> dict[str, Any] | None:
    """The label store's size and the last on-box retrain (None with learning off)."""
    learning = app.get(LEARNING)
    if learning is None:
        return None
    last = learning.retrainer.last
    return {
        "labels": len(learning.store),
        "last_retrain": last.summary() if last is not None else None,
    }


def _uplink(app: web.Application) -> dict[str, Any]:
    models = {m.name: m for m in app[SETTINGS].cloud.models}
    targets = []
    for name, b in app[DISPATCHER].breakers.items():
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
        "reachable": app[DISPATCHER].cloud_reachable() if targets else None,
        "targets": targets,
    }


def _policy(app: web.Application) -> dict[str, Any]:
    store, board = app[POLICY_STORE], app[STATUS]
    p = store.current
    return {
        "file": str(store.path),
        "default": p.default,
        "cache": p.cache,
        "scorer": "learned" if p.scorer is not None else "shipped",
        "rules": [{"name": r.name, "route": r.route, "enforce": r.enforce} for r in p.rules],
        "offline_order": list(p.offline.order),
        "loaded_at": board.policy_loaded_at,
        "last_reload": board.policy_last_result,
        "last_error": store.last_error,
    }


def _cache_store(app: web.Application) -> dict[str, Any]:
    dispatcher = app[DISPATCHER]
    if dispatcher.cache is None:
        return {"store": None}
    out: dict[str, Any] = {"store": "redis" if app[SETTINGS].cache.redis_url else "memory"}
    semantic = dispatcher.semantic
    if semantic is not None:
        out["semantic"] = {
            "enabled": dispatcher.policies.current.semantic_cache.enabled,
            "entries": semantic.index.entries(),
            "encoder": semantic.state,
        }
    return out


def _local(app: web.Application) -> dict[str, Any]:
    local = app[LOCAL]
    s = app[SETTINGS].local
    engine = local.engine
    kv = getattr(engine, "kv_bytes", None)
    return {
        "model": local.model_name,
        "file": _file_info(s.model_path),
        "ready": local.ready,
        "parallel": s.parallel,
        "slots_busy": local.slots_busy,
        "queue_depth": local.queue_depth,
        "queue_capacity": s.max_queue,
        "n_ctx_slot": local.n_ctx,
        "kv_mib": round(kv / 2**20, 1) if isinstance(kv, int | float) else None,
        "tokens_per_s": app[STATUS].local_tokens_per_s(),
        "rss_mib": _rss_mib(),
    }


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
