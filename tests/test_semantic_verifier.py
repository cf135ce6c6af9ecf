"""The semantic cache's verifier: a different question is never served, however alike the two
embed (the cases below are rejected at cosine 1.0), a paraphrase with the same numbers, names
and units is, and anything unexpected rejects."""

from __future__ import annotations

import time

import pytest

from gateway.semantic import verifier
from gateway.semantic.verifier import REASONS, THRESHOLD, Verdict, pair_checks, verify

DIFFERENT = [
    # (reason, stored, asked)
    ("antonym", "turn on the pump", "turn off the pump"),
    ("antonym", "Turn the pump on", "Turn the pump off"),
    ("antonym", "How do I enable dark mode in Outlook?", "How do I disable dark mode in Outlook?"),
    ("antonym", "How do I start the generator?", "How do I stop the generator?"),
    ("antonym", "How do I increase the fan speed?", "How do I decrease the fan speed?"),
    ("antonym", "How do I upload files to the NAS?", "How do I download files from the NAS?"),
    ("antonym", "What are the pros of Rust?", "What are the cons of Rust?"),
    ("antonym", "How do I install Docker?", "How do I uninstall Docker?"),
    ("antonym", "Where can I buy a used car?", "Where can I sell a used car?"),
    ("antonym", "What is the max load of the crane?", "What is the min load of the crane?"),
    ("number", "What is the torque for M8?", "What is the torque for M10?"),
    ("number", "torque for M8", "torque for M10"),
    ("number", "How many calories are in 2 eggs?", "How many calories are in 3 eggs?"),
    ("number", "Is a 3.5 mm jack standard?", "Is a 2.5 mm jack standard?"),
    ("number", "What is the tax on 1,000 dollars?", "What is the tax on 1,500 dollars?"),
    ("number", "Which is the best of three options?", "Which is the best of four options?"),
    ("number", "Where is the 3rd floor office?", "Where is the fourth floor office?"),
    ("number", "Reset the PLC on line 3", "Reset the PLC on line 4"),
    ("number", "What changed in ISO 9001:2015?", "What changed in ISO 9001:2008?"),
    (
        "negation",
        "Can I take ibuprofen with paracetamol?",
        "Can I take ibuprofen without paracetamol?",
    ),
    ("negation", "Is the valve open?", "Isn't the valve open?"),
    ("negation", "Should I restart the server?", "Should I never restart the server?"),
    ("negation", "Why does the printer print?", "Why doesn't the printer print?"),
    ("entity", "How do I reset the PLC?", "How do I reset the HMI?"),
    ("entity", "What is the capital of France?", "What is the capital of Germany?"),
    ("entity", "How do I update Windows?", "How do I update macOS?"),
    (
        "entity",
        "How do I change the oil on a Honda Civic?",
        "How do I change the oil on a Honda Accord?",
    ),
    ("entity", "What are the functions of C++?", "What are the functions of C?"),
    (
        "unit",
        "What is the boiling point of water in °C?",
        "What is the boiling point of water in °F?",
    ),
    ("unit", "Is 10 mm enough clearance?", "Is 10 cm enough clearance?"),
    ("unit", "Will it ship in 3 days?", "Will it ship in 3 weeks?"),
    ("unit", "What is the pressure limit in psi?", "What is the pressure limit in bar?"),
    ("unit", "Is 230V safe for this drill?", "Is 230W safe for this drill?"),
    ("intent", "Why is the pump noisy?", "How is the pump noisy?"),
    ("intent", "Is red wine healthy?", "Which red wine is healthy?"),
    ("intent", "What is the pump's rated flow? Why?", "What is the pump's rated flow?"),
    ("order", "Why do Poles dislike Russians?", "Why do Russians dislike Poles?"),
    ("order", "How do I convert kilometres to miles?", "How do I convert miles to kilometres?"),
    ("content", "How do I reset the pump?", "How do I reset the valve?"),
]

SAME = [
    ("How do I reset the PLC on line 3?", "What's the reset procedure for the PLC on line 3?"),
    ("reset the line-3 PLC", "what's the reset procedure for the PLC on line 3"),
    ("What is the torque for M8 bolts?", "What torque do M8 bolts need?"),
    ("How many calories are in 2 eggs?", "How many calories do 2 eggs have?"),
    ("How do I export a report to PDF?", "How can I export a report as PDF?"),
    ("Where is the 3rd floor office?", "Where is the third floor office?"),
    ("What is 25 °C in Fahrenheit?", "What is 25°C in fahrenheit?"),
    ("Set the pump to 3.5 bar", "set the pump to 3,5 bar"),
    ("Is the pump running or not?", "Is the pump running?"),
    (
        "What is the difference between Python and Java?",
        "What's the difference between Java and Python?",
    ),
    ("How much does a 2 TB SSD cost in the US?", "How much does a 2 TB SSD cost in the USA?"),
    ("Which one is better, IBPS PO or SBI clerk?", "Which one is better: SBI clerk or IBPS PO?"),
]


