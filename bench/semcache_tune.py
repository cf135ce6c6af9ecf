"""Tune the semantic cache's verifier on the shared Quora pairs, and measure what it costs.

    .venv/bin/python -m bench.semcache_tune            # the table and the chosen defaults
    .venv/bin/python -m bench.semcache_tune --costs    # also: encode cost, RSS, vector search

Every question of /work/shared/data/semcache/qqp_pairs_tune.jsonl is embedded once with the
semantic cache's encoder (all-MiniLM-L6-v2 as a GGUF run by llama.cpp, gateway.semantic.
gguf_encoder) and cached under --cache (keyed by the GGUF's source hash and the questions), so
the next run starts at once. Each pair gets its cosine and the verifier's features
(gateway.semantic.verifier.pair_checks). The rules are fixed; the content check's form
(MISS_STEP, SWAP_REJECTS) is chosen by k-fold cross-validation, where the THRESHOLD of each
form is chosen on k-1 folds (the lowest whose accepted pairs reach --target precision there)
and counted on the held-out fold (mean over --seeds splits): the form with the most recall
at --target. Its THRESHOLD is then chosen once more on all pairs for the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from gateway.semantic import verifier
from gateway.semantic.gguf_encoder import encoder_settings, ensure_gguf, recorded_hash

DATA = Path("/work/shared/data/semcache/qqp_pairs_tune.jsonl")
THRESHOLDS = np.round(np.arange(0.85, 0.9951, 0.0025), 4)
MISS_STEPS = (0.0, 0.0025, 0.005, 0.01, 0.02)
MIN_ACCEPTED = 50  # a choice resting on fewer accepted training pairs is noise


def load(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    a, b, same = [], [], []
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            a.append(row["a"])
            b.append(row["b"])
            same.append(bool(row["same"]))
    return a, b, np.array(same)


async def _embed_all(questions: list[str], gguf: Path) -> np.ndarray:
    from gateway.local.embedder import LocalEmbedder

    embedder = LocalEmbedder(encoder_settings(gguf, max_request_tokens=1 << 20))
    try:
        out: list[np.ndarray] = []
        started = time.perf_counter()
        for i in range(0, len(questions), 128):
            # An empty question has no tokens: it embeds as "?" (no pair is decided by it).
            chunk = [q if q.strip() else "?" for q in questions[i : i + 128]]
            vectors, _ = await embedder.embed(chunk)
            out.extend(vectors)
            if i % 10240 == 0:
                print(
                    f"  embedded {i:,}/{len(questions):,} ({time.perf_counter() - started:.0f} s)"
                )
        return np.stack(out)
    finally:
        await embedder.close()


def embeddings(questions: list[str], cache: Path) -> np.ndarray:
    cache.mkdir(parents=True, exist_ok=True)
    gguf = ensure_gguf(cache / "models")
    key = hashlib.sha256((recorded_hash(gguf) or "").encode())
    for q in questions:
        key.update(q.encode() + b"\0")
    path = cache / f"embeddings-{key.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    print(f"embedding {len(questions):,} questions (cached in {path})")
    vectors = asyncio.run(_embed_all(questions, gguf)).astype(np.float32)
    np.save(path, vectors)
    return vectors


def pr(accept: np.ndarray, same: np.ndarray) -> tuple[int, float, float]:
    n = int(accept.sum())
    tp = int((accept & same).sum())
    return n, (tp / n if n else float("nan")), tp / max(1, int(same.sum()))


def margin(cos: np.ndarray, ok: np.ndarray, miss: np.ndarray, swap: np.ndarray, s: Shape) -> Any:
    """How far each pair's cosine clears its content steps: accepted iff margin >= threshold."""
    m = np.where(ok, cos - s[0] * miss, -np.inf)
    return np.where(swap, -np.inf, m) if s[1] else m


Shape = tuple[float, bool]  # (MISS_STEP, SWAP_REJECTS): the content check's form


def choose_threshold(m: np.ndarray, same: np.ndarray, target: float) -> float | None:
    """The lowest threshold on the grid whose accepted pairs reach the target precision."""
    finite = np.isfinite(m)
    order = np.sort(m[finite])
    pos = np.sort(m[finite & same])
    n = len(order) - np.searchsorted(order, THRESHOLDS, side="left")
    tp = len(pos) - np.searchsorted(pos, THRESHOLDS, side="left")
    prec = np.where(n > 0, tp / np.maximum(n, 1), 0.0)
    good = np.flatnonzero((prec >= target) & (n >= MIN_ACCEPTED))
    return float(THRESHOLDS[good[0]]) if len(good) else None


