"""The weights document of a learned scorer, fitted from labelled examples (linear.py).

One of two targets: ridge regression on the gain (strong minus weak correctness) or L2 logistic
regression on "weak wrong and strong right". Unless the objective and the penalty are given, the
target and the penalty on the word terms are chosen from a small grid by 3-fold
cross-validation over a seeded shuffle of the training prompts (mean APGR of the held-out
folds), then the model is refitted on everything. Weights are rounded
and written with sorted keys (gzip with a zero timestamp for .gz): the same data and seed
give the same bytes. `train-router` (gateway/tools/) and the on-box retrain (gateway/learning/)
both write their files here.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import curves
from .learned import (
    DENSE,
    FEATURE_VERSION,
    FORMAT,
    FORMAT_VERSION,
    HASHED_FORMAT_VERSION,
    TERM_HASH,
    vector,
)
from .linear import DENSE_L2, MIN_DF, OBJECTIVES, Design, Fitted, fit

L2_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
FOLDS = 3
DIGITS = 5  # significant digits kept in the file


@dataclass(frozen=True, slots=True)
class Example:
    prompt: str
    target: float  # what the model fits: 1 = send to the cloud
    gain: float  # what routing it to the cloud gains: strong - weak, or the target
    # Hashed features (learned.vector) when the text is not kept: label-store rows.
    vector: dict[str, Any] | None = None
    # How much this example counts in the fit, relative to the others (the on-box retrain
    # caps each API key's total so no key dominates); 1 for every example of a file.
    weight: float = 1.0


def gain_apgr(scores: Sequence[float], gains: Sequence[float]) -> float:
    """APGR with per-prompt gains (strong - weak for CSVs); nan when nothing can be gained."""
    return curves.apgr(scores, gains)


def _round(x: float) -> float:
    return float(f"{x:.{DIGITS}g}")


def calibrate(raw: Sequence[float]) -> tuple[float, float]:
    """(center, scale): the median raw score maps to 0.5, the 90th percentile to about 0.75."""
    ordered = sorted(raw)
    center = ordered[len(ordered) // 2]
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return center, max(1e-3, (p90 - center) / 1.1)


def fit_targets(examples: Sequence[Example], objective: str) -> list[float]:
    """What the model fits: the gain (strong - weak) for "gain", the 0/1 target for "binary"."""
    return [e.gain if objective == "gain" else e.target for e in examples]


def choose(
    d: Design,
    examples: Sequence[Example],
    seed: int,
    objectives: Sequence[str] = OBJECTIVES,
    grid: Sequence[float] = L2_GRID,
) -> tuple[str, float, dict[str, float]]:
    """The objective and terms penalty with the best mean APGR over seeded folds of the prompts.

    Returns (objective, l2, {"objective l2": mean APGR}). Neither target wins everywhere: on
    the shared MMLU subjects the 0/1 logistic ranks better, on other subjects the gain
    regression did (docs/ROUTING.md), so the training data decides.
    """
    idx = list(range(d.n))
    random.Random(seed).shuffle(idx)
    folds = [sorted(idx[k::FOLDS]) for k in range(FOLDS)]
    found: dict[tuple[str, float], list[float]] = {(o, l2): [] for o in objectives for l2 in grid}
    ys = {o: fit_targets(examples, o) for o in objectives}
    for k, va in enumerate(folds):
        tr = sorted(i for j, f in enumerate(folds) if j != k for i in f)
        dt, dv = d.subset(tr), d.subset(va)
        gains = [examples[i].gain for i in va]
        wtr = [examples[i].weight for i in tr]
        for o in objectives:
            # Strongest penalty first, each fit warm-started from the last: the path of
            # solutions is smooth in the penalty, so later fits take a few iterations.
            prev: Fitted | None = None
            for l2 in sorted(grid, reverse=True):
                prev = fit(
                    dt,
                    [ys[o][i] for i in tr],
                    l2_terms=l2,
                    objective=o,
                    weights=wtr,
                    warm=prev,
                )
                a = gain_apgr(list(prev.raw(dv)), gains)
                if not math.isnan(a):
                    found[(o, l2)].append(a)
    mean = {key: sum(v) / len(v) for key, v in found.items() if v}
    tried = {f"{o} {l2:g}": a for (o, l2), a in mean.items()}
    if not mean:
        return objectives[0], grid[len(grid) // 2], {}
    # Ties: the first objective listed, then the stronger penalty.
    best = max(mean, key=lambda key: (mean[key], -objectives.index(key[0]), key[1]))
    return best[0], best[1], tried


def train(
    examples: Sequence[Example],
    *,
    seed: int = 0,
    l2: float | None = None,
    use_terms: bool = True,
    sources: Sequence[str] = (),
    hashed: bool = False,
    objective: str | None = None,
) -> dict[str, Any]:
    """The weights document for `examples` (JSON-ready, deterministic).

    `objective` "gain" or "binary" (see `fit`); None chooses it with the penalty by
    cross-validation (with `l2` given and no objective: "gain").

    `hashed` (implied by any example without text) fits on hashed terms and writes a
    format-version-2 file, the kind the label store can be scored against.
    """
    if len(examples) < 10:
        raise ValueError(f"need at least 10 labelled prompts, got {len(examples)}")
    targets = [e.target for e in examples]
    if not 0 < sum(targets) < len(targets):
        raise ValueError("every prompt has the same label: nothing to learn")
    hashed = hashed or any(e.vector is not None for e in examples)
    vectors = [e.vector or vector(e.prompt) for e in examples] if hashed else []
    d = Design.from_vectors(vectors) if hashed else Design([e.prompt for e in examples])
    tried: dict[str, float] = {}
    if objective is not None and objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}")
    if use_terms and l2 is None:
        objective, chosen, tried = choose(
            d, examples, seed, OBJECTIVES if objective is None else (objective,)
        )
    else:
        chosen = math.inf if not use_terms else float(l2 or 0.0)
        objective = objective or OBJECTIVES[0]
    weights = [e.weight for e in examples]
    if any(not math.isfinite(w) or w <= 0 for w in weights):
        raise ValueError("example weights must be positive")
    model = fit(
        d,
        fit_targets(examples, objective),
        l2_terms=chosen if use_terms else 1.0,
        use_terms=use_terms,
        objective=objective,
        weights=weights,
    )
    raw = list(model.raw(d))
    center, scale = calibrate(raw)
    inverse = sorted(d.vocab, key=d.vocab.__getitem__)
    term_weights = {
        str(t): _round(float(v))
        for t, v in zip(inverse, model.terms, strict=False)
        if abs(v) >= 1e-4
    }
    digest = hashlib.sha256()
    for i, e in enumerate(examples):
        seen = json.dumps(vectors[i], sort_keys=True) if hashed else e.prompt
        weighed = "" if e.weight == 1.0 else f"\t{e.weight:.6g}"  # unweighted: as before
        digest.update(f"{e.target}{weighed}\t{seen}\n".encode())
    hashing = {"term_hash": TERM_HASH} if hashed else {}
    return {
        "format": FORMAT,
        "format_version": HASHED_FORMAT_VERSION if hashed else FORMAT_VERSION,
        **hashing,
        "feature_version": FEATURE_VERSION,
        "trained_on": {
            "files": [Path(s).name for s in sources],
            "prompts": len(examples),
            "positives": _round(sum(targets)),
            "sha256": digest.hexdigest(),
        },
        "training": {
            "model": (
                "ridge regression on strong minus weak"
                if objective == "gain"
                else "logistic regression, L2"
            ),
            "objective": objective,
            "seed": seed,
            "l2_terms": "none (no terms)" if not use_terms else _round(chosen),
            "l2_dense": DENSE_L2,
            "min_df": MIN_DF,
            "grid_apgr": {k: _round(v) for k, v in tried.items()},
        },
        "bias": _round(model.bias),
        "center": _round(center),
        "scale": _round(scale),
        "dense": {k: _round(float(v)) for k, v in zip(DENSE, model.dense, strict=True)},
        "terms": term_weights,
    }


def dumps(doc: dict[str, Any], path: Path) -> bytes:
    """The file's bytes: sorted JSON, gzip-compressed (no timestamp) when `path` ends in .gz."""
    raw = (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()
    if path.suffix == ".gz":
        return gzip.compress(raw, mtime=0)
    return raw
