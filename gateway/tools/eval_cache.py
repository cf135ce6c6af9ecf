"""Semantic cache quality on labelled question pairs: precision and recall against the threshold.

Wired as `python -m gateway eval-cache PAIRS.jsonl [--plot FILE] [--target-precision 0.95]
[--limit N] [--models-dir DIR]`. A line of PAIRS.jsonl is `{"a": "...", "b": "...", "same":
true|false}` (the format of the shared Quora pairs). Both questions are embedded with the
gateway's semantic encoder (all-MiniLM-L6-v2 as an ONNX graph, made once in the state dir's
`models` folder), and a pair is accepted at a threshold when its cosine reaches it; with the
verifier, also when `verify(a, b, cosine, threshold=t)` accepts, as the semantic cache asks it
(a = the stored question, b = the asked one). Precision is the share of accepted pairs labelled
same, recall the share of same-labelled pairs accepted. The default marked is the policy's
`semantic_cache.threshold` default, what the gateway serves with when a policy names none."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import GatewayError
from ..routing.policy_models import SemanticCacheConfig
from ..semantic import verifier
from . import jsonl

DEFAULT = float(SemanticCacheConfig.model_fields["threshold"].default)

THRESHOLDS = [round(0.80 + i / 100, 2) for i in range(20)]  # 0.80 .. 0.99
BATCH = 64  # texts per embedding call (the embedder caps tokens per call)
COSINE, VERIFIED = "cosine alone", "cosine + verifier"


@dataclass(frozen=True, slots=True)
class QuestionPair:
    a: str
    b: str
    same: bool


@dataclass(frozen=True, slots=True)
class ThresholdRow:
    threshold: float
    precision: float | None  # None when nothing is accepted
    recall: float | None  # None when no pair is labelled same
    accepted: int


def read_pairs(path: Path, limit: int | None = None) -> list[QuestionPair]:
    """The first `limit` pairs of a JSONL file; ValueError naming the line of a bad one."""
    pairs: list[QuestionPair] = []
    for where, obj in jsonl.values(path):
        if limit is not None and len(pairs) >= limit:
            break
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected an object")
        a, b, same = obj.get("a"), obj.get("b"), obj.get("same")
        if not (isinstance(a, str) and a.strip() and isinstance(b, str) and b.strip()):
            raise ValueError(f'{where}: "a" and "b" must be non-empty strings')
        if not isinstance(same, bool):
            raise ValueError(f'{where}: "same" must be true or false')
        pairs.append(QuestionPair(a, b, same))
    if not pairs:
        raise ValueError(f"{path}: no labelled pairs")
    return pairs


async def embed_cosines(pairs: Sequence[QuestionPair], model: Path) -> list[float]:
    """Each pair's cosine with the gateway's semantic encoder (each distinct text once):
    `model` is the default encoder's ONNX graph, or a sentence-encoder GGUF."""
    import numpy as np

    from ..semantic.semcache import open_encoder

    texts = list(dict.fromkeys(t for p in pairs for t in (p.a, p.b)))
    embedder = open_encoder(model, max_queue=1)
    vectors: dict[str, np.ndarray] = {}
    try:
        for i in range(0, len(texts), BATCH):
            chunk = texts[i : i + BATCH]
            out, _ = await embedder.embed(list(chunk))
            vectors.update(zip(chunk, out, strict=True))
    finally:
        await embedder.close()
    return [float(np.dot(vectors[p.a], vectors[p.b])) for p in pairs]


def curve(
    same: Sequence[bool],
    cosines: Sequence[float],
    accept: Callable[[int, float], bool] | None = None,
    thresholds: Sequence[float] = THRESHOLDS,
) -> list[ThresholdRow]:
    """Precision, recall and accepted count at each threshold: pair i is accepted at t when its
    cosine reaches t and `accept(i, t)` (the verifier's verdict) says so."""
    positives = sum(same)
    rows = []
    for t in thresholds:
        took = [
            s
            for i, (s, c) in enumerate(zip(same, cosines, strict=True))
            if c >= t and (accept is None or accept(i, t))
        ]
        hits, n = sum(took), len(took)
        recall = hits / positives if positives else None
        rows.append(ThresholdRow(t, hits / n if n else None, recall, n))
    return rows


def at_target(rows: Sequence[ThresholdRow], target: float) -> ThresholdRow | None:
    """The lowest threshold whose precision reaches `target`, or None."""
    return next((r for r in rows if r.precision is not None and r.precision >= target), None)


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _cells(row: ThresholdRow) -> str:
    return f"{_f(row.precision):>9} {_f(row.recall):>7} {row.accepted:>8}"


