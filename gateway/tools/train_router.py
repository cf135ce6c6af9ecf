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

The model and how its objective and penalty are chosen: gateway/routing/training.py.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..routing.linear import OBJECTIVES
from ..routing.training import Example, dumps, train
from . import jsonl
from .eval_router import STRONG, WEAK, read_csv


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f'{where}: "local_ok" must be true or false, not {value!r}')


def read_jsonl(path: Path) -> list[Example]:
    """Examples from `{"prompt", "local_ok"}` or `{"prompt", "score"}` lines."""
    out: list[Example] = []
    for where, obj in jsonl.values(path):
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
