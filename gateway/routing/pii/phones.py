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
    r"(?![A-Za-z0-9_])"
)
_GROUPS = re.compile(r"\d+")
_DATE = re.compile(
    r"(?:(?:19|20)\d\d[-./](?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])"
    r"|(?:0?[1-9]|[12]\d|3[01])[-./](?:0?[1-9]|1[0-2])[-./](?:19|20)?\d\d"
    r"|(?:0?[1-9]|1[0-2])[-./](?:0?[1-9]|[12]\d|3[01])[-./](?:19|20)?\d\d)(?!\d)"
)
# Dates (and date-times) anywhere in a text, not inside a longer run of digits and dots:
# `03.12.19.45.67` is a French phone number, `03.12.19` a date.
_DATE_IN_TEXT = re.compile(
    r"(?<![\d.])(?:"
    r"(?:19|20)\d\d([-./])(?:0?[1-9]|1[0-2])\1(?:0?[1-9]|[12]\d|3[01])"
    r"(?:[T ]\d\d?:\d\d(?::\d\d)?)?"
    r"|(?:0?[1-9]|[12]\d|3[01])([-./])(?:0?[1-9]|1[0-2])\2(?:19|20)?\d\d"
    r"|(?:0?[1-9]|1[0-2])/(?:0?[1-9]|[12]\d|3[01])/(?:19|20)?\d\d"
    r"|(?:0?[1-9]|[12]\d|3[01])\.(?:0?[1-9]|1[0-2])\.(?=[\s-]|$)"
    r")(?!\d|[.]\d)"
)
_COMPACT_DATE = re.compile(
    r"(?:19|20)\d\d(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])"
    r"|(?:0[1-9]|[12]\d|3[01])(?:0[1-9]|1[0-2])(?:19|20)\d\d"
)
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_NANP = re.compile(r"\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}")
# What comes right after a measurement or an amount, or right before an amount.
_UNIT_AFTER = re.compile(
    r"\s?(?:%|°|‰|[€$£¥₹₺]|(?:[kKMGTmµnc]?(?:g|m|l|L|W|Wh|V|A|Hz|Pa|B|b|s|t|J|N|bar)"
    r"|h|min|sec|rpm|psi|ft|in|mi|lb|lbs|oz|km/h|mph|EUR|USD|GBP|CHF|JPY|CNY|INR|kr|zł|Kč|TL"
    r"|hPa|kWh|MWh|ppm|px|pt|dB|dpi|mAh|cal|kcal|bytes|byte|octets|bits|people|persons|users|"
    r"units|items|pieces|pcs|times|visitors|inhabitants|residents|rows|records|views|"
    r"downloads|tons|tonnes|words|characters|chars|tokens|steps|votes|Einwohner|habitants|"
    r"Stück|personnes|personas|abitanti)\b)"
)
_AMOUNT_BEFORE = re.compile(r"(?:[€$£¥₹₺]|EUR|USD|GBP|CHF|CNY|JPY|INR|R\$)\s?$")


class PhoneFinder:
    """Built once per policy: the regions whose national numbers are looked for."""

    def __init__(self, regions: Iterable[str]) -> None:
        self.regions = tuple(regions)
        for region in self.regions:  # libphonenumber loads a region's metadata on first use
            if phonenumbers.PhoneMetadata.metadata_for_region(region) is None:
                raise ValueError(f"libphonenumber knows no region {region!r}")

    @staticmethod
    def not_phones(text: str) -> list[tuple[int, int]]:
        """Where dates are: their digits are never read as a phone number's."""
        return [m.span() for m in _DATE_IN_TEXT.finditer(text)]

    def found(self, text: str, check: Callable[[], None]) -> bool:
        """Whether `text` holds a phone number; `check` runs before each candidate (the
        caller's deadline)."""
        for m in _CANDIDATE.finditer(text):
            check()
            if self._is_phone(text, m):
                return True
        return False

    def _is_phone(self, text: str, m: re.Match[str]) -> bool:
        raw = m.group("num")
        before = text[max(0, m.start() - NEAR) : m.start()]
        said = named(before)
        international = raw.startswith(("+", "(+"))
        if said == "other" and not international:
            return False
        after = text[m.end("num") : m.end("num") + 12]
        if m.group("ext") is None and (_UNIT_AFTER.match(after) or _AMOUNT_BEFORE.search(before)):
            return False
        if not international and _excluded_shape(raw):
            return False
        extension = m.group("ext") is not None
        if self._judge(raw, said == "phone", extension=extension):
            return True
        # A run that holds a phone number beside other numbers: try it group by group.
        groups = list(_GROUPS.finditer(raw))
        if len(groups) < 3:
            return False
        for start in range(len(groups)):
            for end in range(len(groups) - 1, start, -1):
                if start == 0 and end == len(groups) - 1:
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
            if 7 <= len(digits) <= 17 and _possible(number, None):
                return True
        if not 6 <= len(digits) <= 15:
            return False
        sure = (
            digits[0] == "0"
            or "(" in raw
            or extension
            or phone_word
            or _NANP.fullmatch(raw) is not None
        )
        if sure:
            return len(digits) >= 7 and any(_possible(raw, r) for r in self.regions)
        if not raw.isdigit():
            # Grouped as the region groups its numbers: `609 141 777` in Poland, `91 41 77 76`
            # or `9141 7776` in Denmark; `238 514 626` (bytes) is grouped as no region does.
            return any(_fits(raw, r) for r in self.regions)
        if len(digits) < 8 or _COMPACT_DATE.fullmatch(digits):
            return False
        return any(_valid(raw, r) for r in self.regions)


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
