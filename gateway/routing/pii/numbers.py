"""Numbers with a checksum: payment cards, IBANs and national identifiers, validated by
python-stdnum (Luhn, ISO 7064 mod 97-10, and each country's own rules).

The checksum is what keeps order numbers and serials out: a random 16-digit number passes
Luhn one time in ten, a random IBAN-shaped string passes mod 97 one time in 97, and a
national number's own rules (dates of birth, check letters) reject most of the rest.

Candidates are runs of digit groups as people type them (`4111 1111 1111 1111`,
`4111-1111-1111-1111`, `fr76 3000 6000 0112 3456 7890 189`); a run that holds more than one
number (a card and its expiry, an IBAN and the next word) is tried window by window over its
groups, at most `_MAX_GROUPS` groups a window, so a scan stays linear.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import phonenumbers
from stdnum import luhn
from stdnum.iso7064 import mod_97_10

from .words import NEAR, named

# A run of digit groups separated by one space, dot or hyphen, not inside a Latin word or a
# longer number. Word boundaries are ASCII on purpose: Chinese and Japanese write numbers
# right against the text around them (`連絡先は4111...です`), and `\w` would glue them.
_DIGIT_RUN = re.compile(r"(?<![A-Za-z0-9_])\d+(?:[ .-]\d+)*(?![A-Za-z0-9_])")
# Two letters, two check digits, then letters and digits in groups of any size and case.
_IBAN_RUN = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){8,40}")
# A token of letters and digits with inner `.-/` (no spaces): national numbers with letters.
_TOKEN = re.compile(r"(?<![A-Za-z0-9_])[A-Za-z0-9](?:[.\-/]?[A-Za-z0-9]){6,24}(?![A-Za-z0-9_])")
# An IBAN's shape, valid or not: groups of four with a digit in each.
_ACCOUNT = re.compile(
    r"(?<![A-Za-z0-9_])[A-Za-z]{2}\d{2}(?:[ -]?(?=[A-Za-z]{0,3}\d)[A-Za-z0-9]{4}){2,8}"
    r"(?:[ -]?\d{1,4})?(?![A-Za-z0-9_])"
)
_SEPARATORS = re.compile(r"[ .-]")
# The same runs, only those of 12 digits or more (the regex engine skips the rest).
# (The digit comes before the look-behind so the engine can skip ahead to digits.)
_LONG_RUN = re.compile(r"\d(?<![A-Za-z0-9_]\d)(?:[ .-]?\d){11,}(?![A-Za-z0-9_])")
# What every IBAN starts with, looked for once before the patterns that must try each letter.
_IBAN_START = re.compile(r"\d(?<=[A-Za-z]{2}\d)\d")  # digits first: the engine skips to them
_ASCII_ALNUM = re.compile(r"[A-Za-z0-9]")
# `SN-6382-3308-4653`, `INV-2024-...`: digits hyphenated onto letters are a code's.
_CODE_PREFIX = re.compile(r"[A-Za-z]-$")
_COUNTRIES = frozenset(phonenumbers.SUPPORTED_REGIONS)  # ISO 3166 alpha-2 codes
_MAX_GROUPS = 19  # a window never spans more groups than a card has digits

# Maestro is the one scheme with 12-digit cards; its numbers start 0, 5 or 6.
_TWELVE_DIGIT_PREFIXES = ("0", "5", "6")


def _windows(groups: list[str], low: int, high: int) -> Iterator[str]:
    """Every run of consecutive groups whose digits number from `low` to `high`, longest
    first for each start."""
    for start in range(len(groups)):
        total = 0
        ends: list[int] = []
        for end in range(start, min(len(groups), start + _MAX_GROUPS)):
            total += len(groups[end])
            if total > high:
                break
            if total >= low:
                ends.append(end)
        for end in reversed(ends):
            yield "".join(groups[start : end + 1])


def _card_ok(digits: str) -> bool:
    if digits.startswith("00"):
        return False  # the international call prefix: `0097042953832` is a phone number
    if len(digits) == 12 and not digits.startswith(_TWELVE_DIGIT_PREFIXES):
        return False
    return luhn.is_valid(digits)


def card_spans(text: str, accounts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Where payment card numbers (12 to 19 digits, Luhn) are in folded text, outside the
    IBAN-shaped `accounts`."""
    spans = []
    for m in _LONG_RUN.finditer(text):
        run = m.group()
        if len(run) < 12:
            continue
        if any(start <= m.start() < end for start, end in accounts):
            continue
        if (
            len(run) - run.count(" ") - run.count(".") - run.count("-") < 12
            or text[max(0, m.start() - 2) : m.start()].strip() == "+"
        ):
            continue  # a `+` starts an international phone number, never a card
        if _CODE_PREFIX.search(text, max(0, m.start() - 2), m.start()):
            continue
        groups = _SEPARATORS.split(run)
        labelled = named(text[max(0, m.start() - NEAR) : m.start()]) == "other"
        if any(
            _card_ok(w) and not (labelled and len(w) == 12)  # `S/N 6786...`: a serial
            for w in _windows(groups, 12, 19)
            if _card_grouped(w, groups)
        ):
            spans.append(m.span())
    return spans


