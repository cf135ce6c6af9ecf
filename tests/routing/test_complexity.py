"""The shipped scorer: bounded, deterministic, sensible on chat, better than length."""

from __future__ import annotations

import json

import pytest

from bench.router_validation import folds, load
from gateway.routing.complexity import DEFAULT_WEIGHTS, ComplexityScorer
from gateway.tools.eval_router import apgr
from tests.conftest import ROOT

DATA = ROOT.parent / "shared" / "data" / "routing"
SCORER = ComplexityScorer()

SIMPLE = [
    "Say hello in French.",
    "What is the capital of Spain?",
    "Thanks!",
    "hi",
    "Translate 'good morning' into German.",
]
COMPLEX = [
    "Prove step by step that the sum of the first n odd numbers is n^2, then write a Python "
    "function that verifies it for n up to 1000 and explain its complexity.",
    "Derive the time complexity of merge sort, then implement it in Rust and prove it is stable.",
    "Explain why the integral of 1/x is ln|x|, derive it rigorously, and give a "
    "counterexample for x = 0.",
]


@pytest.mark.parametrize("text", SIMPLE)
def test_small_talk_scores_low(text: str) -> None:
    c = SCORER.score(text)
    assert 0.0 <= c.score < 0.4, c  # well under the default policy's 0.55


@pytest.mark.parametrize("text", COMPLEX)
def test_reasoning_and_code_outrank_small_talk(text: str) -> None:
    # The shipped scorer leans on length: task words only nudge it (docs/ROUTING.md says why).
    # Reasoning words alone no longer raise it: on MMLU and MT-Bench they did not predict
    # where the strong model gains.
    c = SCORER.score(text)
    small_talk = [SCORER.score(s).score for s in SIMPLE]
    assert c.score > sum(small_talk) / len(small_talk), c
    assert c.reasons
    if "code" in c.reasons:
        assert c.score > max(small_talk), c


def test_bounded_and_deterministic() -> None:
    for text in ["", " ", "?" * 5000, "x" * 100_000, "1 " * 50_000, *SIMPLE, *COMPLEX]:
        a, b = SCORER.score(text), SCORER.score(text)
        assert a == b
        assert 0.0 <= a.score <= 1.0
        assert len(a.reasons) <= 4


def test_long_output_and_questions_raise_the_score() -> None:
    base = SCORER.score("Describe the water cycle.").score
    assert SCORER.score("Describe the water cycle.", max_tokens=8000).score > base
    assert (
        SCORER.score("What is rain? What is snow? What is hail?").score
        > SCORER.score("What is rain?").score
    )


@pytest.mark.skipif(
    not (DATA / "gsm8k_responses.csv").is_file(),
    reason="shared routing data not present next to the repo",
)
def test_never_below_prompt_length_on_any_shared_fold() -> None:
    # Issue 26: the default a box ships with must not lose to prompt length on traffic nobody
    # tuned it for. (This test used to ask for length + 0.03 on the GSM8K held-out half: the
    # previous default's structure signals won there and lost on unseen MMLU subjects.)
    sets = load(DATA)
    checked = 0
    for name in folds(sets):
        prompts, weak, strong = sets[name]
        if sum(strong) <= sum(weak):
            continue
        ours, _ = apgr([SCORER.score(p).score for p in prompts], weak, strong)
        length, _ = apgr([float(len(p)) for p in prompts], weak, strong)
        assert ours >= length - 1e-9, (name, ours, length)
        checked += 1
    assert checked == 29  # 27 MMLU subjects with a gap, GSM8K, MT-Bench


def test_weights_file_records_its_training() -> None:
    data = json.loads(DEFAULT_WEIGHTS.read_text())
    assert "trained_on" in data and data["scale"] > 0
