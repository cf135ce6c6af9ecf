"""What one question says, as the verifier compares it: its words (lightly stemmed, a few
synonyms merged), numbers, units, names and codes, and whether it is negated."""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from dataclasses import dataclass

from .vocabulary import (
    ALIASES,
    CONTRACTED,
    COORDINATOR,
    CURRENCY,
    NEGATION,
    NOT_NEGATING,
    NUM,
    NUM_TAIL,
    NUMBER_WORDS,
    ORDINAL,
    PARTS,
    PREPOSITIONS,
    STOP,
    SYNONYMS,
    TIME_UNITS,
    TOKEN,
    UNIT_ANYWHERE,
    UNIT_CASED,
    UNIT_SYMBOLS,
    UNIT_WORDS,
)

# -- word lists -------------------------------------------------------------------------------


@dataclass(slots=True)
class Reading:
    words: set[str]  # lower-case words and their parts ("line-3" gives "line")
    numbers: set[float]
    soft_one: bool  # the pronoun-or-number "one"
    negated: bool
    units: set[str]
    entities: set[str]  # names, acronyms and codes, lower-case: "plc", "line3", "c++"
    names: list[str]  # the entities in order of appearance
    coordinated: set[frozenset[str]]  # pairs of names joined by and / or / vs / between
    squashed: str  # lower-case letters, digits, + and # only: "line-3 PLC" -> "line3plc"
    stems: set[str]  # content stems
    intents: frozenset[str]  # what each sentence asks: why, how, what, yes-no ...


def number_of(raw: str) -> float | None:
    s = raw
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", s):
        s = s.replace(",", "")  # 1,000 and 12,500.5
    elif s.count(",") == 1 and "." not in s:
        s = s.replace(",", ".")  # 3,5: a decimal comma
    try:
        return float(s)
    except ValueError:
        return None


@functools.lru_cache(maxsize=1 << 16)
def plain_stem(word: str) -> str:
    """Light suffix stripping, the same on both sides: learning/learn, used/use, cities/city."""
    w = word
    for suffix, keep in (
        ("ies", "y"), ("sses", "ss"), ("ings", ""), ("ing", ""), ("edly", ""), ("ed", ""),
        ("ly", ""), ("es", ""), ("s", ""), ("ment", ""), ("ness", ""), ("est", ""), ("er", ""),
    ):  # fmt: skip
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not w.endswith("ss"):
            w = w[: len(w) - len(suffix)] + keep
            break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiou":
        w = w[:-1]  # running -> runn -> run
    return w


@functools.lru_cache(maxsize=1 << 16)
def stem(word: str) -> str:
    w = plain_stem(SYNONYMS.get(word, word))
    return STEM_SYNONYMS.get(w, w)


STEM_SYNONYMS = {plain_stem(k): plain_stem(v) for k, v in SYNONYMS.items()}


@functools.lru_cache(maxsize=4096)  # a stored question is read once, not per request
def read(text: str) -> Reading:
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'")
    text = ALIASES.sub("USA", text)
    lower = text.lower()
    r = Reading(set(), set(), False, False, set(), set(), [], set(), "", set(), frozenset())
    r.negated = bool(NEGATION.search(NOT_NEGATING.sub(" ", lower)))
    letters = [ch for ch in text if ch.isalpha()]
    shouting = sum(ch.isupper() for ch in letters) > len(letters) / 2  # capitals say nothing
    lowered: list[str] = []  # every token, lower-case, for the intent
    starts: set[int] = set()  # indices of tokens that start a sentence
    clauses: set[int] = set()  # ... or a clause that asks a question of its own
    stems: list[str] = []
    end = 0
    for m in TOKEN.finditer(text):
        tok, low = m.group(0), m.group(0).lower()
        gap = text[end : m.start()]
        if not lowered or re.search(r"[.?!:;]", gap):
            starts.add(len(lowered))
        elif low in _WH and ("," in gap or lowered[-1] in ("and", "or", "but")):
            clauses.add(len(lowered))  # "..., and what is the cutoff?" asks again
        end = m.end()
        prev = lowered[-1] if lowered else ""
        lowered.append(low)
        units = len(r.units)
        if low.startswith("°"):
            r.units.add({"°c": "c", "°f": "f", "°k": "k"}.get(low, "deg"))
        elif any(ch.isdigit() for ch in tok):
            _read_numeric(tok, low, r, stems)
        elif low in CURRENCY or low == "%":
            r.units.add(CURRENCY.get(low, "%"))
        elif low in UNIT_ANYWHERE:
            r.units.add(UNIT_SYMBOLS[low])  # "in psi", "in mm": a unit without a number
        elif NUM.fullmatch(prev) and (
            low in UNIT_SYMBOLS or tok in UNIT_CASED or plain_stem(low) in TIME_UNITS
        ):
            # A unit after a number: "10 mm", "230 V", "3 days".
            r.units.add(UNIT_SYMBOLS.get(low) or UNIT_CASED.get(tok) or TIME_UNITS[plain_stem(low)])
        else:
            _read_word(tok, low, len(lowered) - 1 in starts, shouting, r, stems)
        if len(r.units) > units:  # "kilometres to miles": units have an order too
            r.names.extend(f"unit:{u}" for u in sorted(r.units) if f"unit:{u}" not in r.names)
    r.squashed = re.sub(r"[^\w+#]|_", "", lower)
    # "how long", "how many": the adjective belongs to the question word, not the topic.
    asked = {stem(w) for v, w in itertools.pairwise(lowered) if v == "how" and w in _DEGREE}
    r.stems = set(stems) - asked
    r.intents = _intents(lowered, starts | clauses)
    r.coordinated = coordinated(r.names, lower)
    return r


