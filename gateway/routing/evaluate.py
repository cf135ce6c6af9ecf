"""Routing quality on RouteLLM-format CSVs: APGR and CPT(50%) of the policy's own scorer.

APGR (average performance gap recovered): send prompts to the strong model in order of
decreasing score, from 0% to 100% of them; at each step accuracy is the weak model's on the
rest plus the strong model's on those sent. APGR is the area under that curve minus the weak
accuracy, over the gap between strong and weak accuracy. CPT(50%) is the share of strong
calls needed to recover half the gap.
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
_TRUE = {"true", "1", "yes"}


def apgr(
    scores: Sequence[float], weak: Sequence[bool], strong: Sequence[bool]
) -> tuple[float, float]:
    """(APGR, CPT50 as a fraction). Ties keep the input order (a stable sort)."""
    n = len(scores)
    if n == 0:
        raise ValueError("no prompts")
    weak_acc = sum(weak) / n
    gap = sum(strong) / n - weak_acc
    if gap <= 0:
        raise ValueError("the strong model is not better than the weak one on this data")
    order = sorted(range(n), key=lambda i: -scores[i])
    correct = sum(weak)
    pgr = [(correct / n - weak_acc) / gap]
    for i in order:
        correct += int(strong[i]) - int(weak[i])
        pgr.append((correct / n - weak_acc) / gap)
    area = sum((pgr[k] + pgr[k + 1]) / 2 for k in range(n)) / n
    cpt = next((k / n for k, p in enumerate(pgr) if p >= 0.5), 1.0)
    return area, cpt


def read_csv(
    path: Path, weak_col: str, strong_col: str
) -> tuple[list[str], list[bool], list[bool]]:
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [
            c for c in ("prompt", weak_col, strong_col) if c not in (reader.fieldnames or [])
        ]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        prompts, weak, strong = [], [], []
        for row in reader:
            prompts.append(row["prompt"])
            weak.append(row[weak_col].strip().lower() in _TRUE)
            strong.append(row[strong_col].strip().lower() in _TRUE)
    return prompts, weak, strong


def baselines(
    prompts: Sequence[str], weak: Sequence[bool], strong: Sequence[bool], scorer: ComplexityScorer
) -> dict[str, tuple[float, float]]:
    rand = [
        apgr([random.Random(seed).random() for _ in prompts], weak, strong) for seed in range(20)
    ]
    return {
        "scorer": apgr([scorer.score(p).score for p in prompts], weak, strong),
        "random": (statistics.mean(r[0] for r in rand), statistics.mean(r[1] for r in rand)),
        "prompt-length": apgr([float(len(p)) for p in prompts], weak, strong),
    }


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="RouteLLM-format CSV files")
    parser.add_argument("--weak", default=WEAK, help=f"weak model's column (default {WEAK})")
    parser.add_argument(
        "--strong", default=STRONG, help=f"strong model's column (default {STRONG})"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    scorer = ComplexityScorer()
    results: dict[str, dict[str, tuple[float, float]]] = {}
    all_prompts: list[str] = []
    all_weak: list[bool] = []
    all_strong: list[bool] = []
    for path in args.files:
        try:
            prompts, weak, strong = read_csv(path, args.weak, args.strong)
            results[str(path)] = baselines(prompts, weak, strong, scorer)
        except (OSError, ValueError) as exc:
            print(f"eval-router: {exc}", file=sys.stderr)
            return 2
        all_prompts += prompts
        all_weak += weak
        all_strong += strong
    if len(args.files) > 1:
        results["combined"] = baselines(all_prompts, all_weak, all_strong, scorer)
    if args.json:
        print(
            json.dumps(
                {
                    k: {n: {"apgr": a, "cpt50": c} for n, (a, c) in v.items()}
                    for k, v in results.items()
                }
            )
        )
        return 0
    for name, res in results.items():
        print(f"== {name}")
        for label, (a, c) in res.items():
            print(f"{label}: APGR={a:.3f} CPT50={c * 100:.1f}%")
    return 0
