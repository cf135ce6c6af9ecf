"""Latency of the routing classifier: the scorer alone, all features, and the policy decision.

.venv/bin/python -m bench.classifier_latency [--n 10000]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from gateway.routing.complexity import ComplexityScorer
from gateway.routing.features import FeatureExtractor
from gateway.routing.policy import Router, load_policy
from gateway.routing.tokens import encoder
from gateway.schemas import ChatRequest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "routing"
CHAT = [
    "Say hello in French.",
    "What is the capital of Spain?",
    "Summarize this: " + "The meeting covered budget, hiring and the roadmap. " * 40,
    "Write a Python function that parses ISO dates and explain its complexity.",
    "Contact me at jane@example.com or +44 20 7946 0958 about invoice 4111 1111 1111 1111.",
    " ".join(f"word{i}" for i in range(3000)),
]


def prompts(n: int) -> list[str]:
    pool = list(CHAT)
    gsm = DATA / "gsm8k_responses.csv"
    if gsm.is_file():
        with gsm.open(newline="", encoding="utf-8") as fh:
            pool += [row["prompt"] for row in csv.DictReader(fh)]
    mt = DATA / "mt_bench_questions.jsonl"
    if mt.is_file():
        for line in mt.read_text().splitlines():
            pool += json.loads(line)["turns"]
    rng = random.Random(0)
    return [rng.choice(pool) for _ in range(n)]


def _stats(samples: list[float]) -> dict[str, float]:
    samples.sort()
    return {
        "median_ms": statistics.median(samples) * 1000,
        "p99_ms": samples[int(len(samples) * 0.99)] * 1000,
        "max_ms": samples[-1] * 1000,
    }


def measure(n: int = 10_000) -> dict[str, Any]:
    texts = prompts(n)
    reqs = [
        ChatRequest.model_validate({"model": "auto", "messages": [{"role": "user", "content": t}]})
        for t in texts
    ]
    scorer = ComplexityScorer()
    encoder()  # built once at start-up in the gateway too
    extractor = FeatureExtractor(scorer=scorer, local_n_ctx=2048)
    router = Router(cloud_names=["cloud-model"], local_names=[])
    policy = load_policy(ROOT / "policies" / "default.yaml", cloud_names=["cloud-model"])
    rows: dict[str, list[float]] = {
        "complexity scorer": [],
        "all features": [],
        "features + policy decision": [],
    }
    clock = time.perf_counter
    for text, req in zip(texts, reqs, strict=True):
        t0 = clock()
        scorer.score(text)
        t1 = clock()
        f = extractor.extract(
            req, tenant=None, cloud_reachable=True, local_queue_depth=0, local_queue_full=False
        )
        t2 = clock()
        router.decide(
            policy,
            extractor.extract(
                req, tenant=None, cloud_reachable=True, local_queue_depth=0, local_queue_full=False
            ),
        )
        t3 = clock()
        rows["complexity scorer"].append(t1 - t0)
        rows["all features"].append(t2 - t1)
        rows["features + policy decision"].append(t3 - t2)
        del f
    return {"n": n, "rows": {k: _stats(v) for k, v in rows.items()}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    result = measure(ap.parse_args().n)
    print(f"{'what':<30}{'median ms':>12}{'p99 ms':>12}{'max ms':>12}   (n={result['n']})")
    for name, r in result["rows"].items():
        print(f"{name:<30}{r['median_ms']:>12.4f}{r['p99_ms']:>12.4f}{r['max_ms']:>12.4f}")


if __name__ == "__main__":
    main()
