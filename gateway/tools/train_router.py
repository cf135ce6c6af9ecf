"""Fits a LearnedScorer from labelled prompts: `python -m gateway train-router FILE... --out W`.

Input files:
- RouteLLM-format CSVs (`prompt` plus the weak and strong models' True/False columns, as for
  eval-router): a prompt should go to the cloud when the weak model failed and the strong one
  succeeded;
- JSONL, one object per line, `{"prompt": ..., "local_ok": true|false}` (the local answer was
  good enough or not) or `{"prompt": ..., "score": x}` with x in [0, 1], 1 = only the cloud
  will do. Operators can write this from their own traffic.
- `--from-store STORE`: the box's own label store (gateway/learning/), which keeps hashed
  feature vectors, not text. Training from it writes hashed weights (format version 2) and
  hashes the terms of any files given with it the same way.

The model is linear over the features of learned.py (numpy, L-BFGS, deterministic), with one
of two targets: ridge regression on the gain (strong minus weak correctness) or L2 logistic
regression on "weak wrong and strong right". Unless `--objective` and `--l2` are given, the
target and the penalty on the word terms are chosen from a small grid by 3-fold
cross-validation over a seeded shuffle of the training prompts (mean APGR of the held-out
folds), then the model is refitted on everything. Weights are rounded
and written with sorted keys (gzip with a zero timestamp for .gz): the same data and seed
give the same bytes.

numpy is imported here only: the request path (learned.py) never needs it.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import json
import math
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..routing.complexity import scan
from ..routing.learned import (
    DENSE,
    FEATURE_VERSION,
    FORMAT,
    FORMAT_VERSION,
    HASHED_FORMAT_VERSION,
    TERM_HASH,
    dense_features,
    terms,
    vector,
)
from .eval_router import STRONG, WEAK, read_csv

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

L2_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
OBJECTIVES = ("gain", "binary")
FOLDS = 3
DENSE_L2 = 1.0
MIN_DF = 3
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


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f'{where}: "local_ok" must be true or false, not {value!r}')


def read_jsonl(path: Path) -> list[Example]:
    """Examples from `{"prompt", "local_ok"}` or `{"prompt", "score"}` lines."""
    out: list[Example] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{where}: invalid JSON: {exc}") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise ValueError(f'{where}: expected an object with a string "prompt"')
            if "local_ok" in obj:
                target = 0.0 if _bool(obj["local_ok"], where) else 1.0
            elif "score" in obj:
                s = obj["score"]
                if isinstance(s, bool) or not isinstance(s, int | float) or not 0 <= s <= 1:
                    raise ValueError(f'{where}: "score" must be a number in [0, 1]')
                target = float(s)
            else:
                raise ValueError(f'{where}: give "local_ok" (true/false) or "score" (0-1)')
            out.append(Example(obj["prompt"], target, target))
    if not out:
        raise ValueError(f"{path}: no examples")
    return out


def read_examples(path: Path, weak: str = WEAK, strong: str = STRONG) -> list[Example]:
    """Examples from a RouteLLM CSV or a JSONL file (by extension: .jsonl/.json = JSONL)."""
    if path.suffix.lower() in (".jsonl", ".json"):
        return read_jsonl(path)
    prompts, w, s = read_csv(path, weak, strong)
    return [
        Example(p, 1.0 if (b and not a) else 0.0, float(int(b) - int(a)))
        for p, a, b in zip(prompts, w, s, strict=True)
    ]


def gain_apgr(scores: Sequence[float], gains: Sequence[float]) -> float:
    """APGR with per-prompt gains (strong - weak for CSVs); nan when nothing can be gained."""
    gap = sum(gains)
    if gap <= 0:
        return math.nan
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    recovered, area = 0.0, 0.0
    for i in order:
        prev = recovered
        recovered += gains[i]
        area += (prev + recovered) / 2
    return area / gap / len(scores)


class Design:
    """Feature matrices of a set of prompts: dense (n x d) and the terms in CSR-like arrays."""

    def __init__(self, prompts: Sequence[str], vocab: dict[str, int] | None = None) -> None:
        lowered = [scan(p).lower() for p in prompts]
        rows = [dense_features(p, low) for p, low in zip(prompts, lowered, strict=True)]
        self._build(rows, [terms(low) for low in lowered], vocab)

    @classmethod
    def from_vectors(
        cls, vectors: Sequence[dict[str, Any]], vocab: dict[Any, int] | None = None
    ) -> Design:
        """The design of stored vectors (learned.vector): hashed terms, no text needed."""
        new = object.__new__(cls)
        new._build([v["dense"] for v in vectors], [set(v["terms"]) for v in vectors], vocab)
        return new

    def _build(
        self,
        dense_rows: Sequence[dict[str, float]],
        bags: Sequence[set[Any]],
        vocab: dict[Any, int] | None,
    ) -> None:
        import numpy as np

        index = {k: i for i, k in enumerate(DENSE)}
        dense = np.zeros((len(dense_rows), len(DENSE)))
        for r, row in enumerate(dense_rows):
            for k, v in row.items():
                dense[r, index[k]] = v
        if vocab is None:
            df: dict[str, int] = {}
            for bag in bags:
                for t in bag:
                    df[t] = df.get(t, 0) + 1
            vocab = {t: i for i, t in enumerate(sorted(t for t, c in df.items() if c >= MIN_DF))}
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for r, bag in enumerate(bags):
            norm = 1.0 / math.sqrt(len(bag)) if bag else 0.0
            hit = sorted(vocab[t] for t in bag if t in vocab)
            rows += [r] * len(hit)
            cols += hit
            vals += [norm] * len(hit)
        self.n = len(dense_rows)
        self.vocab = vocab
        self.dense = dense
        self.rows = np.asarray(rows, dtype=np.int64)
        self.cols = np.asarray(cols, dtype=np.int64)
        self.vals = np.asarray(vals, dtype=np.float64)

    def subset(self, keep: Sequence[int]) -> Design:
        """The same design restricted to rows `keep` (renumbered), sharing the vocabulary."""
        import numpy as np

        new = object.__new__(Design)
        pos = np.full(self.n, -1, dtype=np.int64)
        pos[np.asarray(keep, dtype=np.int64)] = np.arange(len(keep))
        mask = pos[self.rows] >= 0
        new.n = len(keep)
        new.vocab = self.vocab
        new.dense = self.dense[np.asarray(keep, dtype=np.int64)]
        new.rows = pos[self.rows[mask]]
        new.cols = self.cols[mask]
        new.vals = self.vals[mask]
        return new


@dataclass
class Fitted:
    bias: float
    dense: Array  # per DENSE feature, on raw (unstandardised) values
    terms: Array  # per vocabulary entry
    solution: Array  # the optimiser's own (standardised) weights: a warm start for the next fit

    def raw(self, d: Design) -> Array:
        import numpy as np

        z = self.bias + d.dense @ self.dense
        if len(self.terms):
            z = z + np.bincount(d.rows, weights=d.vals * self.terms[d.cols], minlength=d.n)
        return z


def fit(
    d: Design,
    targets: Sequence[float],
    *,
    l2_terms: float,
    l2_dense: float = DENSE_L2,
    use_terms: bool = True,
    objective: str = "gain",
    max_iter: int = 300,
    weights: Sequence[float] | None = None,
    warm: Fitted | None = None,
) -> Fitted:
    """A linear model on standardised dense features plus the terms, by L-BFGS.

    `objective` "gain": ridge regression on the targets (strong minus weak correctness for
    CSVs, in [-1, 1]); "binary": L2 logistic regression on targets in [0, 1]. `weights` scale
    each example's share of the loss (rescaled to mean 1, so the penalty means the same with
    or without them).
    """
    import numpy as np

    y = np.asarray(targets, dtype=np.float64)
    n = d.n
    sw = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    sw = sw * (n / sw.sum())
    mean = d.dense.mean(axis=0)
    std = d.dense.std(axis=0)
    live = std > 1e-12
    std = np.where(live, std, 1.0)
    xd = (d.dense - mean) / std * live
    nd, nt = len(DENSE), (len(d.vocab) if use_terms else 0)
    # Penalties scaled by n: l2 is "prompts' worth" of prior, whatever the data size.
    pen = np.concatenate([[0.0], np.full(nd, l2_dense), np.full(nt, l2_terms)]) / n

    def split(w: Array) -> tuple[float, Array, Array]:
        return float(w[0]), w[1 : 1 + nd], w[1 + nd :]

    def margin(w: Array) -> Array:
        b, wd, wt = split(w)
        z = b + xd @ wd
        if nt:
            z = z + np.bincount(d.rows, weights=d.vals * wt[d.cols], minlength=n)
        return z

    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    squared = objective == "gain"

    def loss_grad(w: Array) -> tuple[float, Array]:
        z = margin(w)
        if squared:
            loss = float(np.mean(sw * 0.5 * (z - y) ** 2)) + 0.5 * float(pen @ (w * w))
            r = sw * (z - y) / n
        else:
            # log(1 + e^z) - y z, stable for large |z|
            loss = float(np.mean(sw * (np.logaddexp(0.0, z) - y * z))) + 0.5 * float(pen @ (w * w))
            r = sw * (1.0 / (1.0 + np.exp(-z)) - y) / n
        g = np.empty_like(w)
        g[0] = r.sum()
        g[1 : 1 + nd] = xd.T @ r
        if nt:
            g[1 + nd :] = np.bincount(d.cols, weights=d.vals * r[d.rows], minlength=nt)
        return loss, g + pen * w

    start = warm.solution if warm is not None and len(warm.solution) == 1 + nd + nt else None
    w = _lbfgs(
        loss_grad, np.zeros(1 + nd + nt) if start is None else start.copy(), max_iter=max_iter
    )
    b, wd, wt = split(w)
    # Fold the standardisation into the weights: the file holds weights on raw features.
    raw_dense = np.where(live, wd / std, 0.0)
    bias = b - float(raw_dense @ mean)
    return Fitted(bias=bias, dense=raw_dense, terms=wt if nt else np.zeros(0), solution=w)


def _lbfgs(f: Any, w: Array, *, max_iter: int, m: int = 10, tol: float = 1e-7) -> Array:
    """Minimises a smooth convex f (returning loss and gradient) by L-BFGS with backtracking."""
    import numpy as np

    loss, g = f(w)
    s_hist: list[Array] = []
    y_hist: list[Array] = []
    for _ in range(max_iter):
        q = g.copy()
        alphas = []
        for s, yv in zip(reversed(s_hist), reversed(y_hist), strict=True):
            a = float(s @ q) / float(yv @ s)
            alphas.append(a)
            q -= a * yv
        if y_hist:
            q *= float(s_hist[-1] @ y_hist[-1]) / float(y_hist[-1] @ y_hist[-1])
        for (s, yv), a in zip(zip(s_hist, y_hist, strict=True), reversed(alphas), strict=True):
            q += s * (a - float(yv @ q) / float(yv @ s))
        direction = -q
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction: restart from the gradient
            s_hist.clear()
            y_hist.clear()
            direction, slope = -g, -float(g @ g)
        step = 1.0
        while True:
            w_new = w + step * direction
            loss_new, g_new = f(w_new)
            if loss_new <= loss + 1e-4 * step * slope or step < 1e-10:
                break
            step *= 0.5
        s, yv = w_new - w, g_new - g
        if float(s @ yv) > 1e-12:
            s_hist.append(s)
            y_hist.append(yv)
            if len(s_hist) > m:
                s_hist.pop(0)
                y_hist.pop(0)
        done = abs(loss - loss_new) <= tol * max(1.0, abs(loss))
        w, loss, g = w_new, loss_new, g_new
        if done or float(np.max(np.abs(g))) < 1e-9:
            break
    return w


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


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Adds train-router's arguments to `parser`."""
    parser.add_argument(
        "files", nargs="*", type=Path, help="RouteLLM-format CSVs and/or JSONL (prompt, local_ok)"
    )
    parser.add_argument(
        "--from-store",
        type=Path,
        metavar="STORE",
        help="also the labels of the box's label store (learning.store); writes hashed weights",
    )
    parser.add_argument(
        "--hashed",
        action="store_true",
        help="hashed terms (implied by --from-store): weights the on-box retrain can compare",
    )
    parser.add_argument("--out", type=Path, required=True, help="weights file (.json or .json.gz)")
    parser.add_argument("--weak", default=WEAK, help=f"weak model's CSV column (default {WEAK})")
    parser.add_argument(
        "--strong", default=STRONG, help=f"strong model's CSV column (default {STRONG})"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split that picks --l2")
    parser.add_argument(
        "--l2", type=float, help="penalty on the word terms (default: chosen on a held-out third)"
    )
    parser.add_argument(
        "--no-terms", action="store_true", help="length, structure and hand-set signals only"
    )
    parser.add_argument(
        "--objective",
        choices=OBJECTIVES,
        help="gain: ridge on strong minus weak; binary: logistic on weak wrong and strong "
        "right (default: chosen with the penalty on held-out thirds)",
    )


def run(
    args: argparse.Namespace, store_reader: Callable[[Path], list[Example]] | None = None
) -> int:
    """Trains and writes the weights file; 2 on unreadable or unusable input.

    `store_reader` reads a label store (gateway/learning/) for --from-store: handed in by the
    CLI so the router never imports the learning loop that builds on it.
    """
    store = getattr(args, "from_store", None)
    try:
        if not args.files and store is None:
            raise ValueError("give labelled files, --from-store STORE, or both")
        examples: list[Example] = []
        for path in args.files:
            examples += read_examples(path, args.weak, args.strong)
        if store is not None:
            if store_reader is None:
                raise ValueError("--from-store needs the label store reader")
            examples += store_reader(store)
        doc = train(
            examples,
            seed=args.seed,
            l2=args.l2,
            use_terms=not args.no_terms,
            sources=[str(p) for p in [*args.files, *([store] if store else [])]],
            hashed=store is not None or getattr(args, "hashed", False),
            objective=getattr(args, "objective", None),
        )
        data = dumps(doc, args.out)
        args.out.write_bytes(data)
    except (OSError, ValueError, csv.Error) as exc:
        print(f"train-router: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {len(examples)} prompts, {len(doc['terms'])} terms, "
        f"objective={doc['training']['objective']}, l2_terms={doc['training']['l2_terms']}, "
        f"{len(data) / 1024:.0f} KiB"
    )
    return 0
