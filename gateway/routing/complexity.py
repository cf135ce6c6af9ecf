"""How hard a prompt is, in [0, 1], with the reasons that raised it.

A linear score over cheap text signals, squashed by a logistic. Two kinds of signals:
- structure that marks multi-step problems in any domain (fractions, comparisons, rates and
  ratios, sequencing words, remainders, many quantities): their weights are trained by
  `bench/train_router.py` on a fixed half of the RouteLLM GSM8K data;
- task markers the GSM8K data cannot teach (proofs, code, maths vocabulary, domain terms,
  several questions, a long requested output, small talk): their weights are set by hand and
  checked against MT-Bench.
One simple tokenizing pass and dictionary look-ups over at most `SCAN_CHARS` characters
keep p99 well under 0.5 ms.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

DEFAULT_WEIGHTS = Path(__file__).with_name("complexity_weights.json")
# Long prompts are judged by their head and tail; the middle adds cost, not signal.
SCAN_CHARS = 3000

# Words that signal something; a token's first match wins. Stems match any longer word.
_WORDS: dict[str, tuple[str, ...]] = {
    "reasoning": (
        "prove",
        "proof",
        "derive",
        "justify",
        "deduce",
        "theorem",
        "lemma",
        "counterexample",
        "tradeoff",
        "tradeoffs",
    ),
    "code": (
        "python",
        "javascript",
        "typescript",
        "java",
        "c++",
        "rust",
        "golang",
        "sql",
        "regex",
        "bash",
        "function",
        "algorithm",
        "code",
        "program",
        "programme",
        "class",
        "api",
        "complexity",
        "recursion",
    ),
    "math": (
        "equation",
        "integral",
        "derivative",
        "matrix",
        "matrices",
        "probability",
        "polynomial",
        "prime",
        "geometry",
        "vector",
        "calculus",
        "logarithm",
        "modulo",
    ),
    "domain": (
        "quantum",
        "legal",
        "contract",
        "clinical",
        "neural",
        "entropy",
        "relativity",
        "enzyme",
        "enzymes",
        "jurisdiction",
    ),
    "fractions": (
        "half",
        "halves",
        "third",
        "thirds",
        "quarter",
        "quarters",
        "fifth",
        "fifths",
        "sixth",
        "sixths",
        "tenth",
        "tenths",
    ),
    "comparisons": (
        "more",
        "less",
        "fewer",
        "longer",
        "shorter",
        "older",
        "younger",
        "faster",
        "slower",
        "than",
    ),
    "ratios": ("ratio", "proportion", "rate", "average", "mean"),
    "sequence": ("then", "afterwards", "finally", "first", "second", "next", "subsequently"),
    "remainder": ("remaining", "remainder", "rest", "left", "leftover"),
    "multiples": ("twice", "double", "triple", "times", "thrice"),
    "small_talk": (
        "hello",
        "hi",
        "hey",
        "thanks",
        "translate",
        "say",
        "greet",
        "rephrase",
        "synonym",
    ),
}
_STEMS: dict[str, tuple[str, ...]] = {
    "reasoning": ("rigorous",),
    "code": ("implement", "debug", "compile"),
    "math": ("optimis", "optimiz", "statistic"),
    "domain": ("thermodynamic", "molecul", "diagnos", "econom", "philosoph", "genom"),
}
_PHRASES: dict[str, tuple[str, ...]] = {
    "reasoning": ("step by step", "step-by-step", "explain why", "trade-off"),
    "code": ("```", "data structure"),
    "sequence": ("after that",),
    "small_talk": ("thank you",),
}
_SIGNAL_OF = {w: name for name, words in _WORDS.items() for w in words}
_STEM_LIST = tuple((stem, name) for name, stems in _STEMS.items() for stem in stems)
_STEM_PREFIXES = tuple(stem for stem, _ in _STEM_LIST)
# One simple pattern, one pass: fractions like 3/4, numbers (money, %), words.
_TOKEN = re.compile(r"\d+/\d+|\$?\d[\d,]*(?:\.\d+)?%?|[a-z][a-z+]*")


def scan(text: str) -> str:
    """The part of a prompt the scorers read: all of it, or the head and tail of a long one."""
    return text if len(text) <= SCAN_CHARS else text[:2000] + "\n" + text[-1000:]


def count_signals(text: str) -> dict[str, int]:
    """Occurrences of each signal in lower-cased text."""
    counts: dict[str, int] = {}
    signal_of = _SIGNAL_OF
    # Each distinct token once (Counter counts in C): a 2 KB prompt repeats most of its words.
    for tok, count in Counter(_TOKEN.findall(text)).items():
        c = tok[0]
        if c.isdigit() or c == "$":
            name = "fractions" if "/" in tok else "number"
        else:
            found = signal_of.get(tok)
            if found is None:
                if len(tok) < 6 or not tok.startswith(_STEM_PREFIXES):
                    continue
                found = next(n for stem, n in _STEM_LIST if tok.startswith(stem))
            name = found
        counts[name] = counts.get(name, 0) + count
    for name, phrases in _PHRASES.items():
        for phrase in phrases:
            if phrase in text:
                counts[name] = counts.get(name, 0) + text.count(phrase)
    return counts


# Human words for the reasons header; signals not listed here never show as a reason.
REASONS = {
    "reasoning": "reasoning",
    "code": "code",
    "math": "math",
    "domain": "domain terms",
    "fractions": "fractions",
    "comparisons": "comparisons",
    "ratios": "rates/ratios",
    "sequence": "multi-step",
    "remainder": "multi-step",
    "multiples": "multiples",
    "questions": "several questions",
    "length": "long prompt",
    "max_tokens": "long output requested",
}


@dataclass(frozen=True, slots=True)
class Complexity:
    score: float  # in [0, 1]
    reasons: tuple[str, ...]  # what raised it, most important first


def squash(raw: float, center: float, scale: float) -> float:
    """The score in [0, 1] a policy threshold compares, from a scorer's linear score (clamped:
    a far outlier saturates instead of overflowing `exp`)."""
    x = max(-60.0, min(60.0, (raw - center) / scale))
    return 1.0 / (1.0 + math.exp(-x))


class Scorer(Protocol):
    """What the policy's `complexity` feature comes from: the shipped or a learned scorer."""

    def score(self, text: str, *, max_tokens: int | None = None) -> Complexity: ...


