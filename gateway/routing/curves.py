"""The curve an operator routes by: share of the weak-to-strong gap recovered against the share
of requests sent to the cloud, when the highest scores go first.

Pure Python (no numpy, no plotting library): `eval-router`, `calibrate` and the status page
all draw the same thing from it. APGR is the area under this curve.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

POINTS = 51  # points per curve: enough for a smooth line, small enough for the status JSON


def cumulative_gains(scores: Sequence[float], gains: Sequence[float]) -> list[float]:
    """What sending the k highest-scored prompts to the cloud gains, k = 0..n. Ties keep the
    input order (a stable sort)."""
    if len(scores) != len(gains):
        raise ValueError("scores and gains must be of equal length")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    cumulative = [0.0]
    for i in order:
        cumulative.append(cumulative[-1] + gains[i])
    return cumulative


def apgr(scores: Sequence[float], gains: Sequence[float]) -> float:
    """APGR, the area under the gap curve (trapezoids of width 1/n): the one computation
    `eval-router`, the trainer's cross-validation and the status page share. nan when
    nothing can be gained (the gains do not sum above 0) or there are no prompts."""
    gap = float(sum(gains))
    if not scores or gap <= 0:
        return math.nan
    cumulative = cumulative_gains(scores, gains)
    area = sum((a + b) / 2 for a, b in itertools.pairwise(cumulative))
    return area / gap / len(scores)


def cost_to_half(scores: Sequence[float], gains: Sequence[float]) -> float:
    """CPT(50%): the share of prompts that must go to the cloud to recover half the gap
    (linear between prompts); 1.0 when half is never reached. Gains must sum above 0."""
    gap = float(sum(gains))
    cumulative = cumulative_gains(scores, gains)
    n = len(scores)
    for k in range(1, n + 1):
        before, after = cumulative[k - 1] / gap, cumulative[k] / gap
        if after >= 0.5:
            return (k - 1 + (0.5 - before) / (after - before)) / n
    return 1.0


def gap_curve(
    scores: Sequence[float], gains: Sequence[float], points: int = POINTS
) -> list[tuple[float, float]]:
    """(share sent to the cloud, share of the gap recovered) at `points` evenly spaced shares.

    `gains[i]` is what sending prompt i to the cloud gains (strong minus weak correctness, or
    a label in [0, 1]). Ties keep the input order (a stable sort), as `apgr` does. Empty
    when nothing can be gained (the gains do not sum above 0).
    """
    n = len(scores)
    if n != len(gains):
        raise ValueError("scores and gains must be of equal length")
    gap = float(sum(gains))
    if n == 0 or gap <= 0:
        return []
    cumulative = cumulative_gains(scores, gains)
    out = []
    for j in range(points):
        share = j / (points - 1)
        k = share * n
        lo = math.floor(k)
        hi = min(n, lo + 1)
        value = cumulative[lo] + (cumulative[hi] - cumulative[lo]) * (k - lo)
        out.append((round(share, 4), round(value / gap, 4)))
    return out


def random_curve(points: int = POINTS) -> list[tuple[float, float]]:
    """What routing at random recovers on average: as much of the gap as the share sent."""
    return [(round(j / (points - 1), 4), round(j / (points - 1), 4)) for j in range(points)]


def share_at(scores: Sequence[float], threshold: float) -> float:
    """The share of prompts a `complexity >= threshold` rule sends to the cloud."""
    return sum(1 for s in scores if s >= threshold) / len(scores) if scores else 0.0


def recovered_at(curve: Sequence[tuple[float, float]], share: float) -> float:
    """The curve's value at `share` (linear between its points)."""
    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x0 <= share <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (share - x0) / (x1 - x0)
    return curve[-1][1] if curve else 0.0
