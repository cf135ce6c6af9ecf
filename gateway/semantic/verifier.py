"""May the cached answer to `stored` answer `asked`? The semantic cache's check beyond cosine.

Cosine similarity of sentence embeddings says two questions are about the same thing, not that
they ask the same thing: "turn on the pump" and "turn off the pump", "torque for M8" and
"torque for M10" embed almost alike. A candidate the vector search found is served only when
every check below passes; the first that fails names the reason (for the rejection counters).
Any error rejects: the check fails closed.

1. number: the numbers differ: digits (decimals, thousands separators, money, years, dates),
   ordinals (3rd, third), spelled numbers (two..twenty, the tens, hundred...), the digits
   inside codes (M8, line-3). "one" counts as 1 only if the other question has a 1 ("which
   one", "how does one" are pronouns).
2. negation: one question has a negation (not, n't, no, never, without, cannot, none,
   nobody, nothing, neither, nor) and the other none; "or not", "if not", "not only" and
   "no matter" do not negate.
3. antonym: one question has a word and the other its opposite and not the word itself
   (on/off, enable/disable, start/stop, open/close, increase/decrease, before/after, min/max,
   up/down, add/remove, buy/sell, import/export, upload/download, encrypt/decrypt, best/worst,
   pros/cons, ... about 150 pairs), or the word with a negating prefix (install/uninstall,
   parametric/non-parametric).
4. unit: the units differ: symbols on or after a number (mm, cm, kg, V, A, W, °C, psi, Nm,
   GB, %, $, ...), unambiguous symbols anywhere ("in psi", "in mm"), physical units and
   currencies spelled out (millimetres, volts, celsius, dollars), and time units after a
   number (3 days / 3 weeks).
5. entity: a name, acronym or code of one question is absent from the other: a capitalised
   word not starting a sentence, an all-caps word (also IT, US), a word with inner capitals,
   C++/C#, letters mixed with digits (PLC, EY, iPhone, M8, line-3); compared case- and
   punctuation-blind, so "line-3 PLC" matches "PLC on line 3", and "the United States",
   "U.S.", "America" all read as USA. A question in capitals has no names this way.
6. intent: they ask for different kinds of answer: why / how (manner) / how many, how long,
   "what is the price" (degree) / yes-no / what (with who, where, when and "how is X", which
   one answer can serve: "which character is the smartest" / "who is the smartest"), sentence
   by sentence ("Which flavour is best? Why?" asks two things). "What is the best way to",
   "what should I do to", "is there a way to" ask how; "can you tell me ..." is a request; a
   request with no question word ("reset the line-3 PLC") matches any one kind but why and
   yes-no.
7. order: two names, codes or units appear in opposite orders ("Poles dislike Russians",
   "kilometres to miles"), unless both questions join them with and / or / vs / a comma and
   no preposition ("Python or Java"), a symmetric pair.
8. similarity, content: the cosine must reach THRESHOLD, plus MISS_STEP for every content word
   (not a function word nor question framing such as "what is the procedure for"; lightly
   stemmed, a few synonyms merged, "calibrate" matching "calibration") one question has and
   the other lacks; and when each has such a word (a swapped detail: "reset the pump" /
   "reset the valve") it is never served. Below THRESHOLD: "similarity"; above it, short of
   the steps or swapped: "content".

The constants were chosen by bench/semcache_tune.py on the shared Quora question pairs only.

What it cannot do: see a paraphrase through a word it has no synonym for (it rejects: a lost
hit, never a false one, though the cosine alone may still carry it); catch a changed meaning
that keeps every word, number and name ("dogs chase cats" / "cats chase dogs", a negation
moved to another verb); read scope, sarcasm or context outside the question. It is English
only: other languages are compared on numbers, names and the cosine. Its word lists are
general; a domain with its own opposites (e.g. "lead/lag") needs them added.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .reading import Reading, intents_match, plain_stem, read
from .vocabulary import (
    ANTONYMS,
    NEG_PREFIXES,
    PARTS,
    SYNONYMS,
)

# -- the shipped defaults (bench/semcache_tune.py chose them on the shared Quora pairs) --------

THRESHOLD = 0.985  # cosine a candidate needs with no content word differing
MISS_STEP = 0.005  # more cosine needed per content word one question has and the other lacks
SWAP_REJECTS = True  # each question has a content word the other lacks: never served

REASONS = (
    "number", "negation", "antonym", "unit", "entity", "intent", "order", "similarity",
    "content", "error",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Verdict:
    accept: bool
    reason: str  # "ok" when accepted, else one of REASONS
    needed: float = math.inf  # the cosine this pair needed (threshold plus content steps)


@dataclass(frozen=True, slots=True)
class PairChecks:
    """What the checks read from a pair of questions (the tuning script reads them too)."""

    number: bool
    negation: bool
    antonym: bool
    unit: bool
    entity: bool
    intent: bool
    order: bool
    missing_stored: int  # content words of `stored` that `asked` lacks
    missing_asked: int  # content words of `asked` that `stored` lacks

    def veto(self) -> str | None:
        """The first rule that fails, or None."""
        for reason in _VETOES:
            if getattr(self, reason):
                return reason
        return None


_VETOES = ("number", "negation", "antonym", "unit", "entity", "intent", "order")


def verify(
    stored: str,
    asked: str,
    cosine: float,
    *,
    threshold: float = THRESHOLD,
    miss_step: float = MISS_STEP,
    swap_rejects: bool = SWAP_REJECTS,
) -> Verdict:
    """Whether the answer cached for `stored` may answer `asked`, given the cosine similarity
    of their embeddings. Pure (a stored question's reading is cached), about 0.1 ms with
    the stored question read before, never raises: an error rejects."""
    try:
        cos = float(cosine)
        if not (math.isfinite(cos) and cos >= threshold):
            return Verdict(False, "similarity", threshold)
        f = pair_checks(stored, asked)
        reason = f.veto()
        if reason is not None:
            return Verdict(False, reason)
        needed = required_cosine(f, threshold, miss_step, swap_rejects)
        if cos >= needed:
            return Verdict(True, "ok", needed)
        return Verdict(False, "content", needed)
    except Exception:
        return Verdict(False, "error")


def required_cosine(
    f: PairChecks,
    threshold: float = THRESHOLD,
    miss_step: float = MISS_STEP,
    swap_rejects: bool = SWAP_REJECTS,
) -> float:
    """The cosine a pair that passes the rules needs, from its differing content words."""
    if swap_rejects and f.missing_stored and f.missing_asked:
        return math.inf  # a swapped detail: "reset the pump" / "reset the valve"
    return threshold + miss_step * (f.missing_stored + f.missing_asked)


def pair_checks(stored: str, asked: str) -> PairChecks:
    """Every check of the pair (raises on input that is not text; verify does not)."""
    a, b = read(stored), read(asked)
    return PairChecks(
        number=_numbers_differ(a, b),
        negation=a.negated != b.negated,
        antonym=_antonym(a, b) or _antonym(b, a),
        unit=a.units != b.units,
        entity=_entity_missing(a, b) or _entity_missing(b, a),
        intent=not intents_match(a.intents, b.intents),
        order=_names_swapped(a, b),
        missing_stored=_unmatched(a.stems, b.stems),
        missing_asked=_unmatched(b.stems, a.stems),
    )


# -- comparing two readings -------------------------------------------------------------------


def _numbers_differ(a: Reading, b: Reading) -> bool:
    diff = a.numbers ^ b.numbers
    if diff == {1.0}:  # "one" on the side without the 1 stands for it
        return not ((1.0 in a.numbers and b.soft_one) or (1.0 in b.numbers and a.soft_one))
    return bool(diff)


_PAIRS = {(x, y) for x, y in ANTONYMS} | {
    (plain_stem(x), plain_stem(y)) for x, y in ANTONYMS if plain_stem(x) != plain_stem(y)
}
_PAIRS |= {(y, x) for x, y in _PAIRS}
_OPPOSITE: dict[str, set[str]] = {}
for _x, _y in _PAIRS:
    _OPPOSITE.setdefault(_x, set()).add(_y)


def _antonym(a: Reading, b: Reading) -> bool:
    """A word of `a` whose opposite `b` has, while neither has both sides of it."""
    sa = a.words | {plain_stem(w) for w in a.words}
    sb = b.words | {plain_stem(w) for w in b.words}
    for x in sa - sb:
        for y in _OPPOSITE.get(x, ()):
            if y in sb and y not in sa:
                return True
    for w in a.words - b.words:
        for prefix in NEG_PREFIXES:
            rest = w[len(prefix) :]
            if w.startswith(prefix) and len(rest) >= 4 and rest in b.words:
                if w not in b.squashed:  # not "in front" / "infront"
                    return True
    return False


def _entity_missing(a: Reading, b: Reading) -> bool:
    words = b.words | {SYNONYMS.get(w, w) for w in b.words}
    for ent in a.entities:
        if ent in b.entities or ent in words:
            continue
        # "line-3" / "line 3", "GPT-4" / "GPT 4", "Wi-Fi" / "wifi", "PLCs" / "PLC".
        flat = re.sub(r"[^\w+#]|_", "", ent)
        if (len(flat) >= 3 or any(ch.isdigit() for ch in flat)) and flat in b.squashed:
            continue
        if flat.endswith("s") and len(flat) > 3 and flat[:-1] in words:
            continue
        parts = PARTS.split(ent)
        if len(parts) > 1 and all(p in words or p in b.entities for p in parts if p):
            continue  # "OP/ED" / "OP and ED"
        return True
    return False


def _unmatched(mine: set[str], theirs: set[str]) -> int:
    """Content stems of one question the other lacks; a stem the other extends counts as
    there ("calibrat" / "calibration", "install" / "installation")."""
    n = 0
    for w in mine - theirs:
        if len(w) < 5 or not any(
            len(t) >= 5 and (t.startswith(w) or w.startswith(t)) for t in theirs
        ):
            n += 1
    return n


def _names_swapped(a: Reading, b: Reading) -> bool:
    pos: dict[str, int] = {}
    for i, n in enumerate(b.names):
        pos.setdefault(n, i)
    seen = [n for n in dict.fromkeys(a.names) if n in pos]
    for i, x in enumerate(seen):
        for y in seen[i + 1 :]:
            # Units against units ("kilometres to miles"), names against names.
            if x.startswith("unit:") == y.startswith("unit:") and pos[x] > pos[y]:
                pair = frozenset((x, y))
                if not (pair in a.coordinated and pair in b.coordinated):
                    return True
    return False