def _card_grouped(window: str, groups: list[str]) -> bool:
    """Cards are printed in groups that start with four digits (4-4-4-4, 4-6-5) or in none;
    `001-335-504-9258` is a phone number's grouping."""
    for i, g in enumerate(groups):
        if window.startswith(g) and "".join(groups[i:]).startswith(window):
            return len(g) == 4 or len(g) == len(window)
    return True


def may_hold_iban(text: str) -> bool:
    """Two letters and two digits somewhere: else neither IBANs nor account numbers."""
    return _IBAN_START.search(text) is not None


def account_spans(text: str) -> list[tuple[int, int]]:
    """Where IBAN-shaped account numbers are, valid or not: their digit groups are never
    read as a card's or a phone number's."""
    return [m.span() for m in _ACCOUNT.finditer(text)]


def iban_ok(candidate: str) -> bool:
    """An IBAN in any case and grouping: 15 to 34 characters that pass ISO 7064 mod 97-10
    (12 to 14 too: account numbers of that form outside the IBAN registry, as some banks
    print them), behind a real ISO 3166 country code.

    The country's own length is not required: a person reads a well-formed number with a
    valid check as an IBAN whatever the country's registry says."""
    s = re.sub(r"[ -]", "", candidate).upper()
    if not 12 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    if s[:2] not in _COUNTRIES:
        return False
    return bool(mod_97_10.is_valid(s[4:] + s[:4]))


def iban_spans(text: str) -> list[tuple[int, int]]:
    """Where IBANs are in folded text. A run that goes on into the next word ("... 189
    please") is cut back, but only where a group ends: a longer token (a hash, a uuid) is
    never cut to an IBAN-shaped prefix."""
    spans = []
    for m in _IBAN_RUN.finditer(text):
        raw = m.group()
        # (characters of the IBAN so far, where in `raw` they end) after each group: a group
        # ends at a separator, or at the run's end when the text goes on with no letter or
        # digit.
        ends, n = [], 0
        for i, c in enumerate(raw):
            if c in " -":
                ends.append((n, i))
            else:
                n += 1
        if _ASCII_ALNUM.match(text, m.end()) is None:
            ends.append((n, len(raw)))
        compact = re.sub(r"[ -]", "", raw)
        for k, end in reversed(ends):
            if iban_ok(compact[:k]):
                spans.append((m.start(), m.start() + end))  # the IBAN, not the words after
                break
    return spans


# National identifiers python-stdnum validates, by ISO 3166 region. Loaded only with
# `national_id` in privacy.kinds, for those of privacy.regions listed here.
NATIONAL_IDS: dict[str, tuple[str, ...]] = {
    "US": ("stdnum.us.ssn",),
    "FR": ("stdnum.fr.nir",),
    "DE": ("stdnum.de.idnr",),
    "NL": ("stdnum.nl.bsn",),
    "PL": ("stdnum.pl.pesel",),
    "SE": ("stdnum.se.personnummer",),
    "BR": ("stdnum.br.cpf",),
    "IN": ("stdnum.in_.aadhaar",),
    "ES": ("stdnum.es.dni", "stdnum.es.nie"),
    "IT": ("stdnum.it.codicefiscale",),
    "GB": ("stdnum.gb.nhs",),
    "DK": ("stdnum.dk.cpr",),
    "CZ": ("stdnum.cz.rc",),
    "TR": ("stdnum.tr.tckimlik",),
    "CH": ("stdnum.ch.ssn",),
    "BE": ("stdnum.be.nn",),
    "CN": ("stdnum.cn.ric",),
    "FI": ("stdnum.fi.hetu",),
    "NO": ("stdnum.no.fodselsnummer",),
    "PT": ("stdnum.pt.cc",),
    "MX": ("stdnum.mx.curp",),
    "ZA": ("stdnum.za.idnr",),
    "KR": ("stdnum.kr.rrn",),
    "AT": ("stdnum.at.vnr",),
}


def national_validators(regions: list[str]) -> list[Callable[[str], bool]]:
    out = []
    for region in regions:
        for name in NATIONAL_IDS[region]:
            module: Any = importlib.import_module(name)
            out.append(module.is_valid)
    return out


def has_national_id(text: str, validators: list[Callable[[str], bool]]) -> bool:
    """A national identifier any of `validators` accepts: digit runs (windows of 8 to 13
    digits) and tokens of letters and digits (a codice fiscale, a DNI, a CURP)."""
    if not validators:
        return False
    for m in _DIGIT_RUN.finditer(text):
        groups = _SEPARATORS.split(m.group())
        for window in _windows(groups, 8, 13):
            if any(ok(window) for ok in validators):
                return True
    for m in _TOKEN.finditer(text):
        token = m.group()
        if token.isdigit() or sum(c.isdigit() for c in token) < 5:
            continue  # digit-only runs were tried above; words are not identifiers
        if any(ok(token) for ok in validators):
            return True
    return False