def _read_numeric(tok: str, low: str, r: Reading, stems: list[str]) -> None:
    ordinal = ORDINAL.fullmatch(low)
    if ordinal:
        r.numbers.add(float(ordinal.group(1)))
        return
    for num in NUM.finditer(tok):
        value = number_of(num.group(0))
        if value is not None:
            r.numbers.add(value)
    if tok[:1] in CURRENCY:
        r.units.add(CURRENCY[tok[0]])
    tail = NUM_TAIL.fullmatch(tok)
    unit = None
    if tail and tail.group(1):  # 3.5mm, 230V, 20%, 5kg
        t = tail.group(1)
        unit = UNIT_SYMBOLS.get(t.lower()) or UNIT_CASED.get(t)
        unit = unit or ({"h": "h", "hr": "h", "d": "day"}.get(t) if t.islower() else None)
    if unit:
        r.units.add(unit)
    elif any(ch.isalpha() for ch in tok):  # a code: M8, line-3, C2180-371, i7, 4G, 401k
        code = re.sub(r"[^\w+#]|_", "", low)
        r.entities.add(code)
        r.names.append(code)
        for part in re.findall(r"[^\W\d_]{2,}", low):
            r.words.add(part)
            if part not in STOP:
                stems.append(stem(part))


def _read_word(
    tok: str, low: str, start: bool, shouting: bool, r: Reading, stems: list[str]
) -> None:
    if low.endswith("n't"):  # the negation itself was read from the whole text
        low = CONTRACTED.get(low, low[:-3])
        r.words.add(low)
        if low not in STOP:
            stems.append(stem(low))
        return
    parts = [p for p in PARTS.split(low) if p]
    if len(parts) > 1 and "-" in low:
        r.words.add("".join(parts))  # non-parametric also reads as nonparametric
    for part in parts:
        r.words.add(part)
        unit = next((UNIT_WORDS[u] for u in singulars(part) if u in UNIT_WORDS), None)
        if unit:
            r.units.add(unit)
        if part == "one":
            r.soft_one = True
        elif part in NUMBER_WORDS:
            r.numbers.add(float(NUMBER_WORDS[part]))
        elif part not in STOP and len(part) > 1 and not NEGATION.fullmatch(part):
            stems.append(stem(part))
    core = re.sub(r"[^\w+#]|_", "", re.sub(r"'s?$", "", tok))  # France's -> France
    if not core or shouting or NEGATION.fullmatch(low) or "'" in low.removesuffix("'s"):
        return
    acronym = core.isupper() and len(core) >= 2  # PLC, EY, and IT or US (not "it", "us")
    if low in STOP:
        if not acronym:
            return
        stems.append(SYNONYMS.get(low, low))  # IT, US: a topic, not a pronoun
    if (
        acronym
        or any(ch.isupper() for ch in core[1:])  # GitHub, iPhone
        or (core[0].isupper() and not start and core != "I")  # a name inside a sentence
        or core[-1] in "+#"  # C++, C#
    ):
        name = core.lower()
        r.entities.add(SYNONYMS.get(name, name))
        r.names.append(SYNONYMS.get(name, name))


def singulars(word: str) -> tuple[str, ...]:
    """The word and what it is with a plural ending taken off: miles, inches, feet."""
    out = [word]
    if word.endswith("es"):
        out.append(word[:-2])
    if word.endswith("s"):
        out.append(word[:-1])
    return tuple(out)


