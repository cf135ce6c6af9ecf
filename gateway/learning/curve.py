"""The routing curve of the box's own labels, for the status page (GET /admin/routing-curve).

The same curve `eval-router --plot` draws (gateway/routing/curves.py): the share of the
"cloud should have answered" labels recovered against the share of requests sent to the
cloud, highest scores first, for the scorer in force, prompt length and random; and where the
policy's complexity threshold sits on it. Computed from the stored feature vectors (the label
store keeps no text unless told to), off the event loop, and only once the store holds
`learning.curve_min_labels` trainable labels: a curve over a handful is noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..durable import Record
from ..routing.complexity import Scorer, squash
from ..routing.curves import gap_curve, random_curve, recovered_at, share_at
from ..routing.training import gain_apgr
from .labels import trains_router
from .verdict import current_raw


def _squash(scorer: Scorer, raw: float) -> float:
    """The score in [0, 1] a policy threshold compares, from the linear score."""
    center = float(getattr(scorer, "center", 0.0))
    scale = float(getattr(scorer, "scale", 1.0)) or 1.0
    return squash(raw, center, scale)


def routing_curve(
    rows: Sequence[Record], scorer: Scorer, *, threshold: float | None, min_labels: int
) -> dict[str, Any]:
    """What the page draws: {"ready", "labels", "min_labels", "reason"?, "series"?, ...}."""
    rows = [r for r in rows if trains_router(r)]
    out: dict[str, Any] = {"ready": False, "labels": len(rows), "min_labels": min_labels}
    if len(rows) < min_labels:
        out["reason"] = f"{len(rows)} of the {min_labels} labels needed so far"
        return out
    gains = [float(r.body["label"]) for r in rows]
    if not sum(gains) > 0:
        out["reason"] = "no label says the cloud should have answered: nothing to recover"
        return out
    raws = [current_raw(scorer, r) for r in rows]
    if any(v is None for v in raws):
        out["reason"] = (
            "the weights in force key their terms by text and the store keeps no prompts"
        )
        return out
    scores = [v or 0.0 for v in raws]
    length = [float(r.body["v"]["dense"].get("length", 0.0)) for r in rows]
    series = {
        "policy scorer": gap_curve(scores, gains),
        "prompt-length": gap_curve(length, gains),
        "random": random_curve(),
    }
    out.update(
        ready=True,
        positives=round(sum(gains), 3),
        series={k: [list(p) for p in v] for k, v in series.items()},
        apgr={
            "policy scorer": round(gain_apgr(scores, gains), 4),
            "prompt-length": round(gain_apgr(length, gains), 4),
        },
        threshold=None,
    )
    if threshold is not None:
        share = share_at([_squash(scorer, v) for v in scores], threshold)
        out["threshold"] = {
            "complexity": threshold,
            "share": round(share, 4),
            "recovered": round(recovered_at(series["policy scorer"], share), 4),
        }
    return out
