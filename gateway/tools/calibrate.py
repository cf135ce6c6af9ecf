"""Thresholds for `route: cascade` from labelled prompts: `python -m gateway calibrate DATA...`.

Runs the local model (greedy, as the policy's settings load it) over labelled prompts, takes
each answer's confidence (mean or minimum token logprob, as the gateway computes it), and
prints, per threshold, the escalation rate and the quality kept:

- quality: the share of prompts answered well when the least confident ones go to the cloud
  (a kept prompt counts when the local answer was good, an escalated one when the cloud's
  was);
- quality kept: that quality over the all-cloud quality;
- random: the quality of escalating the same share at random, the bar confidence must beat;
- caught: the share of bad local answers that were escalated.

It also prints the AUC of both signals (0.5: no better than chance at telling good local
answers from bad ones). With `--out`, it writes a policy file whose cascade rule carries the
threshold that escalates `--target-rate` of these prompts: `policy check` accepts it, and its
rule can be copied into the operator's policy.

Data: the files `train-router` reads. JSONL lines `{"prompt", "local_ok"}` say whether the
local answer was good enough (the cloud's is taken as right; `"score"` lines count as good
below 0.5); RouteLLM CSVs give the weak model's correctness as `local_ok` and the strong
model's as the cloud's. Those CSV labels are about the weak model of the file (Mixtral), not
the embedded one: on them, calibrate measures whether the local model's confidence spots
hard prompts; for its own correctness, label its answers (JSONL).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..cascade import Confidence, of_logprobs, token_logprobs
from ..errors import GatewayError
from .eval_router import STRONG, WEAK, read_csv
from .train_router import read_jsonl

SIGNALS = ("mean", "min")
RATES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DIGITS = 4  # decimals of the written threshold


@dataclass(frozen=True, slots=True)
class Item:
    prompt: str
    local_ok: bool
    cloud_ok: bool


@dataclass(frozen=True, slots=True)
class Row:
    threshold: float  # escalate when the signal is below this
    rate: float
    quality: float
    kept: float  # quality over the all-cloud quality
    random: float
    caught: float


def read_items(path: Path, weak: str = WEAK, strong: str = STRONG) -> list[Item]:
    if path.suffix.lower() in (".jsonl", ".json"):
        return [Item(e.prompt, e.target < 0.5, True) for e in read_jsonl(path)]
    prompts, w, s = read_csv(path, weak, strong)
    return [Item(p, a, b) for p, a, b in zip(prompts, w, s, strict=True)]


def auc(scores: list[float], good: list[bool]) -> float:
    """P(a good item scores above a bad one), ties half (Mann-Whitney); nan without both."""
    pos = sum(good)
    neg = len(good) - pos
    if not pos or not neg:
        return math.nan
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, g in zip(ranks, good, strict=True) if g)
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def threshold_for(scores: list[float], rate: float) -> float:
    """A threshold (<= 0) under which about `rate` of `scores` fall."""
    s = sorted(scores)
    k = round(rate * len(s))
    if k <= 0:  # at or below the least confident answer, rounded down: none escalated
        return min(0.0, math.floor(s[0] * 10**DIGITS) / 10**DIGITS)
    elif k >= len(s):
        t = min(0.0, s[-1] + 10**-DIGITS)
    else:
        t = (s[k - 1] + s[k]) / 2
    return min(0.0, round(t, DIGITS))


def row(scores: list[float], items: list[Item], t: float) -> Row:
    n = len(items)
    up = [sc < t for sc in scores]
    good = sum(it.cloud_ok if u else it.local_ok for u, it in zip(up, items, strict=True))
    cloud = sum(it.cloud_ok for it in items)
    local = sum(it.local_ok for it in items)
    rate = sum(up) / n
    bad = n - local
    caught = sum(u and not it.local_ok for u, it in zip(up, items, strict=True))
    return Row(
        threshold=t,
        rate=rate,
        quality=good / n,
        kept=good / cloud if cloud else math.nan,
        random=(local * (1 - rate) + cloud * rate) / n,
        caught=caught / bad if bad else math.nan,
    )


async def measure(
    items: list[Item], config: Path | None, max_tokens: int
) -> list[Confidence | None]:
    """Each prompt's local answer confidence (None when the local model cannot take it)."""
    from ..local import LocalBackend
    from ..schemas import ChatRequest
    from ..settings import load_settings

    settings = load_settings(config)
    backend = LocalBackend(settings.local)
    await backend.load()
    room = asyncio.Semaphore(settings.local.parallel)

    async def one(item: Item) -> Confidence | None:
        req = ChatRequest.model_validate(
            {
                "model": "local",
                "messages": [{"role": "user", "content": item.prompt}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "logprobs": True,
                "top_logprobs": 0,
            }
        )
        async with room:
            try:
                done = await backend.complete(req, "chat")
            except GatewayError:  # e.g. beyond the local context: not a local prompt
                return None
        return of_logprobs(token_logprobs(done.obj))

    try:
        return list(await asyncio.gather(*(one(it) for it in items)))
    finally:
        await backend.close()


def policy_snippet(t: float, signal: str, to: str, summary: list[str]) -> str:
    key = "mean_logprob" if signal == "mean" else "min_logprob"
    notes = "".join(f"# {line}\n" for line in summary)
    return (
        "# Written by `python -m gateway calibrate`.\n"
        f"{notes}"
        "# Copy the cascade rule into your policy, after the privacy rules (it sends unsure\n"
        "# answers to the cloud). Check with: python -m gateway policy check FILE\n"
        "version: 1\n"
        "default: local\n"
        "rules:\n"
        "  - name: private-data-stays-local\n"
        "    enforce: true\n"
        "    when: {pii: true}\n"
        "    route: local\n"
        "  - name: cascade\n"
        "    route: cascade\n"
        "    cascade:\n"
        f"      to: {to}\n"
        f"      threshold: {{{key}: {t:.{DIGITS}f}}}\n"
        "      stream: local\n"
    )


def run(args: argparse.Namespace) -> int:
    if args.limit < 1 or args.max_tokens < 1:
        print("calibrate: --limit and --max-tokens are at least 1", file=sys.stderr)
        return 2
    if not 0 <= args.target_rate <= 1:
        print("calibrate: --target-rate is a share in [0, 1]", file=sys.stderr)
        return 2
    try:
        items = [it for path in args.files for it in read_items(path, args.weak, args.strong)]
    except (OSError, ValueError) as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 2
    random.Random(args.seed).shuffle(items)  # a fair sample of pooled files
    items = items[: args.limit]
    started = time.perf_counter()
    confs = asyncio.run(measure(items, args.config, args.max_tokens))
    seconds = time.perf_counter() - started
    pairs = [(it, c) for it, c in zip(items, confs, strict=True) if c is not None and c.tokens]
    skipped = len(items) - len(pairs)
    if len(pairs) < 2:
        print("calibrate: fewer than 2 prompts got a local answer", file=sys.stderr)
        return 2
    kept_items = [it for it, _ in pairs]
    signals = {
        "mean": [c.mean_logprob for _, c in pairs],
        "min": [c.min_logprob for _, c in pairs],
    }
    good = [it.local_ok for it in kept_items]
    n = len(pairs)
    print(
        f"{n} prompts ({skipped} skipped: no local answer), {sum(good)} with a good local "
        f"answer, {sum(it.cloud_ok for it in kept_items)} with a good cloud answer; "
        f"{seconds:.1f} s, max_tokens={args.max_tokens}"
    )
    for name in SIGNALS:
        print(
            f"AUC of the {name} token logprob (good local answer vs bad): "
            f"{auc(signals[name], good):.3f}"
        )
    scores = signals[args.signal]
    print(f"\nsignal: {args.signal} token logprob; escalate when below the threshold")
    print(
        f"{'threshold':>10} {'escalation rate':>15} {'quality':>8} {'quality kept':>12} "
        f"{'random':>7} {'caught':>7}"
    )
    for rate in RATES:
        r = row(scores, kept_items, threshold_for(scores, rate))
        print(
            f"{r.threshold:>10.4f} {r.rate:>15.1%} {r.quality:>8.3f} {r.kept:>12.1%} "
            f"{r.random:>7.3f} {r.caught:>7.1%}"
        )
    chosen = row(scores, kept_items, threshold_for(scores, args.target_rate))
    summary = [
        f"data: {', '.join(str(p) for p in args.files)} ({n} prompts, seed {args.seed})",
        f"target escalation rate {args.target_rate:.1%}: measured {chosen.rate:.1%}, "
        f"quality kept {chosen.kept:.1%} (random at that rate: {chosen.random:.3f} vs "
        f"{chosen.quality:.3f}); AUC {auc(scores, good):.3f}",
    ]
    print(f"\nchosen: {args.signal}_logprob < {chosen.threshold:.{DIGITS}f} ({summary[1]})")
    if args.plot is not None:
        code = _plot(args, kept_items, signals, chosen)
        if code:
            return code
    if args.out is not None:
        args.out.write_text(
            policy_snippet(chosen.threshold, args.signal, args.to, summary), encoding="utf-8"
        )
        print(f"wrote {args.out}")
    return 0


def _plot(
    args: argparse.Namespace, items: list[Item], signals: dict[str, list[float]], chosen: Row
) -> int:
    """The --plot PNG: the gap recovered against the escalation share, for both signals
    (least confident first), prompt length and random; the chosen threshold marked."""
    from ..routing.curves import gap_curve, random_curve, recovered_at
    from .plot import Marker, PlotError, plot_curves

    gains = [float(int(it.cloud_ok) - int(it.local_ok)) for it in items]
    series = {f"{name} logprob": gap_curve([-v for v in signals[name]], gains) for name in SIGNALS}
    series["prompt-length"] = gap_curve([float(len(it.prompt)) for it in items], gains)
    series["random"] = random_curve()
    if not series["prompt-length"]:
        print(
            "calibrate: --plot: the cloud is not better than the local model here", file=sys.stderr
        )
        return 2
    on = f"{args.signal} logprob"
    key = "mean_logprob" if args.signal == "mean" else "min_logprob"
    marker = Marker(
        on,
        chosen.rate,
        recovered_at(series[on], chosen.rate),
        f"{key} < {chosen.threshold:.{DIGITS}f}: {chosen.rate:.0%} escalated",
    )
    title = f"cascade: {', '.join(p.name for p in args.files[:3])} ({len(items)} prompts)"
    try:
        drawn = plot_curves(
            args.plot, series, title=title, marker=marker, xlabel="share of answers escalated"
        )
    except PlotError as exc:
        print(f"calibrate: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.plot}: {', '.join(drawn)}")
    return 0


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", type=Path, help="labelled JSONL or RouteLLM CSV files")
    p.add_argument("--target-rate", type=float, default=0.2, help="share to escalate")
    p.add_argument("--out", type=Path, help="write a policy file with the chosen threshold")
    p.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="draw gap recovered against escalation share (needs the `plots` extra)",
    )
    p.add_argument("--limit", type=int, default=200, help="prompts to run (a seeded sample)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=32, help="local answer length")
    p.add_argument("--signal", choices=SIGNALS, default="mean", help="which logprob to threshold")
    p.add_argument("--to", default="cloud", help="cascade.to of the written rule")
    p.add_argument("--weak", default=WEAK, help="CSV column of the local model's correctness")
    p.add_argument("--strong", default=STRONG, help="CSV column of the cloud's correctness")
    p.add_argument("--config", type=Path, help="settings YAML (the local model's settings)")
