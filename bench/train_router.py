"""The first, GSM8K-only tuning of the shipped scorer, kept for comparison (prints only).

The shipped weights now come from `python -m bench.router_validation --write`, which tunes on
MMLU subjects too and validates leave-subjects-out; this GSM8K-only recipe lost to prompt
length on MMLU. `--write` is refused so it cannot overwrite them.

    .venv/bin/python -m bench.train_router [--data ../shared/data/routing] [--write]

The split is fixed: a prompt belongs to the held-out half when sha256(prompt) is odd, so
anyone gets the same halves. Only the train half chooses weights (a coarse grid search for
the best APGR); the held-out half and MT-Bench are reported, never fitted. The hand-set task
markers (reasoning, code, maths, domain, questions, small talk, max_tokens) are kept as they
are in the weights file. `--write` saves the result to gateway/routing/complexity_weights.json.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import statistics
from pathlib import Path

from gateway.routing.complexity import DEFAULT_WEIGHTS, ComplexityScorer
from gateway.tools.eval_router import STRONG, WEAK, apgr, read_csv

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "routing"
TRAINED = ("fractions", "comparisons", "ratios", "sequence", "remainder", "number", "multiples")
GRID = (0.0, 0.15, 0.3, 0.6)


def held_out(prompt: str) -> bool:
    return int(hashlib.sha256(prompt.encode()).hexdigest(), 16) % 2 == 1


def mt_bench(folder: Path, threshold: int = 8) -> tuple[list[str], list[bool], list[bool]]:
    """MT-Bench as routing data: a turn is 'correct' when the judge scored it >= threshold."""
    questions = {}
    for line in (folder / "mt_bench_questions.jsonl").read_text().splitlines():
        q = json.loads(line)
        questions[q["question_id"]] = q
    scores = {}
    for line in (folder / "mt_bench_judgements.jsonl").read_text().splitlines():
        j = json.loads(line)
        scores[(j["question_id"], j["model"], j["turn"])] = j["score"]
    prompts, weak, strong = [], [], []
    for qid, q in sorted(questions.items()):
        for turn in (1, 2):
            prompts.append(q["turns"][0] if turn == 1 else "\n".join(q["turns"][:2]))
            weak.append(scores[(qid, WEAK, turn)] >= threshold)
            strong.append(scores[(qid, STRONG, turn)] >= threshold)
    return prompts, weak, strong


def evaluate(
    scorer: ComplexityScorer, prompts: list[str], weak: list[bool], strong: list[bool]
) -> tuple[float, float]:
    return apgr([scorer.score(p).score for p in prompts], weak, strong)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()

    prompts, weak, strong = read_csv(args.data / "gsm8k_responses.csv", WEAK, STRONG)
    rows = list(zip(prompts, weak, strong, strict=True))
    train = [r for r in rows if not held_out(r[0])]
    test = [r for r in rows if held_out(r[0])]
    cols = lambda rs: ([r[0] for r in rs], [r[1] for r in rs], [r[2] for r in rs])  # noqa: E731
    tr, te = cols(train), cols(test)

    base = json.loads(DEFAULT_WEIGHTS.read_text())
    scorer = ComplexityScorer()
    # The linear part is all that ranks; compute each signal's contribution once per prompt.
    contributions = []
    for p in tr[0]:
        _total, parts = scorer.raw(p)
        contributions.append(parts)
    old = scorer.weights

    def ranked(weights: dict[str, float]) -> float:
        scores = []
        for parts in contributions:
            s = 0.0
            for k, v in parts.items():
                if old.get(k):
                    s += v * weights.get(k, old[k]) / old[k]
            scores.append(s)
        return apgr(scores, tr[1], tr[2])[0]

    for k in TRAINED:  # each trained signal needs a non-zero weight to be rescalable above
        if not old.get(k):
            raise SystemExit(f"weights file: give {k} a non-zero starting weight")
    best = (-1.0, {})
    for combo in itertools.product(GRID, repeat=len(TRAINED)):
        w = dict(zip(TRAINED, combo, strict=True))
        if w["number"] > 0.15:
            continue
        a = ranked({k: (v if v else 1e-9) for k, v in w.items()})
        if a > best[0]:
            best = (a, w)
    print(f"train half: best APGR {best[0]:.3f} with {best[1]}")

    weights = {**base["weights"], **{k: (v if v else 1e-9) for k, v in best[1].items()}}
    # Calibrate: the median train prompt maps to 0.5, the 90th percentile to about 0.75.
    trial = {**base, "weights": weights}
    tmp = ROOT / "bench" / ".weights.tmp.json"
    tmp.write_text(json.dumps(trial))
    raws = sorted(ComplexityScorer(tmp).raw(p)[0] for p in tr[0])
    center = statistics.median(raws)
    p90 = raws[int(0.9 * len(raws))]
    trial["center"] = round(center, 4)
    trial["scale"] = round(max(0.05, (p90 - center) / 1.1), 4)
    tmp.write_text(json.dumps(trial))
    final = ComplexityScorer(tmp)
    tmp.unlink()

    a_te = evaluate(final, *te)
    l_te = apgr([float(len(p)) for p in te[0]], te[1], te[2])
    mt = mt_bench(args.data)
    a_mt = evaluate(final, *mt)
    l_mt = apgr([float(len(p)) for p in mt[0]], mt[1], mt[2])
    print(
        f"held-out GSM8K ({len(te[0])} prompts): scorer APGR={a_te[0]:.3f} "
        f"CPT50={a_te[1] * 100:.1f}% | prompt length APGR={l_te[0]:.3f} "
        f"CPT50={l_te[1] * 100:.1f}%"
    )
    print(
        f"MT-Bench ({len(mt[0])} turns, correct = judge >= 8): scorer APGR={a_mt[0]:.3f} "
        f"CPT50={a_mt[1] * 100:.1f}% | prompt length APGR={l_mt[0]:.3f} "
        f"CPT50={l_mt[1] * 100:.1f}%"
    )
    if args.write:
        raise SystemExit("--write: use `python -m bench.router_validation --write` instead")
    if False:  # the former --write, kept to show what the old weights file recorded
        trial["trained_on"] = "gsm8k_responses.csv, prompts with even sha256 (train half)"
        DEFAULT_WEIGHTS.write_text(json.dumps(trial, indent=2, sort_keys=True) + "\n")
        print(f"wrote {DEFAULT_WEIGHTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
