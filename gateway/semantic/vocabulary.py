"""The words and patterns the semantic cache's verifier reads (verifier.py says how).

English: numbers spelled out, negations, units, opposites, function words and synonyms. A
domain with its own opposites or units adds them here.
"""

from __future__ import annotations

import re

NUMBER_WORDS = {
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
NEGATION = re.compile(
    r"\b(?:not|no|never|without|cannot|none|nobody|nothing|neither|nor|nowhere|cant|dont"
    r"|doesnt|didnt|wont|isnt|arent|wasnt|werent|shouldnt|couldnt|wouldnt|havent|hasnt)\b"
    r"|n't\b"
)
# Negation words that do not negate the question.
NOT_NEGATING = re.compile(
    r"\b(?:or|if|whether)\s+(?:why\s+)?not\b(?=\s*(?:[?.!,;:)]|$))|\bnot\s+only\b"
    r"|\bno\s+matter\b|\bno\s+doubt\b"
)
# Names written several ways, read as one before anything else.
ALIASES = re.compile(
    r"\b(?:the\s+)?(?:united\s+states(?:\s+of\s+america)?|u\.s\.a\.?|u\.s\.(?=\s))|\bamerica\b",
    re.IGNORECASE,
)
# Units: symbols on or after a number (case-insensitive), and the ones whose case matters.
UNIT_SYMBOLS = {
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
UNIT_ANYWHERE = frozenset(
    """mm cm km kg mg ml psi rpm kwh mah mph kph kmh ghz mhz khz hz mbps gbps kpa mpa dpi
    fps""".split()
)
UNIT_CASED = {"V": "v", "A": "a", "W": "w", "m": "m", "g": "g", "L": "l", "l": "l", "N": "n"}
# Units counted wherever they appear: spelled physical units and currencies.
UNIT_WORDS = {
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
TIME_UNITS = {
    "s": "s", "second": "s", "minute": "min", "hour": "h", "h": "h", "day": "day",
    "week": "week", "month": "month", "year": "year", "yr": "year", "decade": "decade",
    "century": "century",
}  # fmt: skip
ANTONYMS = [
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
NEG_PREFIXES = ("un", "dis", "non", "in", "im", "il", "ir", "anti", "de")
# Words that frame a question rather than say what it is about.
STOP = frozenset(
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
SYNONYMS = {
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

TOKEN = re.compile(r"°[CFK]?|[$€£]?\w+(?:[.,'\-/&]\w+)*(?:\+\+|\+|#)?%?|[%$€£]")
NUM = re.compile(r"\d+(?:[.,]\d+)*")
ORDINAL = re.compile(r"(\d+)(?:st|nd|rd|th)")
NUM_TAIL = re.compile(r"[$€£]?\d+(?:[.,]\d+)*-?(\D*)")
PARTS = re.compile(r"[.,'\-/&]")
CURRENCY = {"$": "$", "€": "eur", "£": "gbp"}
PREPOSITIONS = frozenset(
    "of to in into on at by for from with than about over under onto toward towards".split()
)
COORDINATOR = re.compile(r"\b(?:and|or|vs|versus|nor)\b|&|/|,")
CONTRACTED = {"won't": "will", "can't": "can", "shan't": "shall", "ain't": "is"}