def _summary(row: ThresholdRow | None, rows: Sequence[ThresholdRow]) -> str:
    if row is None:
        some = [r for r in rows if r.precision is not None]
        best = max(some, key=lambda r: r.precision or 0.0) if some else None
        span = f"none of {rows[0].threshold:.2f}..{rows[-1].threshold:.2f} reaches it"
        if best is None:
            return f"{span} (nothing accepted)"
        return f"{span} (best: precision {_f(best.precision)} at {best.threshold:.2f})"
    return f"threshold {row.threshold:.2f}: precision {_f(row.precision)}, recall {_f(row.recall)}"


def report(
    results: dict[str, list[ThresholdRow]],
    defaults: dict[str, ThresholdRow],
    target: float,
    n: int,
    positives: int,
) -> list[str]:
    """The table and the summary lines."""
    lines = [
        f"{n} pairs, {positives} labelled same; stored = a, asked = b",
        f"{'':9}  {COSINE:<26} {VERIFIED}",
        f"{'threshold':>9}  {'precision':>9} {'recall':>7} {'accepted':>8}  "
        f"{'precision':>9} {'recall':>7} {'accepted':>8}",
    ]
    for r, v in zip(results[COSINE], results[VERIFIED], strict=True):
        lines.append(f"{r.threshold:>9.2f}  {_cells(r)}  {_cells(v)}")
    lines.append(f"target precision {target:g}:")
    for name, rows in results.items():
        lines.append(f"  {name}: {_summary(at_target(rows, target), rows)}")
    own = getattr(verifier, "THRESHOLD", DEFAULT)
    also = f"; the verifier's own default (verifier.THRESHOLD) is {own:g}" if own != DEFAULT else ""
    lines.append(f"shipped default threshold {DEFAULT:g} (policy semantic_cache.threshold){also}:")
    for name, d in defaults.items():
        lines.append(
            f"  {name}: precision {_f(d.precision)}, recall {_f(d.recall)}, {d.accepted} accepted"
        )
    return lines


def write_plot(path: Path, results: dict[str, list[ThresholdRow]], title: str) -> list[str]:
    """The --plot PNG: precision and recall of each method; the names of the series drawn."""
    from .plot import plot_threshold_curves

    series: dict[str, list[tuple[float, float]]] = {}
    for metric in ("precision", "recall"):
        for name, rows in results.items():
            points = [(r.threshold, getattr(r, metric)) for r in rows]
            series[f"{metric} ({name})"] = [(x, y) for x, y in points if y is not None]
    return plot_threshold_curves(
        path,
        series,
        title=title,
        threshold=DEFAULT,
        label=f"default {DEFAULT:g}",
        dashed=[k for k in series if k.endswith(f"({COSINE})")],
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Adds eval-cache's arguments to `parser`."""
    parser.add_argument("pairs", type=Path, help='JSONL of {"a", "b", "same": true|false}')
    parser.add_argument(
        "--target-precision", type=float, default=0.95, help="precision to find a threshold for"
    )
    parser.add_argument("--limit", type=int, help="read only the first N pairs")
    parser.add_argument(
        "--plot", type=Path, metavar="FILE.png", help="draw precision and recall (matplotlib)"
    )
    parser.add_argument(
        "--models-dir", type=Path, help="where the encoder's file goes (default: state.dir/models)"
    )
    parser.add_argument("--config", type=Path, help="settings YAML whose state.dir to use")


def run(args: argparse.Namespace, models_dir: Path) -> int:
    """Prints the table and the summary; 2 on unreadable input or a failing encoder."""
    from ..semantic.onnx_encoder import ensure_onnx
    from .plot import PlotError

    target = args.target_precision
    if not 0.0 < target <= 1.0 or (args.limit is not None and args.limit < 1):
        print("eval-cache: --target-precision must be in (0, 1], --limit >= 1", file=sys.stderr)
        return 2
    try:
        pairs = read_pairs(args.pairs, args.limit)
        model = ensure_onnx(models_dir)
        cosines = asyncio.run(embed_cosines(pairs, model))
    except (OSError, ValueError, GatewayError) as exc:
        print(f"eval-cache: {exc}", file=sys.stderr)
        return 2
    same = [p.same for p in pairs]

    def accept(i: int, threshold: float) -> bool:
        p = pairs[i]
        return verifier.verify(p.a, p.b, cosines[i], threshold=threshold).accept

    results = {COSINE: curve(same, cosines), VERIFIED: curve(same, cosines, accept)}
    defaults = {
        COSINE: curve(same, cosines, thresholds=[DEFAULT])[0],
        VERIFIED: curve(same, cosines, accept, [DEFAULT])[0],
    }
    print("\n".join(report(results, defaults, target, len(pairs), sum(same))))
    if args.plot is not None:
        try:
            drawn = write_plot(args.plot, results, f"{args.pairs.name} ({len(pairs)} pairs)")
        except PlotError as exc:
            print(f"eval-cache: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.plot}: {'; '.join(drawn)}")
    return 0
