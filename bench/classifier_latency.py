"""Latency of the routing classifier: the scorer alone, all features, and the policy decision.

    .venv/bin/python -m bench.classifier_latency [--n 10000] [--weights FILE]

Each row times `--n` single calls with `time.perf_counter` around each call and prints the
median, p99 and max in milliseconds. The mixed rows draw prompts (seeded) from GSM8K,
MT-Bench and some synthetic chat; the "~2,000-token" row uses only prompts of about 8,000
characters (GSM8K and MT-Bench text run together), the longest the scorer is specified for.
The "learned" rows load train-router weights (`--weights`, else weights trained here on the
29 MMLU subjects and GSM8K, about 52,000 terms) into a policy, as `scorer: {weights: ...}`
does, and report the memory they hold (tracemalloc; RSS growth is also printed but the
allocator may reuse freed pages, so it can read lower).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gateway.routing.complexity import ComplexityScorer
from gateway.routing.features import FeatureExtractor, Features
from gateway.routing.learned import LearnedScorer
from gateway.routing.policy import Router
from gateway.routing.policy_file import load_policy
from gateway.routing.tokens import encoder
from gateway.schemas import ChatRequest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data" / "routing"
_T = TypeVar("_T")
LONG_CHARS = 8000  # ~2,000 tokens of English
CHAT = [
    "Say hello in French.",
    "What is the capital of Spain?",
    "Summarize this: " + "The meeting covered budget, hiring and the roadmap. " * 40,
    "Write a Python function that parses ISO dates and explain its complexity.",
    "Contact me at jane@example.com or +44 20 7946 0958 about invoice 4111 1111 1111 1111.",
    " ".join(f"word{i}" for i in range(3000)),
]


def corpus() -> list[str]:
    """Synthetic chat plus GSM8K and MT-Bench prompts when the shared data is there."""
    pool = list(CHAT)
    gsm = DATA / "gsm8k_responses.csv"
    if gsm.is_file():
        with gsm.open(newline="", encoding="utf-8") as fh:
            pool += [row["prompt"] for row in csv.DictReader(fh)]
    mt = DATA / "mt_bench_questions.jsonl"
    if mt.is_file():
        for line in mt.read_text(encoding="utf-8").splitlines():
            pool += json.loads(line)["turns"]
    return pool


def prompts(n: int) -> list[str]:
    """`n` prompts drawn from the corpus with a fixed seed."""
    pool = corpus()
    rng = random.Random(0)
    return [rng.choice(pool) for _ in range(n)]


def long_prompts(count: int = 50) -> list[str]:
    """`count` distinct prompts of about LONG_CHARS characters, built from the corpus."""
    pool = corpus()
    rng = random.Random(1)
    out = []
    for _ in range(count):
        parts: list[str] = []
        size = 0
        while size < LONG_CHARS:
            parts.append(rng.choice(pool))
            size += len(parts[-1]) + 1
        out.append("\n".join(parts)[:LONG_CHARS])
    return out


def _distinct(text: str, i: int) -> str:
    return f"{text} (request {_word(i)})"


def _word(i: int) -> str:
    """A distinct word for each number, without digits (digits would wake the detectors)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        out += letters[i % 26]
        i //= 26
        if not i:
            return out


def _dense(i: int) -> str:
    rng = random.Random(i)
    parts = [
        f"Order #{rng.randint(10_000, 99_999_999)} shipped on 2024-0{rng.randint(1, 9)}-1{i % 10}.",
        f"Total {rng.randint(1, 99)} {rng.randint(100, 999)},{rng.randint(10, 99)} EUR incl. VAT.",
        f"Version {rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)} is installed.",
        f"Meter reading {rng.randint(1000, 99999)}.{rng.randint(0, 9)} kWh, lot 2023-0{i % 9}.",
        "The meeting covered budget, hiring and the roadmap for the next quarter.",
    ]
    body = []
    while sum(len(p) + 1 for p in body) < 1900:
        body.append(rng.choice(parts))
    body.insert(
        len(body) // 2,
        f"Call me on +33 6 {rng.randint(10, 99)} 34 56 78 or {_word(i)}@example.org.",
    )
    return " ".join(body)[:2000]


def _chat(text: str) -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": "auto", "messages": [{"role": "user", "content": text}]}
    )


def _stats(samples: list[float]) -> dict[str, float]:
    samples.sort()
    return {
        "median_ms": statistics.median(samples) * 1000,
        "p99_ms": samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000,
        "max_ms": samples[-1] * 1000,
    }


def _timed(call: Callable[[_T], object], args: Sequence[_T]) -> list[float]:
    """Seconds each call(arg) took, one arg at a time."""
    clock = time.perf_counter
    out = []
    for arg in args:
        t0 = clock()
        call(arg)
        out.append(clock() - t0)
    return out


