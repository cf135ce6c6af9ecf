"""`python -m gateway policy check FILE...`: validates policy files as the gateway loads them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..routing.policy_file import PolicyError, load_policy
from ..settings import Settings


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Adds policy check's arguments to `parser`."""
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--config", type=Path)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """One line per file, `ok` or `FAIL` with the error; 1 when any file fails."""
    names = [m.name for m in settings.cloud.models]
    names += [m.name for m in settings.cloud.embedding_models]  # routes of /v1/embeddings
    # The same names the gateway checks a rule's `model:` against at start.
    local = [settings.local.model_name, *(m.name for m in settings.local.models)]
    failed = 0
    for path in args.files:
        try:
            policy = load_policy(path, cloud_names=names if names else None, local_models=local)
        except PolicyError as exc:
            print(f"FAIL {exc}")
            failed += 1
            continue
        print(
            f"ok   {path}: default={policy.default}, {len(policy.rules)} rules, "
            f"cache={policy.cache}, offline={policy.offline.order}"
        )
    return 1 if failed else 0
