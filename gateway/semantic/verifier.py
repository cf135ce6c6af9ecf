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

import functools
import itertools
import math
import re
import unicodedata
from dataclasses import dataclass

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
    a, b = _read(stored), _read(asked)
    return PairChecks(
        number=_numbers_differ(a, b),
        negation=a.negated != b.negated,
        antonym=_antonym(a, b) or _antonym(b, a),
        unit=a.units != b.units,
        entity=_entity_missing(a, b) or _entity_missing(b, a),
        intent=not _intents_match(a.intents, b.intents),
        order=_names_swapped(a, b),
        missing_stored=_unmatched(a.stems, b.stems),
        missing_asked=_unmatched(b.stems, a.stems),
    )


# -- word lists -------------------------------------------------------------------------------

_NUMBER_WORDS = {
    "zero": 0, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
    "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "thousand": 1000,
    "million": 10**6, "billion": 10**9, "dozen": 12, "half": 0.5, "twice": 2, "double": 2,
    "triple": 3, "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
    "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12,
    "twentieth": 20,
}  # fmt: skip
_NEGATION = re.compile(
    r"\b(?:not|no|never|without|cannot|none|nobody|nothing|neither|nor|nowhere|cant|dont"
    r"|doesnt|didnt|wont|isnt|arent|wasnt|werent|shouldnt|couldnt|wouldnt|havent|hasnt)\b"
    r"|n't\b"
)
# Negation words that do not negate the question.
_NOT_NEGATING = re.compile(
    r"\b(?:or|if|whether)\s+(?:why\s+)?not\b(?=\s*(?:[?.!,;:)]|$))|\bnot\s+only\b"
    r"|\bno\s+matter\b|\bno\s+doubt\b"
)
# Names written several ways, read as one before anything else.
_ALIASES = re.compile(
    r"\b(?:the\s+)?(?:united\s+states(?:\s+of\s+america)?|u\.s\.a\.?|u\.s\.(?=\s))|\bamerica\b",
    re.IGNORECASE,
)
# Units: symbols on or after a number (case-insensitive), and the ones whose case matters.
_UNIT_SYMBOLS = {
    "mm": "mm", "cm": "cm", "km": "km", "um": "um", "µm": "um", "nm": "nm", "inch": "in",
    "ft": "ft", "yd": "yd", "mi": "mi", "mg": "mg", "kg": "kg", "lb": "lb", "lbs": "lb",
    "oz": "oz", "ml": "ml", "gal": "gal", "mv": "mv", "kv": "kv", "ma": "ma", "kw": "kw",
    "mw": "mw", "kwh": "kwh", "wh": "wh", "mah": "mah", "hz": "hz", "khz": "khz",
    "mhz": "mhz", "ghz": "ghz", "psi": "psi", "bar": "bar", "pa": "pa", "kpa": "kpa",
    "mpa": "mpa", "kn": "kn", "rpm": "rpm", "kb": "kb", "mb": "mb", "gb": "gb", "tb": "tb",
    "ms": "ms", "sec": "s", "secs": "s", "min": "min", "mins": "min", "hr": "h", "hrs": "h",
    "%": "%", "percent": "%", "usd": "$", "eur": "eur", "inr": "inr", "rs": "inr",
    "gbp": "gbp", "cc": "cc", "mph": "mph", "kmh": "kmh", "kph": "kmh", "dpi": "dpi",
    "fps": "fps", "mbps": "mbps", "gbps": "gbps", "db": "db", "lux": "lux", "nmi": "nmi",
}  # fmt: skip
# Symbols that are units wherever they stand ("in psi", "mm or inches").
_UNIT_ANYWHERE = frozenset(
    """mm cm km kg mg ml psi rpm kwh mah mph kph kmh ghz mhz khz hz mbps gbps kpa mpa dpi
    fps""".split()
)
_UNIT_CASED = {"V": "v", "A": "a", "W": "w", "m": "m", "g": "g", "L": "l", "l": "l", "N": "n"}
# Units counted wherever they appear: spelled physical units and currencies.
_UNIT_WORDS = {
    "millimeter": "mm", "millimetre": "mm", "centimeter": "cm", "centimetre": "cm",
    "meter": "m", "metre": "m", "kilometer": "km", "kilometre": "km", "micron": "um",
    "inch": "in", "inches": "in", "feet": "ft", "yard": "yd", "mile": "mi", "gram": "g",
    "milligram": "mg", "kilogram": "kg", "kilo": "kg", "pound": "lb", "ounce": "oz",
    "ton": "t", "tonne": "t", "liter": "l", "litre": "l", "milliliter": "ml",
    "millilitre": "ml", "gallon": "gal", "volt": "v", "millivolt": "mv", "kilovolt": "kv",
    "amp": "a", "ampere": "a", "milliamp": "ma", "watt": "w", "kilowatt": "kw",
    "megawatt": "mw", "hertz": "hz", "celsius": "c", "centigrade": "c", "fahrenheit": "f",
    "kelvin": "k", "newton": "n", "pascal": "pa", "joule": "j", "calorie": "cal",
    "byte": "b", "kilobyte": "kb", "megabyte": "mb", "gigabyte": "gb", "terabyte": "tb",
    "dollar": "$", "euro": "eur", "rupee": "inr", "yen": "jpy", "yuan": "cny",
    "bitcoin": "btc",
}  # fmt: skip
_TIME_UNITS = {
    "s": "s", "second": "s", "minute": "min", "hour": "h", "h": "h", "day": "day",
    "week": "week", "month": "month", "year": "year", "yr": "year", "decade": "decade",
    "century": "century",
}  # fmt: skip
_ANTONYMS = [
    ("on", "off"), ("enable", "disable"), ("start", "stop"), ("open", "close"),
    ("increase", "decrease"), ("increase", "reduce"), ("before", "after"), ("min", "max"),
    ("minimum", "maximum"), ("up", "down"), ("add", "remove"), ("add", "delete"),
    ("buy", "sell"), ("import", "export"), ("upload", "download"), ("encrypt", "decrypt"),
    ("best", "worst"), ("better", "worse"), ("advantage", "disadvantage"), ("pro", "con"),
    ("pros", "cons"), ("input", "output"), ("install", "uninstall"), ("connect", "disconnect"),
    ("lock", "unlock"), ("mount", "unmount"), ("push", "pull"), ("high", "low"),
    ("higher", "lower"), ("highest", "lowest"), ("hot", "cold"), ("fast", "slow"),
    ("positive", "negative"), ("true", "false"), ("win", "lose"), ("gain", "loss"),
    ("gain", "lose"), ("more", "less"), ("more", "fewer"), ("most", "least"),
    ("above", "below"), ("over", "under"), ("inside", "outside"), ("left", "right"),
    ("north", "south"), ("east", "west"), ("first", "last"), ("old", "new"),
    ("cheap", "expensive"), ("cheapest", "expensive"), ("easy", "hard"),
    ("easy", "difficult"), ("legal", "illegal"), ("male", "female"), ("man", "woman"),
    ("men", "women"), ("boy", "girl"), ("love", "hate"), ("like", "dislike"),
    ("accept", "reject"), ("allow", "deny"), ("allow", "block"), ("include", "exclude"),
    ("inbound", "outbound"), ("send", "receive"), ("begin", "end"), ("start", "end"),
    ("start", "finish"), ("enter", "exit"), ("rise", "fall"), ("strong", "weak"),
    ("light", "heavy"), ("light", "dark"), ("day", "night"), ("success", "failure"),
    ("pass", "fail"), ("lend", "borrow"), ("hire", "fire"), ("same", "different"),
    ("similar", "different"), ("similar", "differ"), ("similarity", "difference"),
    ("big", "small"), ("large", "small"), ("long", "short"), ("tall", "short"),
    ("wide", "narrow"), ("thick", "thin"), ("rich", "poor"), ("wet", "dry"),
    ("full", "empty"), ("internal", "external"), ("public", "private"),
    ("online", "offline"), ("debit", "credit"), ("deposit", "withdraw"),
    ("charge", "discharge"), ("heat", "cool"), ("heating", "cooling"), ("freeze", "thaw"),
    ("compress", "decompress"), ("zip", "unzip"), ("mute", "unmute"), ("show", "hide"),
    ("visible", "hidden"), ("forward", "backward"), ("early", "late"), ("past", "future"),
    ("prefix", "suffix"), ("upper", "lower"), ("uppercase", "lowercase"),
    ("attach", "detach"), ("arrive", "depart"), ("login", "logout"), ("ascending", "descending"),
    ("asc", "desc"), ("plus", "minus"), ("inner", "outer"), ("maximize", "minimize"),
    ("maximise", "minimise"), ("overestimate", "underestimate"), ("overrate", "underrate"),
    ("ahead", "behind"), ("front", "back"), ("top", "bottom"), ("agree", "disagree"),
    ("approve", "disapprove"), ("safe", "unsafe"), ("healthy", "unhealthy"),
    ("happy", "sad"), ("good", "bad"), ("right", "wrong"), ("correct", "incorrect"),
    ("valid", "invalid"), ("succeed", "fail"), ("profit", "loss"), ("alive", "dead"),
    ("young", "old"), ("hard", "soft"), ("ingress", "egress"), ("uplink", "downlink"),
    ("upstream", "downstream"), ("upgrade", "downgrade"), ("sunrise", "sunset"),
    ("summer", "winter"), ("inflow", "outflow"), ("income", "expense"),
    ("asset", "liability"), ("shortest", "longest"), ("smallest", "largest"),
    ("slowest", "fastest"), ("oldest", "newest"), ("earliest", "latest"), ("least", "most"),
]  # fmt: skip
_NEG_PREFIXES = ("un", "dis", "non", "in", "im", "il", "ir", "anti", "de")
# Words that frame a question rather than say what it is about.
_STOP = frozenset(
    """a an the this that these those there here it its i me my mine myself we us our ours
    you your yours yourself he him his she her they them their what which who whom whose why
    how when where whether is are was were be been being am do does did doing done have has
    had having can could should would will shall may might must of to in into on at by for
    from with as about than then so and or but if else because while also just only very
    really too such any some all each every both either much many lot lots more other
    another own get got getting gets make makes made someone something anyone anything
    everyone everything one ones way ways method methods procedure procedures step steps
    process tips tip advice thing things kind kinds type types sort sorts know tell explain
    mean meaning meant please help need needs want wants like actually possible possibly
    ever still even good great nice use used uses using usually generally basically people
    person guys guy anybody somebody find think say go going let lets via per vs versus etc
    eg ie whats hows whos im ive youre dont doesnt s t ll d re ve""".split()
)
_SYNONYMS = {
    "kind": "type", "sort": "type", "purchase": "buy", "acquire": "buy", "begin": "start",
    "commence": "start", "initiate": "start", "halt": "stop", "quit": "stop",
    "terminate": "stop", "shut": "close", "obtain": "get", "huge": "big", "large": "big",
    "little": "small", "tiny": "small", "quick": "fast", "rapid": "fast", "quickly": "fast",
    "rapidly": "fast", "cost": "price", "fee": "price", "job": "work", "career": "work",
    "employment": "work", "automobile": "car", "film": "movie", "picture": "photo",
    "image": "photo", "pic": "photo", "mobile": "phone", "cellphone": "phone",
    "smartphone": "phone", "study": "learn", "difference": "differ", "different": "differ",
    "fix": "repair", "mend": "repair", "mistake": "error", "fault": "error",
    "issue": "problem", "trouble": "problem", "gf": "girlfriend", "bf": "boyfriend",
    "us": "usa", "america": "usa", "american": "usa", "uk": "britain", "british": "britain",
    "tv": "television", "website": "site", "webpage": "site", "programming": "code",
    "coding": "code", "switch": "turn",
    "replace": "change", "modify": "change", "alter": "change", "effect": "impact",
    "affect": "impact", "procedure": "process", "approach": "method", "tutorial": "guide",
    "advantage": "pro", "benefit": "pro", "disadvantage": "con", "drawback": "con",
}  # fmt: skip