def learned_weights(out: Path) -> Path:
    """train-router weights for the learned rows: from the shared data, else synthetic."""
    from gateway.routing.training import Example, dumps, train
    from gateway.tools.train_router import read_examples

    files = [*sorted((DATA / "mmlu").glob("*.csv")), DATA / "gsm8k_responses.csv"]
    examples: list[Example] = []
    if files[-1].is_file():
        for f in files:
            examples += read_examples(f)
    else:
        rng = random.Random(2)
        pool = corpus()
        examples = [Example(p, float(rng.random() < 0.3), 1.0) for p in pool * 3]
    out.write_bytes(dumps(train(examples, l2=1.0, sources=[str(f) for f in files]), out))
    return out


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def measure(n: int = 10_000, weights: Path | None = None) -> dict[str, Any]:
    """Timings of n calls per row: {"n": n, "rows": {name: {median_ms, p99_ms, max_ms}}}."""
    texts = prompts(n)
    longs = long_prompts()
    reqs = [
        ChatRequest.model_validate({"model": "auto", "messages": [{"role": "user", "content": t}]})
        for t in texts
    ]
    scorer = ComplexityScorer()
    encoder()  # built once at start-up in the gateway too
    extractor = FeatureExtractor(scorer=scorer, local_n_ctx=2048)
    router = Router(cloud_names=["cloud-model"], local_names=[])
    policy = load_policy(ROOT / "policies" / "default.yaml", cloud_names=["cloud-model"])

    def features_of(req: ChatRequest) -> Features:
        return extractor.extract(
            req,
            tenant=None,
            cloud_reachable=True,
            local_queue_depth=0,
            local_queue_full=False,
            detector=policy.detector,
        )

    def decision_of(req: ChatRequest) -> object:
        return router.decide(policy, features_of(req))

    import gc
    import tempfile
    import tracemalloc

    with tempfile.TemporaryDirectory() as tmp:
        path = weights or learned_weights(Path(tmp) / "router.json.gz")
        gc.collect()
        rss0 = _rss_mb()
        tracemalloc.start()
        learned = LearnedScorer.load(path)
        gc.collect()
        held_mb = tracemalloc.get_traced_memory()[0] / 2**20
        tracemalloc.stop()
        rss_added = _rss_mb() - rss0
        n_terms = len(learned.terms)

    def learned_decision_of(req: ChatRequest) -> object:
        f = extractor.extract(
            req,
            tenant=None,
            cloud_reachable=True,
            local_queue_depth=0,
            local_queue_full=False,
            scorer=learned,
            detector=policy.detector,
        )
        return router.decide(policy, f)

    # Distinct 2 KB chat prompts (no two alike, so the features memo never answers): plain
    # text, and text dense with numbers (dates, amounts, orders) holding a phone number and
    # an e-mail address, the detectors' busiest case.
    plain_2k = [_distinct(longs[i % len(longs)][:2000], i) for i in range(n)]
    dense_2k = [_dense(i) for i in range(n)]
    chat_2k = [_chat(t) for t in plain_2k]
    chat_dense = [_chat(t) for t in dense_2k]
    scan = policy.detector.find

    for text in texts[:200]:  # warm-up: regex caches, branch predictors, allocator
        scorer.score(text)
    rows: dict[str, list[float]] = {
        "complexity scorer": _timed(scorer.score, texts),
        "complexity scorer, ~2,000-token prompts": _timed(
            scorer.score, [longs[i % len(longs)] for i in range(n)]
        ),
        "all features": _timed(features_of, reqs),
        "features + policy decision": _timed(decision_of, reqs),
        "learned scorer": _timed(learned.score, texts),
        "learned scorer, ~2,000-token prompts": _timed(
            learned.score, [longs[i % len(longs)] for i in range(n)]
        ),
        "features + policy decision, learned": _timed(learned_decision_of, reqs),
        "features + decision, 2 KB chat prompt": _timed(decision_of, chat_2k),
        "features + decision, 2 KB dense with numbers": _timed(decision_of, chat_dense),
    }
    # Linear in the request's size: the privacy scan of 10 KB, 100 KB and 1 MB of the same
    # dense text, per KB.
    scaling = {}
    for kb in (10, 100, 1000):
        text = "\n".join(dense_2k[: kb // 2 + 1])[: kb * 1024]
        times = _timed(scan, [text] * max(3, min(50, 2000 // kb)))
        scaling[f"{kb} KB"] = statistics.median(times) * 1000 / kb
    return {
        "n": n,
        "scan_ms_per_kb": scaling,
        "rows": {k: _stats(v) for k, v in rows.items()},
        "learned_terms": n_terms,
        "learned_rss_mb": rss_added,
        "learned_heap_mb": held_mb,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="routing classifier latency")
    ap.add_argument("--n", type=int, default=10_000, help="calls per row")
    ap.add_argument("--weights", type=Path, help="train-router weights for the learned rows")
    args = ap.parse_args()
    result = measure(args.n, args.weights)
    print(f"{'what':<42}{'median ms':>11}{'p99 ms':>10}{'max ms':>10}   (n={result['n']})")
    for name, r in result["rows"].items():
        print(f"{name:<42}{r['median_ms']:>11.4f}{r['p99_ms']:>10.4f}{r['max_ms']:>10.4f}")
    per_kb = ", ".join(f"{k}: {v:.4f}" for k, v in result["scan_ms_per_kb"].items())
    print(f"privacy scan, ms per KB of dense text: {per_kb}")
    print(
        f"learned weights: {result['learned_terms']} terms; loading them held "
        f"{result['learned_heap_mb']:.1f} MB of Python heap, RSS grew "
        f"{result['learned_rss_mb']:.1f} MB"
    )


if __name__ == "__main__":
    main()
