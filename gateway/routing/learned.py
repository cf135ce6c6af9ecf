"""A learned routing scorer: a linear model over cheap text features, read from a weights file.

`python -m gateway train-router` writes the file (gateway/tools/train_router.py); a policy loads it
with `scorer: {weights: FILE}`. The scorer answers like `ComplexityScorer` (a score in [0, 1]
and the reasons that raised it), so `complexity:` conditions in the policy work unchanged.

Features, computed over at most `SCAN_CHARS` characters (head and tail):
- dense: log prompt length, newlines, several questions, a long requested output, and the
  counts of the hand-set signals of complexity.py (reasoning, code, maths, fractions, ...);
- terms: word unigrams and bigrams (runs of word characters, numbers as written) of the
  first 1,100 and last 400 characters, present or not, scaled by 1/sqrt(number of distinct
  terms), looked up in the
  file's vocabulary (no hashing: a dict look-up per term is faster than any stable hash in
  Python). Weights trained from the label store (format version 2, `"term_hash": "crc32"`)
  key their terms by the CRC-32 of the term instead: the store keeps those hashes, never the
  text, so the scorer hashes the prompt's terms the same way (zlib, C speed).

The raw score is bias + dense . w + terms . v; a logistic maps the training median to 0.5 and
the 90th percentile to about 0.75, like the shipped scorer, so policy thresholds keep their
meaning. The file records its format and feature version: a file written for other features
is refused rather than silently mis-scored.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import re
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .complexity import REASONS, Complexity, count_signals, scan, squash, top_reasons

FORMAT = "edge-gateway-router-weights"
FORMAT_VERSION = 1
# Version 2: the same model, its terms keyed by their CRC-32 (TERM_HASH) instead of the text.
HASHED_FORMAT_VERSION = 2
TERM_HASH = "crc32"
# Bump when dense_features() or terms() change what a weight means. 2: numbers are kept as
# written (version 1 folded them to "0"), words are runs of word characters in any script.
# Stored label vectors carry it as "fv" (absent: 1); rows of another version are not trained on.
FEATURE_VERSION = 2
CAP = 3
DENSE = (
    "length",
    "lines",
    "questions",
    "max_tokens",
    "number",
    "reasoning",
    "code",
    "math",
    "domain",
    "fractions",
    "comparisons",
    "ratios",
    "sequence",
    "remainder",
    "multiples",
    "small_talk",
)
# Runs of word characters (any script, digits included): numbers are read as written.
_WORD = re.compile(r"\w+")
# Words are read from at most this many characters (head and tail): the latency budget. The
# ablation in docs/ROUTING.md found the whole scanned window (3,000) no better.
TERMS_CHARS = 1500
TERMS_TAIL = 400
_LEARNED_REASON = "learned terms"


class WeightsError(ValueError):
    """A weights file cannot be used: unreadable, malformed, or for other features."""


def dense_features(text: str, lowered: str, *, max_tokens: int | None = None) -> dict[str, float]:
    """Length, structure and the hand-set signals; `lowered` is scan(text).lower()."""
    f: dict[str, float] = {"length": math.log1p(len(text) / 200)}
    lines = text.count("\n")
    if lines:
        f["lines"] = math.log1p(lines)
    for name, n in count_signals(lowered).items():
        f[name] = math.log1p(n) if name == "number" else float(min(n, CAP))
    questions = text.count("?")
    if questions > 1:
        f["questions"] = float(min(questions - 1, CAP))
    if max_tokens and max_tokens > 1024:
        f["max_tokens"] = math.log2(max_tokens / 1024)
    return f


def terms(lowered: str) -> set[str]:
    """Word unigrams and bigrams of lower-cased text (its head and tail); numbers as written."""
    if len(lowered) > TERMS_CHARS:
        lowered = lowered[: TERMS_CHARS - TERMS_TAIL] + "\n" + lowered[-TERMS_TAIL:]
    words = _WORD.findall(lowered)
    out = set(words)
    out.update(map(" ".join, itertools.pairwise(words)))
    return out


def hash_terms(found: Iterable[str]) -> set[int]:
    """The terms as the label store keeps them: CRC-32 of their UTF-8 bytes."""
    return set(map(zlib.crc32, map(str.encode, found)))


def vector(text: str) -> dict[str, Any]:
    """What the label store keeps of a prompt: dense features and hashed terms, no text.

    JSON-ready; `train-router --from-store` fits on exactly these, and a scorer with hashed
    weights computes the same from the prompt it routes.
    """
    lowered = scan(text).lower()
    return {
        "fv": FEATURE_VERSION,
        "dense": {k: round(v, 6) for k, v in dense_features(text, lowered).items()},
        "terms": sorted(hash_terms(terms(lowered))),
    }


def vector_version(vec: dict[str, Any]) -> int:
    """The feature version a stored vector was computed with (rows before version 2: 1)."""
    fv = vec.get("fv", 1)
    return fv if isinstance(fv, int) else -1


def read_weights(path: Path) -> dict[str, Any]:
    """The JSON document of a weights file (gzip when it ends in .gz); WeightsError if unusable."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        doc = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (ValueError, EOFError) as exc:  # bad gzip, bad UTF-8, bad JSON
        raise WeightsError(f"{path}: not a weights file: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise WeightsError(f'{path}: not a weights file (no "format": {FORMAT!r})')
    if doc.get("format_version") not in (FORMAT_VERSION, HASHED_FORMAT_VERSION):
        raise WeightsError(
            f"{path}: format version {doc.get('format_version')!r}, this gateway reads "
            f"{FORMAT_VERSION} and {HASHED_FORMAT_VERSION}"
        )
    if doc.get("feature_version") != FEATURE_VERSION:
        raise WeightsError(
            f"{path}: feature version {doc.get('feature_version')!r}, this gateway computes "
            f"feature version {FEATURE_VERSION}: retrain it with this version's train-router"
        )
    return doc


class LearnedScorer:
    """Scores prompt text with a trained linear model; same interface as ComplexityScorer."""

    def __init__(self, doc: dict[str, Any], *, source: str = "<weights>") -> None:
        try:
            self.bias = float(doc["bias"])
            self.center = float(doc["center"])
            self.scale = float(doc["scale"])
            self.dense = {str(k): float(v) for k, v in doc["dense"].items()}
            self.hashed = doc.get("format_version") == HASHED_FORMAT_VERSION
            if self.hashed and doc.get("term_hash") != TERM_HASH:
                raise ValueError(f"term_hash must be {TERM_HASH!r}")
            self.terms = {str(k): float(v) for k, v in doc.get("terms", {}).items()}
            # Hashed files key terms by their CRC-32 written as a decimal string.
            self.hashed_terms = {int(k): v for k, v in self.terms.items()} if self.hashed else {}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise WeightsError(f"{source}: malformed weights: {exc!r}") from None
        unknown = set(self.dense) - set(DENSE)
        if unknown:
            raise WeightsError(f"{source}: unknown dense features {sorted(unknown)}")
        if not self.scale > 0:
            raise WeightsError(f"{source}: scale must be > 0")
        self.source = source
        self.meta = {k: v for k, v in doc.items() if k not in ("dense", "terms")}

    @classmethod
    def load(cls, path: Path) -> LearnedScorer:
        return cls(read_weights(path), source=str(path))

    def raw(self, text: str, *, max_tokens: int | None = None) -> tuple[float, dict[str, float]]:
        """The linear score and its parts: one per dense feature, and "terms" for the words."""
        lowered = scan(text).lower()
        w = self.dense
        parts = {
            k: w[k] * v
            for k, v in dense_features(text, lowered, max_tokens=max_tokens).items()
            if k in w
        }
        if self.hashed_terms:
            hashed = hash_terms(terms(lowered))
            total = sum(map(self.hashed_terms.get, hashed, itertools.repeat(0.0)))
            if total:
                parts["terms"] = total / math.sqrt(len(hashed))
        elif self.terms:
            found = terms(lowered)
            total = sum(map(self.terms.get, found, itertools.repeat(0.0)))
            if total:
                parts["terms"] = total / math.sqrt(len(found))
        return self.bias + sum(parts.values()), parts

    def raw_vector(self, vec: dict[str, Any]) -> float | None:
        """The linear score of a stored vector (see `vector`); None when this file keys its
        terms by text, which a vector cannot be matched against."""
        if self.terms and not self.hashed:
            return None
        w = self.dense
        total = self.bias + sum(w[k] * v for k, v in vec["dense"].items() if k in w)
        found = vec["terms"]
        if found and self.hashed_terms:
            hit = sum(self.hashed_terms.get(t, 0.0) for t in found)
            total += hit / math.sqrt(len(found))
        return total

    def score(self, text: str, *, max_tokens: int | None = None) -> Complexity:
        total, parts = self.raw(text, max_tokens=max_tokens)
        score = squash(total, self.center, self.scale)
        floor = 0.25 * self.scale
        ranked = sorted(
            (
                (v, _LEARNED_REASON if k == "terms" else REASONS[k])
                for k, v in parts.items()
                if (k == "terms" or k in REASONS) and v >= floor
            ),
            reverse=True,
        )
        return Complexity(score=score, reasons=top_reasons(ranked))