_TOKEN = re.compile(r"°[CFK]?|[$€£]?\w+(?:[.,'\-/&]\w+)*(?:\+\+|\+|#)?%?|[%$€£]")
_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_ORDINAL = re.compile(r"(\d+)(?:st|nd|rd|th)")
_NUM_TAIL = re.compile(r"[$€£]?\d+(?:[.,]\d+)*-?(\D*)")
_PARTS = re.compile(r"[.,'\-/&]")
_CURRENCY = {"$": "$", "€": "eur", "£": "gbp"}
_PREPOSITIONS = frozenset(
    "of to in into on at by for from with than about over under onto toward towards".split()
)
_COORDINATOR = re.compile(r"\b(?:and|or|vs|versus|nor)\b|&|/|,")
_CONTRACTED = {"won't": "will", "can't": "can", "shan't": "shall", "ain't": "is"}


@dataclass(slots=True)
class _Reading:
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


def _number(raw: str) -> float | None:
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
def _plain_stem(word: str) -> str:
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
def _stem(word: str) -> str:
    w = _plain_stem(_SYNONYMS.get(word, word))
    return _STEM_SYNONYMS.get(w, w)


_STEM_SYNONYMS = {_plain_stem(k): _plain_stem(v) for k, v in _SYNONYMS.items()}


