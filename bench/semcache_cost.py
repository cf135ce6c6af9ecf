"""What one semantic cache look-up costs: encode the question, search its partition, verify.

The gateway's own pieces (its encoder: the ONNX graph onnxruntime runs, as served, or
`--runtime gguf` for llama.cpp running the same weights; the in-process index; the verifier)
on a 50-word question, against a partition of 1,000 and of 100,000 stored
questions (the real question among random unit vectors: the search reads every row either
way). p50 and p99 of each step and of the whole, and the encoder's memory:

    .venv/bin/python -m bench.semcache_cost [--runs 500] [--threads 2] [--runtime onnx|gguf]
        [--gap-ms 0]

`--gap-ms` sleeps between look-ups, as sporadic traffic leaves the encoder idle.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time

import numpy as np

from gateway.semantic.gguf_encoder import ensure_gguf
from gateway.semantic.index import InProcessIndex
from gateway.semantic.onnx_encoder import ensure_onnx
from gateway.semantic.semcache import open_encoder
from gateway.semantic.verifier import verify

QUESTION = (
    "When I restart the packaging line after a weekend shutdown, what is the correct order of"
    " steps to bring the conveyor, the labeller and the palletiser back online safely, and"
    " which interlocks should I check on the control panel before I press start on line three"
    " again this Monday morning?"
)
STORED = QUESTION.replace("what is the correct order of steps", "in which order do I need")


def _pct(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs) * 1000, xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(
    runs: int, threads: int, runtime: str = "onnx", gap_s: float = 0.0
) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory() as d:
        before = _rss_mib()
        model = ensure_onnx(d) if runtime == "onnx" else ensure_gguf(d)
        enc = open_encoder(model, threads=threads, max_queue=64)
        stored = (await enc.embed([STORED]))[0][0]
        loaded = _rss_mib() - before
        out: dict[str, dict[str, float]] = {}
        rng = np.random.default_rng(7)
        for size in (1_000, 100_000):
            index = InProcessIndex(100_000, 4, 86_400, max_total=200_000)
            noise = rng.standard_normal((size - 1, stored.size)).astype(np.float32)
            noise /= np.linalg.norm(noise, axis=1, keepdims=True)
            for i, v in enumerate(noise):
                await index.add("p", v, f"q{i}", f"k{i}")
            await index.add("p", stored, STORED, "stored")
            encode: list[float] = []
            search: list[float] = []
            check: list[float] = []
            total: list[float] = []
            for _ in range(runs):
                if gap_s:
                    await asyncio.sleep(gap_s)
                t0 = time.perf_counter()
                vec = (await enc.embed([QUESTION]))[0][0]
                t1 = time.perf_counter()
                cands = await index.search("p", vec, k=3)
                t2 = time.perf_counter()
                verify(cands[0].question, QUESTION, cands[0].similarity)
                t3 = time.perf_counter()
                encode.append(t1 - t0)
                search.append(t2 - t1)
                check.append(t3 - t2)
                total.append(t3 - t0)
            row: dict[str, float] = {"entries": size, "encoder_rss_mib": round(loaded, 1)}
            for name, xs in (("encode", encode), ("search", search), ("verify", check)):
                p50, p99 = _pct(xs)
                row[f"{name}_p50_ms"], row[f"{name}_p99_ms"] = round(p50, 3), round(p99, 3)
            row["lookup_p50_ms"], row["lookup_p99_ms"] = (round(x, 3) for x in _pct(total))
            out[str(size)] = row
        await enc.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--threads", type=int, default=2, help="encoder threads (the gateway: 2)")
    ap.add_argument("--runtime", choices=("onnx", "gguf"), default="onnx")
    ap.add_argument("--gap-ms", type=float, default=0.0, help="idle time between look-ups")
    args = ap.parse_args()
    words = len(QUESTION.split())
    print(f"question: {words} words; {args.runtime}, {args.threads} threads, gap {args.gap_ms} ms")
    result = asyncio.run(measure(args.runs, args.threads, args.runtime, args.gap_ms / 1000))
    for size, row in result.items():
        print(size, row)


if __name__ == "__main__":
    main()
