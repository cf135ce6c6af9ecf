"""The plain ridge baseline `train-router` is measured against, and the in-domain half splits.

    .venv/bin/python -m bench.ridge_baseline [--data ../shared/data/routing] [--seeds 0 1 2]

The baseline is the textbook one, written here in numpy (no scikit-learn in the project):
word unigrams and bigrams (tokens of two or more word characters, numbers included, the whole
prompt, lower-cased) counted, hashed into 2^20 signed buckets (CRC-32 picks the bucket and the
sign), each row scaled to unit length, plus log(1 + characters) as one more column; ridge
regression (penalty 1, an unpenalised intercept) predicting strong-minus-weak correctness
(-1, 0 or 1), solved exactly enough by conjugate gradients on the normal equations.

A split is in-domain: every prompt of the 29 MMLU subjects goes to the train or the scored half
by the parity of sha256(f"{seed}:{prompt}"), so both halves hold every subject. Each seed is
another split. `bench.router_ablation` scores `train-router` and its variants on the same
splits.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import math
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.router_validation import DATA, Rows, fast_apgr, load, pool

BUCKETS = 1 << 20
RIDGE_ALPHA = 1.0
_TOKEN = re.compile(r"\b\w\w+\b")


def split(rows: Rows, seed: int) -> tuple[Rows, Rows]:
    """(train half, scored half) of `rows` by the parity of sha256(f"{seed}:{prompt}")."""
    halves: tuple[Rows, Rows] = (([], [], []), ([], [], []))
    for p, w, s in zip(*rows, strict=True):
        h = halves[int(hashlib.sha256(f"{seed}:{p}".encode()).hexdigest(), 16) % 2]
        h[0].append(p)
        h[1].append(w)
        h[2].append(s)
    return halves


def mmlu(data: Path) -> Rows:
    """The 29 MMLU subjects pooled."""
    sets = load(data)
    return pool([v for k, v in sorted(sets.items()) if k.startswith("mmlu_")])


def gains(rows: Rows) -> np.ndarray:
    return np.asarray(rows[2], dtype=float) - np.asarray(rows[1], dtype=float)


class Hashed:
    """Rows of hashed, unit-length word 1-2-gram counts (COO arrays) plus log length."""

    def __init__(self, prompts: Sequence[str]) -> None:
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for r, p in enumerate(prompts):
            words = _TOKEN.findall(p.lower())
            counts: dict[int, float] = {}
            for t in [*words, *map(" ".join, itertools.pairwise(words))]:
                h = zlib.crc32(t.encode())
                b, sign = h % BUCKETS, (1.0 if h & (1 << 31) else -1.0)
                counts[b] = counts.get(b, 0.0) + sign
            norm = math.sqrt(sum(v * v for v in counts.values())) or 1.0
            for b, v in counts.items():
                if v:
                    rows.append(r)
                    cols.append(b)
                    vals.append(v / norm)
        self.n = len(prompts)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.cols = np.asarray(cols, dtype=np.int64)
        self.vals = np.asarray(vals)
        self.length = np.log1p(np.asarray([len(p) for p in prompts], dtype=float))


class Ridge:
    """Ridge regression on a Hashed design; weights: intercept, log length, buckets."""

    def __init__(self, alpha: float = RIDGE_ALPHA) -> None:
        self.alpha = alpha

    def fit(self, x: Hashed, y: np.ndarray, *, tol: float = 1e-10, max_iter: int = 3000) -> Ridge:
        used, cols = np.unique(x.cols, return_inverse=True)
        self.used = used
        nt = len(used)
        pen = np.concatenate([[0.0, self.alpha], np.full(nt, self.alpha)])

        def xw(w: np.ndarray) -> np.ndarray:
            terms = np.bincount(x.rows, weights=x.vals * w[2 + cols], minlength=x.n)
            return w[0] + w[1] * x.length + terms

        def xtr(r: np.ndarray) -> np.ndarray:
            out = np.empty(2 + nt)
            out[0] = r.sum()
            out[1] = x.length @ r
            out[2:] = np.bincount(cols, weights=x.vals * r[x.rows], minlength=nt)
            return out

        def a(w: np.ndarray) -> np.ndarray:
            return xtr(xw(w)) + pen * w

        # Conjugate gradients on (X'X + pen) w = X'y; the intercept's column is unpenalised.
        w = np.zeros(2 + nt)
        b = xtr(y)
        r = b - a(w)
        p = r.copy()
        rs = float(r @ r)
        stop = tol * float(b @ b)
        for _ in range(max_iter):
            ap = a(p)
            step = rs / float(p @ ap)
            w += step * p
            r -= step * ap
            new = float(r @ r)
            if new <= stop:
                break
            p = r + (new / rs) * p
            rs = new
        self.w = w
        return self

    def predict(self, x: Hashed) -> np.ndarray:
        pos = np.searchsorted(self.used, x.cols)
        pos = np.minimum(pos, len(self.used) - 1)
        known = self.used[pos] == x.cols
        weights = np.where(known, self.w[2 + pos], 0.0)
        terms = np.bincount(x.rows, weights=x.vals * weights, minlength=x.n)
        return self.w[0] + self.w[1] * x.length + terms


def ridge_apgr(train: Rows, test: Rows, alpha: float = RIDGE_ALPHA) -> float:
    model = Ridge(alpha).fit(Hashed(train[0]), gains(train))
    return fast_apgr(model.predict(Hashed(test[0])), gains(test))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    rows = mmlu(args.data)
    for seed in args.seeds:
        tr, te = split(rows, seed)
        length = fast_apgr(np.asarray([float(len(p)) for p in te[0]]), gains(te))
        print(
            f"seed {seed}: train {len(tr[0])}, scored {len(te[0])}: ridge APGR="
            f"{ridge_apgr(tr, te):.3f}, prompt length {length:.3f}"
        )


if __name__ == "__main__":
    main()