@pytest.mark.parametrize(("reason", "stored", "asked"), DIFFERENT)
def test_a_different_question_is_rejected_even_at_cosine_one(
    reason: str, stored: str, asked: str
) -> None:
    for a, b in ((stored, asked), (asked, stored)):  # whichever of the two was stored
        verdict = verify(a, b, 1.0)
        assert not verdict.accept
        assert verdict.reason == reason, (a, b, verdict)


@pytest.mark.parametrize(("stored", "asked"), SAME)
def test_a_paraphrase_with_the_same_numbers_names_and_units_is_accepted(
    stored: str, asked: str
) -> None:
    for a, b in ((stored, asked), (asked, stored)):
        assert verify(a, b, 0.995) == Verdict(True, "ok", pytest.approx(THRESHOLD)), (a, b)


def test_the_cosine_must_reach_the_threshold() -> None:
    stored, asked = SAME[0]
    assert verify(stored, asked, THRESHOLD).accept
    below = verify(stored, asked, THRESHOLD - 0.001)
    assert (below.accept, below.reason) == (False, "similarity")
    # The gateway may ship another threshold; the rules hold whatever it is.
    assert verify(stored, asked, 0.9, threshold=0.85).accept
    assert verify("turn on the pump", "turn off the pump", 0.9, threshold=0.85).reason == "antonym"


def test_a_word_one_question_adds_asks_for_more_cosine() -> None:
    stored, asked = "How do I reset the PLC?", "How do I reset the PLC remotely?"
    f = pair_checks(stored, asked)
    assert (f.missing_stored, f.missing_asked) == (0, 1)
    needed = THRESHOLD + verifier.MISS_STEP
    assert verify(stored, asked, needed - 0.001).reason == "content"
    assert verify(stored, asked, min(1.0, needed)).accept == (needed <= 1.0)


@pytest.mark.parametrize(
    ("stored", "asked", "cosine"),
    [
        (None, "turn on the pump", 1.0),  # not text
        ("turn on the pump", 42, 1.0),
        ("turn on the pump", "turn on the pump", "high"),  # not a number
        ("turn on the pump", "turn on the pump", object()),
    ],
)
def test_bad_input_fails_closed(stored: object, asked: object, cosine: object) -> None:
    verdict = verify(stored, asked, cosine)  # type: ignore[arg-type]
    assert (verdict.accept, verdict.reason) == (False, "error")


@pytest.mark.parametrize("cosine", [float("nan"), float("inf"), -float("inf"), -1.0])
def test_a_cosine_that_is_no_similarity_rejects(cosine: float) -> None:
    assert not verify("turn on the pump", "turn on the pump", cosine).accept


def test_an_exception_inside_the_checks_rejects(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(stored: str, asked: str) -> verifier.PairChecks:
        raise RuntimeError("a bug in a rule")

    monkeypatch.setattr(verifier, "pair_checks", broken)
    assert verify("turn on the pump", "turn on the pump", 1.0) == Verdict(False, "error")


def test_reasons_are_the_documented_ones_and_odd_text_does_not_break_it() -> None:
    texts = [
        "",
        "?",
        "   ",
        "日本語の質問ですか",
        "WHAT IS THE TORQUE FOR M8???",
        "x" * 5000,
        "a-b-c-d-e 1-2-3 ++ ## $$$ %%% °°° 1e10 0x1F 12:30 3/4 ½",
        "Can't won't shan't isn't O'Reilly's rock 'n' roll",
    ]
    for a in texts:
        for b in texts:
            verdict = verify(a, b, 1.0)
            assert verdict.reason in {*REASONS, "ok"}
            if a == b:
                assert verdict.accept, a  # the same text is always the same question


def test_it_is_fast() -> None:
    stored, asked = SAME[0]
    started = time.perf_counter()
    for _ in range(200):
        verify(stored, asked, 0.99)
    assert (time.perf_counter() - started) / 200 < 0.005  # well under 1 ms on a quiet box
