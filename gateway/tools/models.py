"""`python -m gateway models check FILE`: the memory estimate before a model is ever loaded."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..local import memory


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", required=True)
    check = sub.add_parser("check", help="estimate a GGUF's resident memory and whether it fits")
    check.add_argument("file", type=Path)
    check.add_argument("--n-ctx", type=int, help="context per slot (default local.n_ctx)")
    check.add_argument("--parallel", type=int, help="slots (default local.parallel)")
    check.add_argument("--budget-mib", type=int, help="a memory budget to compare with")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.add_argument("--config", type=Path)


def run(args: argparse.Namespace, n_ctx: int, parallel: int) -> int:
    """Exit 0 when it fits, 1 when it would be refused, 2 when the file is not a model."""
    try:
        est = memory.estimate(
            args.file, n_ctx=args.n_ctx or n_ctx, parallel=args.parallel or parallel
        )
    except memory.ModelFileError as exc:
        print(f"edge-gateway: {exc}")
        return 2
    report = est.describe()
    room, source = memory.available()
    report["available_mib"] = room // memory.MIB
    report["available_from"] = source
    budget = args.budget_mib * memory.MIB if args.budget_mib else None
    try:
        memory.check(est, budget=budget, name=args.file.name)
        report["fits"], report["refusal"] = True, None
    except memory.InsufficientMemory as exc:
        report["fits"], report["refusal"] = False, str(exc)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
    return 0 if report["fits"] else 1