def coordinated(names: list[str], lower: str) -> set[frozenset[str]]:
    """Pairs of names with and / or / vs / between / & between them: a symmetric pair."""
    out: set[frozenset[str]] = set()
    if len(names) < 2 or not re.search(COORDINATOR, lower):
        return out
    at = {}
    for name in names:
        m = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", lower)
        if m:
            at[name] = m.start()
    for x, ix in at.items():
        for y, iy in at.items():
            gap = lower[ix + len(x) : iy]
            # "Python and Java", "IBPS PO or SBI clerk"; not "from Canada and sell in India".
            words = re.findall(r"\w+", gap)
            if (
                ix < iy
                and len(words) <= 3
                and re.search(COORDINATOR, gap)
                and not PREPOSITIONS.intersection(words)
            ):
                out.add(frozenset((x, y)))
    return out


_AUX = frozenset(
    """is are was were am do does did can could should would will shall may might must has
    have had isn't aren't don't doesn't can't won't didn't wouldn't shouldn't""".split()
)
_DEGREE = frozenset(
    """many much long often old far big tall large fast high deep heavy expensive hard
    difficult good bad important safe accurate effective likely small early late soon strong
    hot cold close easy useful wide frequently""".split()
)
_MANNER = frozenset(
    """way ways method methods steps step tips procedure process technique techniques
    strategy strategies approach instructions guide""".split()
)
_QUANTITY = frozenset(
    """price prices cost costs salary salaries fee fees period duration length size number
    amount count weight height age distance percentage rate speed capacity limit temperature
    torque pressure voltage current""".split()
)
_ASKED = frozenset(("you", "anyone", "anybody", "someone", "somebody", "u"))
_REQUEST = frozenset(
    "tell explain suggest recommend name list give share describe help show let".split()
)
_WH = frozenset(("how", "why", "what", "which", "who", "when", "where"))


def _intent(words: list[str], starts: set[int]) -> str:
    """The kind of answer a question asks for, from its first interrogative cue."""
    n = len(words)
    for i, w in enumerate(words):
        nxt = words[i + 1] if i + 1 < n else ""
        w = w.removesuffix("'s")  # what's, how's
        if w == "why" or (w == "how" and nxt == "come"):
            return "reason"
        if w == "how":
            if nxt in _DEGREE:
                return "degree"
            # "how is life in X", "how was the paper": asks what it is like
            return "what" if nxt in ("is", "are", "was", "were") else "manner"
        if w in ("who", "whom", "whose"):
            return "person"
        if w == "when":
            return "time"
        if w == "where":
            return "place"
        if w in ("what", "which"):
            window = words[i + 1 : i + 7]
            if any(x in _MANNER for x in window) or (
                window[:1] and window[0] in _AUX and {"do", "done"} & set(window[1:3])
            ):
                return "manner"  # what is the best way to / what should I do / should be done
            if {"reason", "reasons", "cause", "causes", "causing", "making"} & set(window[:3]):
                return "reason"  # what causes / what is making my ear itch
            if _QUANTITY & set(words[i + 1 :]):
                return "degree"  # what is the price = how much is it
            if nxt in ("time", "year", "date", "day", "month"):
                return "time"
            return "what"
        if i in starts and w in _AUX:
            rest = words[i + 1 : i + 6]
            if rest[:1] and rest[0] in _ASKED and _REQUEST & set(rest[1:3]):
                continue  # "can you tell me ...", "could anyone suggest ...": a request
            if rest[:1] == ["there"] and any(x in _MANNER for x in rest):
                return "manner"  # is there a way to
            if not any(x in _WH for x in words[i + 1 : i + 4]):
                return "yesno"
    return "none"


def _intents(words: list[str], starts: set[int]) -> frozenset[str]:
    """What each sentence asks ("Which flavour is best? Why?" asks what and why)."""
    bounds = [*sorted(starts), len(words)]
    found = {_intent(words[i:j], {0}) for i, j in itertools.pairwise(bounds)}
    return frozenset(found - {"none"}) or frozenset({"none"})


# Kinds of question one answer serves: "which character is smartest" asks for a person
# too, "where is the best service centre" for a what; a request with no question word
# ("reset the line-3 PLC", "best pizza in Rome?") for any but a why or a yes-no.
_SAME_ANSWER = {"what": "what", "person": "what", "place": "what", "time": "what"}


def intents_match(a: frozenset[str], b: frozenset[str]) -> bool:
    if a == b:
        return True
    if "none" in a or "none" in b:
        other = b if "none" in a else a
        return len(other) == 1 and not other & {"reason", "yesno"}
    return {_SAME_ANSWER.get(x, x) for x in a} == {_SAME_ANSWER.get(x, x) for x in b}