@functools.lru_cache(maxsize=4096)  # a stored question is read once, not per request
def _read(text: str) -> _Reading:
    text = unicodedata.normalize("NFKC", text).replace("\u2019", "'")
    text = _ALIASES.sub("USA", text)
    lower = text.lower()
    r = _Reading(set(), set(), False, False, set(), set(), [], set(), "", set(), frozenset())
    r.negated = bool(_NEGATION.search(_NOT_NEGATING.sub(" ", lower)))
    letters = [ch for ch in text if ch.isalpha()]
    shouting = sum(ch.isupper() for ch in letters) > len(letters) / 2  # capitals say nothing
    lowered: list[str] = []  # every token, lower-case, for the intent
    starts: set[int] = set()  # indices of tokens that start a sentence
    clauses: set[int] = set()  # ... or a clause that asks a question of its own
    stems: list[str] = []
    end = 0
    for m in _TOKEN.finditer(text):
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
        elif low in _CURRENCY or low == "%":
            r.units.add(_CURRENCY.get(low, "%"))
        elif low in _UNIT_ANYWHERE:
            r.units.add(_UNIT_SYMBOLS[low])  # "in psi", "in mm": a unit without a number
        elif _NUM.fullmatch(prev) and (
            low in _UNIT_SYMBOLS or tok in _UNIT_CASED or _plain_stem(low) in _TIME_UNITS
        ):
            # A unit after a number: "10 mm", "230 V", "3 days".
            r.units.add(
                _UNIT_SYMBOLS.get(low) or _UNIT_CASED.get(tok) or _TIME_UNITS[_plain_stem(low)]
            )
        else:
            _read_word(tok, low, len(lowered) - 1 in starts, shouting, r, stems)
        if len(r.units) > units:  # "kilometres to miles": units have an order too
            r.names.extend(f"unit:{u}" for u in sorted(r.units) if f"unit:{u}" not in r.names)
    r.squashed = re.sub(r"[^\w+#]|_", "", lower)
    # "how long", "how many": the adjective belongs to the question word, not the topic.
    asked = {_stem(w) for v, w in itertools.pairwise(lowered) if v == "how" and w in _DEGREE}
    r.stems = set(stems) - asked
    r.intents = _intents(lowered, starts | clauses)
    r.coordinated = _coordinated(r.names, lower)
    return r


