"""Routing quality on RouteLLM-format CSVs: APGR and CPT(50%) of the policy's own scorer.

Wired as `python -m gateway eval-router FILE... [--weights W] [--per-file]`. A CSV has a
`prompt` column and two correctness columns holding True/False, one for the weak (local) model
and one for the strong (cloud) model; JSONL lines `{"prompt", "local_ok"}` say whether the
local answer was good enough (the cloud's is taken as right). Several files are pooled into
one figure per scorer: a routing policy sees one stream of traffic, not one file at a time.

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
from typing import Any

from ..routing import curves
from ..routing.complexity import ComplexityScorer, Scorer
from . import jsonl

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
    gains = [float(int(bool(s)) - int(bool(w))) for s, w in zip(strong, weak, strict=True)]
    if sum(gains) <= 0:
        raise ValueError("the strong model is not better than the weak one on this data")
    return curves.apgr(scores, gains), curves.cost_to_half(scores, gains)


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


def read_labelled(
    path: Path, weak_col: str = WEAK, strong_col: str = STRONG
) -> tuple[list[str], list[bool], list[bool]]:
    """A RouteLLM CSV, or JSONL of `{"prompt", "local_ok"}` (the cloud taken as right)."""
    if path.suffix.lower() not in (".jsonl", ".json"):
        return read_csv(path, weak_col, strong_col)
    prompts: list[str] = []
    weak: list[bool] = []
    for where, obj in jsonl.values(path):
        ok = obj.get("local_ok") if isinstance(obj, dict) else None
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
            raise ValueError(f'{where}: expected an object with a string "prompt"')
        if not isinstance(ok, bool):
            raise ValueError(f'{where}: eval-router needs "local_ok": true|false')
        prompts.append(obj["prompt"])
        weak.append(ok)
    if not prompts:
        raise ValueError(f"{path}: no rows")
    return prompts, weak, [True] * len(prompts)


def no_gap(weak: Sequence[bool], strong: Sequence[bool]) -> str | None:
    """Why APGR is undefined on this data (the strong model is not better), or None."""
    w, s = sum(map(bool, weak)), sum(map(bool, strong))
    if s > w:
        return None
    n = len(weak)
    return (
        f"the strong model is not better than the weak one here "
        f"(weak {w / n * 100:.1f}%, strong {s / n * 100:.1f}% correct): no figures"
    )


def evaluate(
    prompts: Sequence[str],
    weak: Sequence[bool],
    strong: Sequence[bool],
    scorer: Scorer,
    learned: Scorer | None = None,
) -> dict[str, Metrics]:
    """Each scorer's metrics next to random routing and prompt length, on the same prompts."""
    out = {"scorer": apgr([scorer.score(p).score for p in prompts], weak, strong)}
    if learned is not None:
        out["weights"] = apgr([learned.score(p).score for p in prompts], weak, strong)
    out["random"] = random_baseline(weak, strong)
    out["prompt-length"] = length_baseline(prompts, weak, strong)
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Adds eval-router's arguments to `parser`."""
    parser.add_argument(
        "files", nargs="+", type=Path, help="RouteLLM-format CSVs or JSONL (prompt, local_ok)"
    )
    parser.add_argument("--weak", default=WEAK, help=f"weak model's column (default {WEAK})")
    parser.add_argument(
        "--strong", default=STRONG, help=f"strong model's column (default {STRONG})"
    )
    parser.add_argument(
        "--weights", type=Path, help="also score with these train-router weights (`weights:`)"
    )
    parser.add_argument(
        "--per-file", action="store_true", help="each file's figures too, not only the pooled ones"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="draw the pooled routing curve of each scorer (needs the `plots` extra)",
    )
    parser.add_argument(
        "--policy",
        type=Path,
        help="policy whose complexity threshold --plot marks (default: policies/default.yaml)",
    )


def curve_series(
    prompts: Sequence[str],
    weak: Sequence[bool],
    strong: Sequence[bool],
    scorers: dict[str, Scorer],
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, list[float]]]:
    """Each scorer's routing curve, then prompt length's and random's; and the scores."""
    from ..routing.curves import gap_curve, random_curve

    gains = [float(int(bool(b)) - int(bool(a))) for a, b in zip(weak, strong, strict=True)]
    scores = {name: [sc.score(p).score for p in prompts] for name, sc in scorers.items()}
    series = {name: gap_curve(v, gains) for name, v in scores.items()}
    series["prompt-length"] = gap_curve([float(len(p)) for p in prompts], gains)
    series["random"] = random_curve()
    return series, scores