def cross_validate(
    m: np.ndarray, same: np.ndarray, target: float, folds: int, seed: int
) -> tuple[int, float, float]:
    """Threshold chosen on k-1 folds, pairs accepted counted on the held-out fold."""
    fold = np.random.default_rng(seed).permutation(len(same)) % folds
    acc = np.zeros(len(same), dtype=bool)
    for k in range(folds):
        tr, te = fold != k, fold == k
        t = choose_threshold(m[tr], same[tr], target)
        if t is not None:
            acc |= te & (m >= t)
    return pr(acc, same)


def cv(m: np.ndarray, same: np.ndarray, target: float, folds: int, seeds: int) -> tuple[float, ...]:
    """Mean of cross_validate over `seeds` fold splits: accepted, precision, recall."""
    runs = np.array([cross_validate(m, same, target, folds, seed) for seed in range(seeds)])
    if np.isnan(runs[:, 1]).all():  # nothing accepted in any split
        return (0.0, float("nan"), 0.0)
    return tuple(float(x) for x in np.nanmean(runs, axis=0))


def costs(gguf: Path) -> None:
    """Encode cost of one 50-word question, the encoder's RSS, and numpy vector search."""
    from gateway.local.embedder import LocalEmbedder
    from gateway.local.model import llama_lib

    def rss() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    question = (
        "Our packaging line stopped twice this morning because the conveyor motor overheated "
        "after about forty minutes of running at full speed, so what should the maintenance "
        "team check first, and which settings on the variable frequency drive could reduce "
        "the load without slowing down the whole production schedule for today?"
    )
    llama_lib()
    before = rss()

    async def run() -> list[float]:
        embedder = LocalEmbedder(encoder_settings(gguf, n_threads=2))
        try:
            await embedder.embed([question])
            loaded = rss()
            print(
                f"encoder RSS: +{loaded - before:.0f} MiB ({before:.0f} MiB with llama.cpp "
                f"imported, {loaded:.0f} MiB with the encoder loaded and one input embedded)"
            )
            times = []
            for _ in range(300):
                t0 = time.perf_counter()
                await embedder.embed([question])
                times.append(time.perf_counter() - t0)
            return times
        finally:
            await embedder.close()

    times = np.array(asyncio.run(run())) * 1000
    print(
        f"encode one {len(question.split())}-word question (LocalEmbedder, n_threads 2, 300 runs):"
        f" p50 {np.percentile(times, 50):.2f} ms, p99 {np.percentile(times, 99):.2f} ms"
    )
    rng = np.random.default_rng(0)
    for n in (1_000, 100_000):
        m = rng.standard_normal((n, 384)).astype(np.float32)
        m /= np.linalg.norm(m, axis=1, keepdims=True)
        for dtype in (np.float32, np.float16):
            stored = m.astype(dtype)
            q = m[n // 2].astype(dtype)
            for label, search in (
                ("argmax", lambda s=stored, q=q: int(np.argmax(s @ q))),
                ("top-5", lambda s=stored, q=q: np.argpartition(s @ q, -5)[-5:]),
            ):
                search()
                reps = 200 if n == 1_000 else 50
                t = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    search()
                    t.append(time.perf_counter() - t0)
                ms = np.array(t) * 1000
                print(
                    f"search {n:>7,} x 384 {np.dtype(dtype).name:7s} {label:6s}: "
                    f"p50 {np.percentile(ms, 50):7.3f} ms, p99 {np.percentile(ms, 99):7.3f} ms"
                    f" ({stored.nbytes / 2**20:.1f} MiB)"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/semcache_tune"))
    ap.add_argument("--target", type=float, default=0.96, help="precision the choice must reach")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=10, help="fold splits to average over")
    ap.add_argument("--costs", action="store_true", help="also measure encode and search costs")
    args = ap.parse_args()

    a, b, same = load(args.data)
    questions = sorted(set(a) | set(b))
    vectors = embeddings(questions, args.cache)
    index = {q: i for i, q in enumerate(questions)}
    ia = np.array([index[q] for q in a])
    ib = np.array([index[q] for q in b])
    cos = np.einsum("ij,ij->i", vectors[ia], vectors[ib])

    started = time.perf_counter()
    feats = [verifier.pair_checks(x, y) for x, y in zip(a, b, strict=True)]
    per_pair = (time.perf_counter() - started) / len(a) * 1e6
    reasons = np.array([f.veto() or "" for f in feats])
    miss = np.array([f.missing_stored + f.missing_asked for f in feats], dtype=float)
    print(
        f"{len(a):,} pairs, {int(same.sum()):,} labelled same; verifier features "
        f"{per_pair:.0f} us per pair"
    )

    ok = reasons == ""
    swap = np.array([bool(f.missing_stored and f.missing_asked) for f in feats])
    everything = np.ones(len(a), dtype=bool)
    plain = (0.0, False)

    print("\nfixed thresholds on all pairs (nothing fitted):")
    print(f"  {'rule':34s} {'accepted':>8s} {'precision':>9s} {'recall':>7s}")
    for t in (0.8, 0.9, 0.95, 0.97, 0.99):
        n, p, r = pr(cos >= t, same)
        print(f"  {f'cosine >= {t}':34s} {n:8,} {p:9.3f} {r:7.3f}")
    for t in (0.8, 0.9, 0.95, 0.97, 0.99):
        n, p, r = pr(ok & (cos >= t), same)
        print(f"  {f'cosine >= {t} + rules':34s} {n:8,} {p:9.3f} {r:7.3f}")

    k, seeds = args.folds, args.seeds
    print(f"\n{k}-fold cross-validation, mean of {seeds} splits: the threshold chosen on {k - 1}")
    print("folds (the lowest reaching the target precision there), counted on the held-out one.")
    print(f"content check forms at target {args.target}:")
    head = f"{'accepted':>8s} {'precision':>9s} {'recall':>7s}"
    print(f"  {'MISS_STEP':>9s} {'SWAP_REJECTS':>12s} {head}")
    results: dict[Shape, tuple[float, ...]] = {}
    for step in MISS_STEPS:
        for swap_rejects in (False, True):
            shape = (step, swap_rejects)
            results[shape] = cv(margin(cos, ok, miss, swap, shape), same, args.target, k, seeds)
            n, p, r = results[shape]
            print(f"  {step:9.4f} {swap_rejects!s:>12s} {n:8.0f} {p:9.3f} {r:7.3f}")
    reaching = [s for s, (_, p, _) in results.items() if p >= args.target]
    pool = reaching or list(results)
    # Most recall; on a tie the form that fails closed (swaps rejected), then precision.
    shape = max(pool, key=lambda s: (round(results[s][2], 3), s[1], results[s][1]))

    print("\nthe same at other targets (the trade-off; cross-validated as above):")
    print(f"  {'method':44s} {'target':>6s} {head}")
    for target in sorted({0.9, 0.92, 0.94, 0.95, args.target}):
        for name, m in (
            ("cosine alone", margin(cos, everything, miss, swap, plain)),
            ("cosine + rules", margin(cos, ok, miss, swap, plain)),
            (f"cosine + rules + content {shape[0]}/word", margin(cos, ok, miss, swap, shape)),
        ):
            n, p, r = cv(m, same, target, k, seeds)
            print(f"  {name:44s} {target:6.2f} {n:8.0f} {p:9.3f} {r:7.3f}")

    m = margin(cos, ok, miss, swap, shape)
    t = choose_threshold(m, same, args.target)
    print(f"\nchosen (content form by cross-validation, threshold on all pairs) at {args.target}:")
    if not reaching:
        print(f"  no content form reaches {args.target} cross-validated: the best recall is shown")
    if t is None:
        print("  no threshold reaches the target on all pairs")
    else:
        n, p, r = pr(m >= t, same)
        print(f"  THRESHOLD = {t}\n  MISS_STEP = {shape[0]}\n  SWAP_REJECTS = {shape[1]}")
        print(f"  in-sample: {n:,} accepted, precision {p:.3f}, recall {r:.3f}")
        print(
            f"  cross-validated: {results[shape][0]:.0f} accepted, precision "
            f"{results[shape][1]:.3f}, recall {results[shape][2]:.3f}"
        )
        shipped = (verifier.THRESHOLD, verifier.MISS_STEP, verifier.SWAP_REJECTS)
        n, p, r = pr(margin(cos, ok, miss, swap, shipped[1:]) >= shipped[0], same)
        print(f"  shipped {shipped}: {n:,} accepted, precision {p:.3f}, recall {r:.3f}")
        print(f"  pairs at cosine >= {t}, by verdict (all / labelled same):")
        labels = np.where(ok, np.where(m >= t, "ok", "content"), reasons)
        for reason in (*verifier.REASONS[:7], "content", "ok"):
            sel = (cos >= t) & (labels == reason)
            print(f"    {reason:9s} {int(sel.sum()):5,} / {int((sel & same).sum()):5,}")

    if args.costs:
        print()
        costs(ensure_gguf(args.cache / "models"))


if __name__ == "__main__":
    main()