def _read_numeric(tok: str, low: str, r: _Reading, stems: list[str]) -> None:
    ordinal = _ORDINAL.fullmatch(low)
    if ordinal:
        r.numbers.add(float(ordinal.group(1)))
        return
    for num in _NUM.finditer(tok):
        value = _number(num.group(0))
        if value is not None:
            r.numbers.add(value)
    if tok[:1] in _CURRENCY:
        r.units.add(_CURRENCY[tok[0]])
    tail = _NUM_TAIL.fullmatch(tok)
    unit = None
    if tail and tail.group(1):  # 3.5mm, 230V, 20%, 5kg
        t = tail.group(1)
        unit = _UNIT_SYMBOLS.get(t.lower()) or _UNIT_CASED.get(t)
        unit = unit or ({"h": "h", "hr": "h", "d": "day"}.get(t) if t.islower() else None)
    if unit:
        r.units.add(unit)
    elif any(ch.isalpha() for ch in tok):  # a code: M8, line-3, C2180-371, i7, 4G, 401k
        code = re.sub(r"[^\w+#]|_", "", low)
        r.entities.add(code)
        r.names.append(code)
        for part in re.findall(r"[^\W\d_]{2,}", low):
            r.words.add(part)
            if part not in _STOP:
                stems.append(_stem(part))