def policy_marker(
    policy_path: Path | None,
    series: dict[str, list[tuple[float, float]]],
    scores: dict[str, list[float]],
    on: str,
) -> Any:
    """Where the policy's complexity threshold sits on the `on` curve (None without one)."""
    from ..routing.curves import recovered_at, share_at
    from ..routing.policy_file import load_policy
    from ..settings import REPO_ROOT
    from .plot import Marker

    path = policy_path or REPO_ROOT / "policies" / "default.yaml"
    if policy_path is None and not path.is_file():
        return None
    threshold = load_policy(path).cloud_threshold()
    if threshold is None:
        return None
    share = share_at(scores[on], threshold)
    return Marker(
        on,
        share,
        recovered_at(series[on], share),
        f"{path.name}: complexity >= {threshold:g}, {share:.0%} to the cloud",
    )


def write_plot(
    path: Path,
    pooled: tuple[list[str], list[bool], list[bool]],
    scorers: dict[str, Scorer],
    policy_path: Path | None,
    title: str,
) -> list[str]:
    """The --plot PNG of the pooled data; the names of the series drawn."""
    from .plot import plot_curves

    series, scores = curve_series(*pooled, scorers)
    on = "weights" if "weights" in scorers else "scorer"
    marker = policy_marker(policy_path, series, scores, on)
    return plot_curves(path, series, title=title, marker=marker)


def run(args: argparse.Namespace) -> int:
    """Prints the pooled metrics (and each file's, with --per-file); 2 on unreadable input.

    The line `scorer:` is the shipped scorer, `weights:` the --weights file. A file where the
    strong model is not better than the weak one gets a note instead of figures; its prompts
    still count in the pooled figures.
    """
    from ..routing.learned import LearnedScorer

    scorer = ComplexityScorer()
    learned: Scorer | None = None
    names: list[str] = []
    sizes: dict[str, int] = {}
    notes: dict[str, str] = {}
    results: dict[str, dict[str, Metrics]] = {}
    pooled: tuple[list[str], list[bool], list[bool]] = ([], [], [])
    try:
        if args.weights is not None:
            learned = LearnedScorer.load(args.weights)
        for path in args.files:
            prompts, weak, strong = read_labelled(path, args.weak, args.strong)
            name = str(path)
            names.append(name)
            sizes[name] = len(prompts)
            why = no_gap(weak, strong)
            if why:
                notes[name] = why
            elif args.per_file or len(args.files) == 1:
                results[name] = evaluate(prompts, weak, strong, scorer, learned)
            pooled[0].extend(prompts)
            pooled[1].extend(weak)
            pooled[2].extend(strong)
    except (OSError, ValueError, csv.Error) as exc:  # WeightsError is a ValueError
        print(f"eval-router: {exc}", file=sys.stderr)
        return 2
    order = names if (args.per_file or len(names) == 1) else []
    if len(names) > 1:
        order.append("combined")
        sizes["combined"] = len(pooled[0])
        why = no_gap(pooled[1], pooled[2])
        if why:
            notes["combined"] = why
        else:
            results["combined"] = evaluate(*pooled, scorer, learned)
    if getattr(args, "plot", None) is not None and "combined" not in notes and results:
        from ..routing.policy_file import PolicyError
        from .plot import PlotError

        scorers: dict[str, Scorer] = {"scorer": scorer}
        if learned is not None:
            scorers["weights"] = learned
        n = len(pooled[0])
        title = f"{', '.join(Path(x).name for x in names[:3])}{' ...' if len(names) > 3 else ''}"
        try:
            drawn = write_plot(args.plot, pooled, scorers, args.policy, f"{title} ({n} prompts)")
        except (PlotError, PolicyError) as exc:
            print(f"eval-router: {exc}", file=sys.stderr)
            return 2
        print(
            f"wrote {args.plot}: {', '.join(drawn)}", file=sys.stderr if args.json else sys.stdout
        )
    if args.json:
        out: dict[str, Any] = {}
        for name in [*order, *(n for n in notes if n not in order)]:
            entry: dict[str, Any] = {"prompts": sizes[name]}
            if name in notes:
                entry["note"] = notes[name]
            for k, (a, c) in results.get(name, {}).items():
                entry[k] = {"apgr": a, "cpt50": c}
            out[name] = entry
        print(json.dumps(out, indent=2))
    else:
        for name in names:
            if name in notes and name not in order:
                print(f"note: {name}: {notes[name]}; pooled with the other files")
        for name in order:
            print(f"== {name} ({sizes[name]} prompts)")
            if name in notes:
                print(f"note: {notes[name]}")
            for label, (a, c) in results.get(name, {}).items():
                print(f"{label}: APGR={a:.3f} CPT50={c * 100:.1f}%")
    return 0 if results else 1
