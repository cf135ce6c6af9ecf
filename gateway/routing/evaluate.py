"""Routing quality on RouteLLM-format CSVs: APGR and CPT(50%) of the policy's own scorer.

Wired as `python -m gateway eval-router FILE.csv [...]`. A CSV has a `prompt` column and two
correctness columns holding True/False, one for the weak (local) model and one for the strong
(cloud) model.

APGR (average performance gap recovered): send prompts to the strong model in order of
decreasing score, from 0% to 100% of them, one prompt at a time; at each step accuracy is the
weak model's on the rest plus the strong model's on those sent. APGR is the area under that
curve minus the weak accuracy, over the gap between strong and weak accuracy. CPT(50%) is the
share of strong calls needed to recover half the gap, interpolated between steps.

Ties keep the file's order (a stable sort), which is what reproduces the RouteLLM README's
figures for prompt length (0.601) and the oracle (1.016) on its GSM8K file.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from .complexity import ComplexityScorer

WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
RANDOM_SEEDS = 20
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}

Metrics = tuple[float, float]  # (APGR, CPT50 as a fraction)


def apgr(scores: Sequence[float], weak: Sequence[bool], strong: Sequence[bool]) -> Metrics:
    """(APGR, CPT(50%) as a fraction) of routing by `scores`, higher score = cloud first."""
    n = len(scores)
    if n == 0 or len(weak) != n or len(strong) != n:
        raise ValueError("scores, weak and strong must be non-empty and of equal length")
    weak_correct = sum(map(bool, weak))
    gap = sum(map(bool, strong)) - weak_correct  # in prompts
    if gap <= 0:
        raise ValueError("the strong model is not better than the weak one on this data")
    order = sorted(range(n), key=lambda i: -scores[i])
    # Performance gap recovered after k prompts went to the strong model, k = 0..n.
    recovered = 0
    pgr = [0.0]
    for i in order:
        recovered += int(bool(strong[i])) - int(bool(weak[i]))
        pgr.append(recovered / gap)
    area = (sum(pgr) - (pgr[0] + pgr[-1]) / 2) / n  # trapezoids of width 1/n
    cpt = 1.0
    for k in range(1, n + 1):
        if pgr[k] >= 0.5:
            cpt = (k - 1 + (0.5 - pgr[k - 1]) / (pgr[k] - pgr[k - 1])) / n
            break
    return area, cpt


def random_baseline(
    weak: Sequence[bool], strong: Sequence[bool], seeds: int = RANDOM_SEEDS
) -> Metrics:
    """APGR and CPT(50%) of random routing, averaged over `seeds` fixed seeds."""
    runs = []
    for seed in range(seeds):
        rng = random.Random(seed)
        runs.append(apgr([rng.random() for _ in weak], weak, strong))
    return statistics.fmean(a for a, _ in runs), statistics.fmean(c for _, c in runs)


def length_baseline(
    prompts: Sequence[str], weak: Sequence[bool], strong: Sequence[bool]
) -> Metrics:
    """APGR and CPT(50%) of routing the longest prompts (in characters) first."""
    return apgr([float(len(p)) for p in prompts], weak, strong)


def _flag(value: str, path: Path, line: int, column: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{path}:{line}: column {column!r} holds {value!r}, expected True/False")


def read_csv(
    path: Path, weak_col: str = WEAK, strong_col: str = STRONG
) -> tuple[list[str], list[bool], list[bool]]:
    """Prompts and the weak and strong models' correctness from a RouteLLM-format CSV."""
    csv.field_size_limit(sys.maxsize)  # responses can be long
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        have = reader.fieldnames or []
        missing = [c for c in ("prompt", weak_col, strong_col) if c not in have]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
                f"(has {', '.join(repr(c) for c in have) or 'no header'})"
            )
        prompts: list[str] = []
        weak: list[bool] = []
        strong: list[bool] = []
        for row in reader:
            line = reader.line_num
            prompts.append(row["prompt"] or "")
            weak.append(_flag(row[weak_col] or "", path, line, weak_col))
            strong.append(_flag(row[strong_col] or "", path, line, strong_col))
    if not prompts:
        raise ValueError(f"{path}: no rows")
    return prompts, weak, strong


def evaluate(
    prompts: Sequence[str],
    weak: Sequence[bool],
    strong: Sequence[bool],
    scorer: ComplexityScorer,
) -> dict[str, Metrics]:
    """The scorer's metrics next to random routing and prompt length, on the same prompts."""
    return {
        "scorer": apgr([scorer.score(p).score for p in prompts], weak, strong),
        "random": random_baseline(weak, strong),
        "prompt-length": length_baseline(prompts, weak, strong),
    }


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Adds eval-router's arguments to `parser`."""
    parser.add_argument("files", nargs="+", type=Path, help="RouteLLM-format CSV files")
    parser.add_argument("--weak", default=WEAK, help=f"weak model's column (default {WEAK})")
    parser.add_argument(
        "--strong", default=STRONG, help=f"strong model's column (default {STRONG})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def run(args: argparse.Namespace) -> int:
    """Prints the metrics per file (and combined, for several); 2 on unreadable input."""
    scorer = ComplexityScorer()
    results: dict[str, dict[str, Metrics]] = {}
    sizes: dict[str, int] = {}
    all_prompts: list[str] = []
    all_weak: list[bool] = []
    all_strong: list[bool] = []
    try:
        for path in args.files:
            prompts, weak, strong = read_csv(path, args.weak, args.strong)
            results[str(path)] = evaluate(prompts, weak, strong, scorer)
            sizes[str(path)] = len(prompts)
            all_prompts += prompts
            all_weak += weak
            all_strong += strong
        if len(args.files) > 1:
            results["combined"] = evaluate(all_prompts, all_weak, all_strong, scorer)
            sizes["combined"] = len(all_prompts)
    except (OSError, ValueError, csv.Error) as exc:
        print(f"eval-router: {exc}", file=sys.stderr)
        return 2
    if args.json:
        out = {
            name: {
                "prompts": sizes[name],
                **{k: {"apgr": a, "cpt50": c} for k, (a, c) in res.items()},
            }
            for name, res in results.items()
        }
        print(json.dumps(out, indent=2))
        return 0
    for name, res in results.items():
        print(f"== {name} ({sizes[name]} prompts)")
        for label, (a, c) in res.items():
            print(f"{label}: APGR={a:.3f} CPT50={c * 100:.1f}%")
    return 0
