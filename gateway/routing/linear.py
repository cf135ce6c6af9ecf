"""The linear model under the learned scorer: the design matrix of a set of prompts (dense
features of learned.py plus the word terms) and a penalised fit by L-BFGS, deterministic.

numpy is imported here only, inside the functions: the request path (learned.py) never needs it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .complexity import scan
from .learned import DENSE, dense_features, terms

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Array = npt.NDArray[np.float64]

OBJECTIVES = ("gain", "binary")
DENSE_L2 = 1.0
MIN_DF = 3


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
