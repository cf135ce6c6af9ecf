"""`python -m gateway explain PROMPT`: the routing decision a prompt would get, and why."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..backends.health import Breaker
from ..errors import ContextLengthExceeded
from ..http.ops import explanation
from ..routing.complexity import ComplexityScorer
from ..routing.features import FeatureExtractor
from ..routing.policy import Router, UnknownModel
from ..routing.policy_file import PolicyError, load_policy
from ..routing.windows import context_windows
from ..schemas import ChatRequest
from ..settings import Settings


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Adds explain's arguments to `parser`."""
    parser.add_argument("prompt")
    parser.add_argument("--model", default="auto")
    parser.add_argument("--max-tokens", type=int)
    parser.add_argument("--policy", type=Path, help="policy file (default: policy.file)")
    parser.add_argument("--offline", action="store_true", help="as if the cloud were down")
    parser.add_argument("--config", type=Path)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Prints the decision as /v1/route explains it; 2 on a bad policy or an unknown model."""
    names = [m.name for m in settings.cloud.models]
    try:
        policy = load_policy(args.policy or settings.policy.file, cloud_names=names)
    except PolicyError as exc:
        print(f"edge-gateway: invalid policy:\n{exc}", file=sys.stderr)
        return 2
    req = ChatRequest.model_validate(
        {
            "model": args.model,
            "messages": [{"role": "user", "content": args.prompt}],
            **({"max_tokens": args.max_tokens} if args.max_tokens else {}),
        }
    )
    extractor = FeatureExtractor(scorer=ComplexityScorer(), local_n_ctx=settings.local.n_ctx)
    features = extractor.extract(
        req,
        tenant=None,
        cloud_reachable=not args.offline,
        local_queue_depth=0,
        local_queue_full=False,
        scorer=policy.scorer,  # the policy's learned weights, when it names some
        detector=policy.detector,  # and its privacy: section
    )
    local_names = [settings.local.model_name, *(m.name for m in settings.local.models)]
    windows = context_windows(settings.cloud.models)
    router = Router(cloud_names=names, local_names=local_names, windows=windows)
    try:
        decision = router.decide(policy, features)
    except UnknownModel:
        print(f"edge-gateway: unknown model {args.model!r}", file=sys.stderr)
        return 2
    except ContextLengthExceeded as exc:
        print(f"edge-gateway: {exc.message}", file=sys.stderr)
        return 2

    class _NoBreakers:
        breakers: dict[str, Breaker] = {}

    print(json.dumps(explanation(features, decision, _NoBreakers()), indent=2))
    return 0