def _read_word(
    tok: str, low: str, start: bool, shouting: bool, r: _Reading, stems: list[str]
) -> None:
    if low.endswith("n't"):  # the negation itself was read from the whole text
        low = _CONTRACTED.get(low, low[:-3])
        r.words.add(low)
        if low not in _STOP:
            stems.append(_stem(low))
        return
    parts = [p for p in _PARTS.split(low) if p]
    if len(parts) > 1 and "-" in low:
        r.words.add("".join(parts))  # non-parametric also reads as nonparametric
    for part in parts:
        r.words.add(part)
        unit = next((_UNIT_WORDS[u] for u in _singulars(part) if u in _UNIT_WORDS), None)
        if unit:
            r.units.add(unit)
        if part == "one":
            r.soft_one = True
        elif part in _NUMBER_WORDS:
            r.numbers.add(float(_NUMBER_WORDS[part]))
        elif part not in _STOP and len(part) > 1 and not _NEGATION.fullmatch(part):
            stems.append(_stem(part))
    core = re.sub(r"[^\w+#]|_", "", re.sub(r"'s?$", "", tok))  # France's -> France
    if not core or shouting or _NEGATION.fullmatch(low) or "'" in low.removesuffix("'s"):
        return
    acronym = core.isupper() and len(core) >= 2  # PLC, EY, and IT or US (not "it", "us")
    if low in _STOP:
        if not acronym:
            return
        stems.append(_SYNONYMS.get(low, low))  # IT, US: a topic, not a pronoun
    if (
        acronym
        or any(ch.isupper() for ch in core[1:])  # GitHub, iPhone
        or (core[0].isupper() and not start and core != "I")  # a name inside a sentence
        or core[-1] in "+#"  # C++, C#
    ):
        name = core.lower()
        r.entities.add(_SYNONYMS.get(name, name))
        r.names.append(_SYNONYMS.get(name, name))


def _singulars(word: str) -> tuple[str, ...]:
    """The word and what it is with a plural ending taken off: miles, inches, feet."""
    out = [word]
    if word.endswith("es"):
        out.append(word[:-2])
    if word.endswith("s"):
        out.append(word[:-1])
    return tuple(out)


def _coordinated(names: list[str], lower: str) -> set[frozenset[str]]:
    """Pairs of names with and / or / vs / between / & between them: a symmetric pair."""
    out: set[frozenset[str]] = set()
    if len(names) < 2 or not re.search(_COORDINATOR, lower):
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
                and re.search(_COORDINATOR, gap)
                and not _PREPOSITIONS.intersection(words)
            ):
                out.add(frozenset((x, y)))
    return out


# -- comparing two readings -------------------------------------------------------------------


def _numbers_differ(a: _Reading, b: _Reading) -> bool:
    diff = a.numbers ^ b.numbers
    if diff == {1.0}:  # "one" on the side without the 1 stands for it
        return not ((1.0 in a.numbers and b.soft_one) or (1.0 in b.numbers and a.soft_one))
    return bool(diff)


_PAIRS = {(x, y) for x, y in _ANTONYMS} | {
    (_plain_stem(x), _plain_stem(y)) for x, y in _ANTONYMS if _plain_stem(x) != _plain_stem(y)
}
_PAIRS |= {(y, x) for x, y in _PAIRS}
_OPPOSITE: dict[str, set[str]] = {}
for _x, _y in _PAIRS:
    _OPPOSITE.setdefault(_x, set()).add(_y)


def _antonym(a: _Reading, b: _Reading) -> bool:
    """A word of `a` whose opposite `b` has, while neither has both sides of it."""
    sa = a.words | {_plain_stem(w) for w in a.words}
    sb = b.words | {_plain_stem(w) for w in b.words}
    for x in sa - sb:
        for y in _OPPOSITE.get(x, ()):
            if y in sb and y not in sa:
                return True
    for w in a.words - b.words:
        for prefix in _NEG_PREFIXES:
            rest = w[len(prefix) :]
            if w.startswith(prefix) and len(rest) >= 4 and rest in b.words:
                if w not in b.squashed:  # not "in front" / "infront"
                    return True
    return False


def _entity_missing(a: _Reading, b: _Reading) -> bool:
    words = b.words | {_SYNONYMS.get(w, w) for w in b.words}
    for ent in a.entities:
        if ent in b.entities or ent in words:
            continue
        # "line-3" / "line 3", "GPT-4" / "GPT 4", "Wi-Fi" / "wifi", "PLCs" / "PLC".
        flat = re.sub(r"[^\w+#]|_", "", ent)
        if (len(flat) >= 3 or any(ch.isdigit() for ch in flat)) and flat in b.squashed:
            continue
        if flat.endswith("s") and len(flat) > 3 and flat[:-1] in words:
            continue
        parts = _PARTS.split(ent)
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


def _names_swapped(a: _Reading, b: _Reading) -> bool:
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


def _intents_match(a: frozenset[str], b: frozenset[str]) -> bool:
    if a == b:
        return True
    if "none" in a or "none" in b:
        other = b if "none" in a else a
        return len(other) == 1 and not other & {"reason", "yesno"}
    return {_SAME_ANSWER.get(x, x) for x in a} == {_SAME_ANSWER.get(x, x) for x in b}
