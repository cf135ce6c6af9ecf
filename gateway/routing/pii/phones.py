"""Phone numbers as people write them in any country, judged by Google's libphonenumber
(the `phonenumbers` package): national and international prefixes (`+`, `00`, a trunk `0`,
`+44 (0)`), any grouping (`02 72 96 45 13`, `0131 4960551`, `(030) 1234-5678`,
`090-3915-0008`), extensions (`x751`, `ext. 12`, `poste 4`), bare digits.

A cheap pattern finds runs of digits a person could read as a number; libphonenumber
decides whether one is a phone number of a country it knows (with a `+`/`00` prefix) or of
one of the configured regions. How sure it must be depends on how the number is written,
as a person reading it would be:
- with an international prefix, a number of a real country code and a possible length;
- with a trunk `0`, parentheses, a NANP `555-123-4567` shape or a phone word near it
  (`tel`, `call`, `Handy`, `電話`...), a possible number in one of the regions;
- bare (`8323173008`, `13812345678`), a valid number (right length and number range) in
  one of the regions.
Dates, times, IP addresses, decimals, amounts, and numbers labelled as something else
(`order`, `invoice`, `serial`, `lot`...) are not phone numbers. Every pattern is bounded:
the scan is linear in the text's length.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import phonenumbers
from phonenumbers import NumberParseException

from .words import NEAR, named

_EXT = r"(?:ext\.?|extn\.?|extension|x|poste|Durchwahl|DW|доб\.?|内線|分机|转|#)"
_CANDIDATE = re.compile(
    r"(?<![A-Za-z0-9_+@/.,:-])"
    r"(?P<num>(?:\+ ?|\(\+?)?\d(?:[ ./()\-]{1,3}\d|\d){5,19})"
    rf"(?P<ext>\s?{_EXT}\s?\d{{1,6}})?"
    r"(?![A-Za-z0-9_]|[-./:]\d)"  # never cut inside a run of numbers (`2027-12-14T20`)
)
_GROUPS = re.compile(r"\d+")
# Digits spaced or hyphenated, nothing else: a version's dots and a date's slashes are not.
_SPACED = re.compile(r"\d+(?:[ -]\d+)+")
# Six digits close together, which every candidate has: a quick scan (it starts with a digit,
# so the engine skips ahead to digits) before the candidate pattern tries every position.
_SIX_DIGITS = re.compile(r"\d(?:[ ./()\-]{0,3}\d){5}")
_DATE = re.compile(
    r"(?:(?:19|20)\d\d[-./](?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[-./](?:0?[1-9]|1[0-2])[-./](?:19|20)?\d\d"
    r"|(?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])[-./](?:19|20)?\d\d"
    r"|(?:0?[1-9]|1[0-2])[/.-](?:19|20)\d\d"  # a month: `12/2002`
    # a day and month before a range: `26.09.-01.02.2017`
    r"|(?:0?[1-9]|[12]\d|3[01])\.(?:0?[1-9]|1[0-2])\.(?=[ -]))(?![\d]|\.\d)"
)
_COMPACT_DATE = re.compile(
    r"(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0[1-9]|[12]\d|3[01])(?:0[1-9]|1[0-2])(?:19|20)\d\d"
)
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_NANP = re.compile(r"(?:1[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}")
# What comes right after a measurement or an amount. Units that are also words or
# particles of the languages around a phone number (`in`, `s'il`, `A bientôt`, `h`) are left
# out: a phone number followed by one must not be taken for a measurement.
_UNIT_AFTER = re.compile(
    r"\s?(?:%|°|‰|[€$£¥₹₺]"
    r"|(?:[kKMGTmµnc](?:g|m|l|L|W|Wh|V|A|Hz|Pa|B|b|s|t|J|N|bar)|g|m|V|W|l)(?=[\s.,;:)]|$)"
    r"|(?:Hz|Pa|bar|min|sec|rpm|psi|ft|lb|lbs|oz|km/h|mph|EUR|USD|GBP|CHF|JPY|CNY|INR|kr|zł|Kč|TL"
    r"|hPa|kWh|MWh|ppm|px|dB|dpi|mAh|kcal|bytes|byte|octets|bits|people|persons|users|"
    r"units|items|pieces|pcs|visitors|inhabitants|residents|rows|records|views|"
    r"downloads|tons|tonnes|words|characters|chars|tokens|votes|Einwohner|habitants|"
    r"Stück|personnes|personas|abitanti)\b)"
)
_CURRENCIES = ("€", "$", "£", "¥", "₹", "₺", "EUR", "USD", "GBP", "CHF", "CNY", "JPY", "INR")


class PhoneFinder:
    """Built once per policy: the regions whose national numbers are looked for."""

    def __init__(self, regions: Iterable[str]) -> None:
        self.regions = tuple(regions)
        for region in self.regions:  # libphonenumber loads a region's metadata on first use
            if phonenumbers.PhoneMetadata.metadata_for_region(region) is None:
                raise ValueError(f"libphonenumber knows no region {region!r}")

    def found(self, text: str, check: Callable[[], None]) -> bool:
        """Whether `text` holds a phone number; `check` runs before each candidate (the
        caller's deadline)."""
        if _SIX_DIGITS.search(text) is None:
            return False  # most text: no run of six digits, nothing to read
        for m in _CANDIDATE.finditer(text):
            check()
            if self._is_phone(text, m):
                return True
        return False

    def _is_phone(self, text: str, m: re.Match[str]) -> bool:
        raw = m.group("num")
        international = raw.startswith(("+", "(+"))
        extension = m.group("ext") is not None
        whole = international or not _excluded_shape(raw)
        if not whole and " " not in raw:
            return False  # a date, an address, a decimal: the cheap answer, most numbers
        if not extension:
            if _UNIT_AFTER.match(text, m.end("num"), m.end("num") + 12):
                return False
            if text[max(0, m.start() - 6) : m.start()].rstrip().endswith(_CURRENCIES):
                return False
        said = named(text[max(0, m.start() - NEAR) : m.start()])
        if said == "other" and not international:
            return False
        if whole and self._judge(raw, said == "phone", extension=extension):
            return True
        # A run that holds a phone number beside other numbers (`2024-03-15 06 12 34 56 78`)
        # is tried in parts between spaces, never cut inside a spaced-out group; and only
        # where the run is written two ways (a date's hyphens, then a number's spaces): a run
        # spaced all alike is one thing, a list (`13 35 36 15 26 33`) or one number.
        groups = list(_GROUPS.finditer(raw))
        seps = [raw[groups[i - 1].end() : groups[i].start()] for i in range(1, len(groups))]
        if len(set(seps)) < 2:
            return False
        cuts = [0] + [i for i in range(1, len(groups)) if " " in seps[i - 1]]
        if len(cuts) < 2:
            return False
        ends = [c - 1 for c in cuts[1:]] + [len(groups) - 1]
        for start in cuts:
            for end in reversed(ends):
                if end < start or (start == 0 and end == len(groups) - 1):
                    continue
                part = raw[groups[start].start() : groups[end].end()]
                if start == 0 and raw[0] in "+(":
                    part = raw[: groups[end].end()]
                if not 7 <= sum(c.isdigit() for c in part) <= 15 or _excluded_shape(part):
                    continue
                if self._judge(part, said == "phone", extension=False):
                    return True
        return False

    def _judge(self, raw: str, phone_word: bool, *, extension: bool) -> bool:
        digits = "".join(c for c in raw if c.isdigit())
        if raw.startswith(("+", "(+")) or (
            raw.startswith("00") and len(digits) >= 9 and digits[2] != "0"
        ):
            number = "+" + (digits if raw.lstrip("(").startswith("+") else digits[2:])
            # A `+` and a real country code: a person reads a phone number, whether or not
            # the rest has that country's length (fake and mistyped numbers are private too).
            if 8 <= len(digits) <= 17 and _country_code(number):
                return True
        if not 6 <= len(digits) <= 15:
            return False
        sizes = [len(g) for g in _GROUPS.findall(raw)]
        if len(sizes) >= 6 and set(sizes) == {2}:
            return False  # six pairs or more: a list of small numbers, not a national number
        sure = (
            digits[0] == "0"
            or "(" in raw
            or extension
            or phone_word
            or _NANP.fullmatch(raw) is not None
        )
        if sure:
            shortest = 6 if phone_word else 7  # `My phone is 800193`
            return len(digits) >= shortest and any(_possible(raw, r) for r in self.regions)
        if not raw.isdigit():
            # Spaced out in pairs and small groups as people space phone numbers, three
            # groups or more (`706 69 07`, `605 702 73 46`): a possible number of a region.
            # Grouped as an amount: only as the region groups its valid numbers (`609 141
            # 777` in Poland; `238 514 626` is grouped as no region does). Otherwise a valid
            # number of a region (`6974 002 975` in Greece).
            if len(digits) >= 7 and _phone_grouping(raw):
                return any(_possible(raw, r) for r in self.regions)
            if _thousands(raw) or not _SPACED.fullmatch(raw):
                return any(_fits(raw, r) for r in self.regions)
            return any(_valid(raw, r) for r in self.regions)
        if len(digits) < 8 or _COMPACT_DATE.fullmatch(digits):
            return False
        return any(_valid(raw, r) for r in self.regions)


def _phone_grouping(raw: str) -> bool:
    """Three or more groups of 2 to 4 digits, some of 2 and some longer (a serial's groups
    are all of 4, an amount's thousands of 3, a list of small numbers all of 2)."""
    sizes = [len(g) for g in _GROUPS.findall(raw)]
    return len(sizes) >= 3 and all(2 <= n <= 4 for n in sizes) and 2 in sizes and max(sizes) > 2


def _thousands(raw: str) -> bool:
    """Grouped as an amount is (`238 514 626`, `1.234.567`): one to three digits, then
    groups of three."""
    sizes = [len(g) for g in _GROUPS.findall(raw)]
    return sizes[0] <= 3 and all(n == 3 for n in sizes[1:])


def _fits(raw: str, region: str) -> bool:
    """A valid number of `region` whose digit groups, as written, fall where the region's
    own national format puts them (or merge some of them)."""
    try:
        number = phonenumbers.parse(raw, region)
    except NumberParseException:
        return False
    if not phonenumbers.is_valid_number(number):
        return False
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    return _boundaries(raw) <= _boundaries(national) and len(_digits(raw)) == len(_digits(national))


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _boundaries(s: str) -> set[int]:
    """After how many digits a group ends (the last group's end not counted)."""
    out, count = set(), 0
    for g in _GROUPS.findall(s):
        count += len(g)
        out.add(count)
    out.discard(count)
    return out


def _excluded_shape(raw: str) -> bool:
    s = raw.strip("()+ ")
    return _DATE.match(s) is not None or _IPV4.fullmatch(s) is not None or _is_decimal(s)


def _is_decimal(s: str) -> bool:
    """`1.013.250,5` or `3.14159` read as a quantity: a dot with three or more groups of
    three, or a single dot in a short number."""
    groups = s.split(".")
    if len(groups) == 2 and len(groups[0]) <= 3 and " " not in s and "-" not in s:
        return True
    return False


def _country_code(number: str) -> bool:
    try:
        phonenumbers.parse(number, None)
    except NumberParseException:
        return False
    return True


def _possible(raw: str, region: str | None) -> bool:
    try:
        number = phonenumbers.parse(raw, region)
    except NumberParseException:
        return False
    return bool(phonenumbers.is_possible_number(number))


def _valid(raw: str, region: str) -> bool:
    try:
        number = phonenumbers.parse(raw, region)
    except NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))
