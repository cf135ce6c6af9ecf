"""One detector per policy: folds the text as a person reads it, then asks each kind's
library whether it holds private data. Fails closed: a scan that cannot finish reports
`unscanned`, which every privacy rule treats as private data."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from stdnum import damm, luhn, verhoeff
from stdnum.iso7064 import mod_11_2, mod_11_10, mod_37_2, mod_97_10

from . import numbers, text
from .config import UNSCANNED, OperatorPattern, PrivacyConfig
from .emails import has_email, mentions_at
from .phones import PhoneFinder

log = logging.getLogger(__name__)

_CHECKSUMS: dict[str, Callable[[str], bool]] = {
    "none": lambda _s: True,
    "luhn": luhn.is_valid,
    "mod97": mod_97_10.is_valid,
    "mod11_2": mod_11_2.is_valid,
    "mod11_10": mod_11_10.is_valid,
    "mod37_2": mod_37_2.is_valid,
    "verhoeff": verhoeff.is_valid,
    "damm": damm.is_valid,
}
# Digits in any script have been folded to ASCII; a request without a digit, an `@` or a
# bracketed "at" cannot hold any built-in kind (operator patterns are tried regardless).
_DIGIT = re.compile(r"\d")
_ALNUM = re.compile(r"[^0-9A-Za-z]")
_NON_DIGIT = re.compile(r"\D")
_DIGIT_CHECKSUMS = ("luhn", "verhoeff", "damm", "mod11_10")


class ScanTimeout(Exception):
    """The scan went past `privacy.timeout_ms`."""


class _Pattern:
    def __init__(self, spec: OperatorPattern) -> None:
        self.name = spec.name
        self.regex = re.compile(spec.regex, re.IGNORECASE if spec.ignore_case else 0)
        self.checksum = _CHECKSUMS[spec.checksum]
        self.any = spec.checksum == "none"
        # Luhn, Verhoeff, Damm and mod 11,10 check digits: the match's digits (`PID` + a
        # number); the others check letters too (ISO 7064 mod 97-10, 11-2 with X, 37-2).
        self.keep = _NON_DIGIT if spec.checksum in _DIGIT_CHECKSUMS else _ALNUM

    def found(self, text: str) -> bool:
        for m in self.regex.finditer(text):
            if self.any:
                return True
            try:
                if self.checksum(self.keep.sub("", m.group()).upper()):
                    return True
            except Exception:  # stdnum raises on letters where its algorithm takes digits
                continue
        return False


class Detector:
    """The kinds of private data in a text, under one policy's `privacy:` configuration."""

    def __init__(self, config: PrivacyConfig) -> None:
        self.config = config
        kinds = set(config.kinds)
        self._email = "email" in kinds
        self._card = "card" in kinds
        self._iban = "iban" in kinds
        self._phones = PhoneFinder(config.regions) if "phone" in kinds else None
        self._national = numbers.national_validators(config.national_id_regions())
        self._patterns = [_Pattern(p) for p in config.patterns]
        text.prepare()

    def find(self, raw: str) -> tuple[str, ...]:
        """The kinds found, in a fixed order, each at most once. Never raises: past the size
        or time budget, or on any error, the answer is (`unscanned`,)."""
        if len(raw) > self.config.max_scan_chars:
            log.warning("privacy scan skipped: text over privacy.max_scan_chars")
            return (UNSCANNED,)
        try:
            return self._find(raw, time.monotonic() + self.config.timeout_ms / 1000)
        except ScanTimeout:
            log.warning("privacy scan stopped: past privacy.timeout_ms")
        except Exception as exc:
            # The error's class only: its message could quote the text.
            log.error("privacy scan failed", extra={"error": type(exc).__name__})
        return (UNSCANNED,)

    def _find(self, raw: str, deadline: float) -> tuple[str, ...]:
        found: list[str] = []
        folded = text.fold(raw)
        if _DIGIT.search(folded) is not None or mentions_at(folded):
            found.extend(self._builtin(folded, deadline))
        for pattern in self._patterns:
            _check(deadline)
            if pattern.found(folded):
                found.append(pattern.name)
        return tuple(found)

    def _builtin(self, folded: str, deadline: float) -> list[str]:
        found: list[str] = []
        if self._email and has_email(folded):
            found.append("email")
        _check(deadline)
        # Cards and IBANs first: their digit groups are never read again as phone numbers,
        # nor are those of an IBAN-shaped account number that fails its check.
        ibans = numbers.may_hold_iban(folded)
        accounts = numbers.account_spans(folded) if ibans else []
        taken = list(accounts)
        if self._card or self._phones is not None:
            cards = numbers.card_spans(folded, accounts)
            taken += cards
            if self._card and cards:
                found.append("card")
        _check(deadline)
        valid = numbers.iban_spans(folded) if ibans else []
        taken += valid
        if self._iban and valid:
            found.append("iban")
        _check(deadline)
        if self._phones is not None and self._phones.found(
            _blank(folded, taken), lambda: _check(deadline)
        ):
            found.append("phone")
        _check(deadline)
        if self._national and numbers.has_national_id(folded, self._national):
            found.append("national_id")
        return found


def _blank(s: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return s
    chars = list(s)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def _check(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise ScanTimeout
