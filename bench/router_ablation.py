"""Which part of `train-router` earns its APGR: target, features, penalty (the ablation table).

    .venv/bin/python -m bench.router_ablation [--data ../shared/data/routing] [--seeds 0 1 2]

Every row is fitted on the train half of an in-domain split of the 29 MMLU subjects
(bench.ridge_baseline.split: sha256(f"{seed}:{prompt}") parity) and scored on the other half,
for each seed; the table prints each seed's APGR and their mean, beside the plain ridge of
bench.ridge_baseline and prompt length on the same halves. Rows change one thing at a time
from `train-router` as it ships ("shipped"): the target (gain regression or 0/1 logistic),
the word window (the first and last characters, or the whole prompt), numbers (folded to "0"
or kept), character n-grams, the dense features (all, or log length alone), the penalty
(chosen by 3-fold cross-validation on the train half, or fixed).
"""

from __future__ import annotations

import argparse
import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.ridge_baseline import gains, mmlu, ridge_apgr, split
from bench.router_validation import DATA, Rows, fast_apgr
from gateway.routing import learned
from gateway.routing.complexity import scan
from gateway.routing.learned import dense_features
from gateway.routing.linear import OBJECTIVES, Design, fit
from gateway.routing.training import Example, choose, fit_targets

_WORD_V1 = re.compile(r"[a-z]+|0")
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class Variant:
    label: str
    objective: str | None = None  # None: chosen with the penalty by CV, as train-router does
    window: int | None = None  # chars words are read from: None as shipped (1,100 + 400);
    # 3000: the whole scanned head and tail (scan()); other: that many (head + 400 tail)
    numbers: bool = True  # keep digits as they are (False: every number reads "0")
    chars: bool = False  # add character 3-5-grams within words
    dense: str = "all"  # "all" the dense features, or "length" alone
    l2: float | None = None  # None: 3-fold CV on the train half


def bag(text: str, v: Variant) -> set[str]:
    low = scan(text).lower()
    if v.window is None and v.numbers and not v.chars:
        return learned.terms(low)  # exactly what train-router reads
    if v.window is None:
        v = replace(v, window=learned.TERMS_CHARS)
    if v.window != 3000:
        low = text.lower()
        if len(low) > v.window:
            low = low[: v.window - 400] + "\n" + low[-400:]
    if v.numbers:
        words = learned._WORD.findall(low)
    else:
        words = _WORD_V1.findall(_DIGITS.sub("0", low))
    out = set(words)
    out.update(map(" ".join, itertools.pairwise(words)))
    if v.chars:
        for w in set(words):
            padded = f" {w} "
            for k in (3, 4, 5):
                out.update("#" + padded[i : i + k] for i in range(len(padded) - k + 1))
    return out


def design(prompts: list[str], v: Variant, vocab: dict[object, int] | None = None) -> Design:
    vecs = []
    for p in prompts:
        d = dense_features(p, scan(p).lower())
        if v.dense == "length":
            d = {"length": d["length"]}
        vecs.append({"dense": d, "terms": bag(p, v)})
    return Design.from_vectors(vecs, vocab)


def score(v: Variant, tr: Rows, te: Rows, seed: int) -> float:
    examples = [
        Example(p, 1.0 if (s and not w) else 0.0, float(int(s) - int(w)))
        for p, w, s in zip(*tr, strict=True)
    ]
    d = design(tr[0], v)
    objective, l2 = v.objective or OBJECTIVES[0], v.l2
    if l2 is None:
        objectives = OBJECTIVES if v.objective is None else (v.objective,)
        objective, l2, _ = choose(d, examples, seed, objectives)
    model = fit(d, fit_targets(examples, objective), l2_terms=l2, objective=objective)
    return fast_apgr(model.raw(design(te[0], v, d.vocab)), gains(te))


SHIPPED = Variant(
    "**train-router** (target and penalty by CV, 1,100 + 400 chars, numbers kept, all dense)"
)
VARIANTS: list[Variant] = [
    SHIPPED,
    Variant(
        "previous train-router (binary, 1,100 + 400 chars, numbers as 0)",
        objective="binary",
        window=1500,
        numbers=False,
    ),
    replace(
        SHIPPED, label="target fixed: gain (ridge on strong - weak), CV penalty", objective="gain"
    ),
    replace(SHIPPED, label="target fixed: binary (logistic), CV penalty", objective="binary"),
    replace(SHIPPED, label="words from the whole scanned 3,000 chars", window=3000),
    replace(SHIPPED, label="numbers folded to 0", numbers=False),
    replace(SHIPPED, label="dense: log length only", dense="length"),
    replace(SHIPPED, label="gain, penalty fixed at 1", objective="gain", l2=1.0),
    replace(SHIPPED, label="binary, penalty fixed at 1", objective="binary", l2=1.0),
    # Not in the default run (--only 9): about three times the terms, and the latency budget.
    replace(SHIPPED, label="+ character 3-5-grams of each word", chars=True),
]
DEFAULT_RUN = range(9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", type=int, nargs="*", help="indexes of VARIANTS to run")
    args = ap.parse_args()
    rows = mmlu(args.data)
    splits = [split(rows, s) for s in args.seeds]
    t0 = time.perf_counter()

    def report(label: str, f: Callable[[Rows, Rows, int], float]) -> None:
        got = [f(tr, te, s) for (tr, te), s in zip(splits, args.seeds, strict=True)]
        each = " | ".join(f"{a:.3f}" for a in got)
        print(f"| {label} | {each} | **{np.mean(got):.3f}** |", flush=True)

    seeds = " | ".join(f"seed {s}" for s in args.seeds)
    print(f"| scorer | {seeds} | mean |")
    print("| --- |" + " ---: |" * (len(args.seeds) + 1))
    report(
        "prompt length",
        lambda tr, te, s: fast_apgr(np.asarray([float(len(p)) for p in te[0]]), gains(te)),
    )
    report(
        "plain ridge (hashed word 1-2-grams + log length, gain, penalty 1)",
        lambda tr, te, s: ridge_apgr(tr, te),
    )
    for i, v in enumerate(VARIANTS):
        if i in (DEFAULT_RUN if args.only is None else args.only):
            report(v.label, lambda tr, te, s, v=v: score(v, tr, te, s))
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