class ComplexityScorer:
    """Scores prompt text; weights are loaded once from JSON."""

    def __init__(self, weights_path: Path | None = None) -> None:
        self._load(json.loads((weights_path or DEFAULT_WEIGHTS).read_text(encoding="utf-8")))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComplexityScorer:
        """A scorer from an in-memory weights document (the JSON file's content)."""
        scorer = cls.__new__(cls)
        scorer._load(data)
        return scorer

    def as_dict(self) -> dict[str, Any]:
        """The weights document this scorer was built from (without free-text fields)."""
        return {
            "weights": dict(self.weights),
            "cap": self.cap,
            "center": self.center,
            "scale": self.scale,
            "length_ref": self.length_ref,
            "tie_break": self.tie_break,
        }

    def _load(self, data: dict[str, Any]) -> None:
        self.weights: dict[str, float] = {k: float(v) for k, v in data["weights"].items()}
        # Every signal but length and a requested long output is multiplied by this: with
        # 1e-8 they only order prompts of exactly the same length (docs/ROUTING.md says why).
        self.tie_break = float(data.get("tie_break", 1.0))
        self.cap = int(data.get("cap", 3))
        self.center = float(data["center"])
        self.scale = float(data["scale"])
        self.length_ref = float(data.get("length_ref", 200))

    def raw(self, text: str, *, max_tokens: int | None = None) -> tuple[float, dict[str, float]]:
        """The linear score and each signal's contribution to it (contributions may be < 0)."""
        w = self.weights
        tie = self.tie_break
        counts = count_signals(scan(text).lower())
        parts: dict[str, float] = {}
        # log length, relative to a short question, so small talk contributes nothing.
        parts["length"] = w["length"] * max(0.0, math.log1p(len(text) / self.length_ref))
        cap = self.cap
        for name, n in counts.items():
            if name == "number":
                parts[name] = tie * w["number"] * math.log1p(n)
            elif name in w:
                parts[name] = tie * w[name] * min(n, cap)
        if w.get("lines"):
            lines = text.count("\n")
            if lines:
                parts["lines"] = tie * w["lines"] * math.log1p(lines)
        questions = text.count("?")
        if questions > 1:
            parts["questions"] = tie * w["questions"] * min(questions - 1, cap)
        if max_tokens and max_tokens > 1024:
            parts["max_tokens"] = w["max_tokens"] * math.log2(max_tokens / 1024)
        return sum(parts.values()), parts

    def raw_dense(self, dense: dict[str, float]) -> float:
        """The linear score of a prompt from its dense features (learned.dense_features, as the
        label store keeps them): the same value `raw` gives, without the text."""
        w = self.weights
        total = 0.0
        for k, v in dense.items():
            if k == "length" or k == "max_tokens":
                total += w.get(k, 0.0) * v
            elif k in ("number", "lines"):  # log counts, uncapped
                total += self.tie_break * w.get(k, 0.0) * v
            else:  # the stored counts are capped at CAP (3) like the scorer's
                total += self.tie_break * w.get(k, 0.0) * min(v, self.cap)
        return total

    def score(self, text: str, *, max_tokens: int | None = None) -> Complexity:
        total, parts = self.raw(text, max_tokens=max_tokens)
        score = squash(total, self.center, self.scale)
        ranked = sorted(
            ((v, REASONS[k]) for k, v in parts.items() if k in REASONS and v >= 0.25),
            reverse=True,
        )
        return Complexity(score=score, reasons=top_reasons(ranked))


def top_reasons(ranked: Iterable[tuple[float, str]]) -> tuple[str, ...]:
    """The first four distinct reasons of `ranked` (weight, reason), strongest first."""
    reasons: list[str] = []
    for _, reason in ranked:
        if reason not in reasons:
            reasons.append(reason)
    return tuple(reasons[:4])
