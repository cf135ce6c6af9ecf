"""Private-data detection from libraries made for it: libphonenumber for phone numbers,
python-stdnum for cards, IBANs and national identifiers, an IDN-aware pattern for e-mail
addresses, and the operator's own patterns; over text folded as a person reads it.

Kinds (docs/ROUTING.md, README's privacy section): `email`, `phone`, `card`, `iban`,
`national_id` (opt-in), each operator pattern's name, and `unscanned` / `token_ids` when a
scan could not rule private data out (fail closed).
"""

from __future__ import annotations

import functools

from .config import (
    BUILTIN_KINDS,
    DEFAULT_REGIONS,
    TOKEN_IDS,
    UNKNOWN_KINDS,
    UNSCANNED,
    OperatorPattern,
    PrivacyConfig,
)
from .detector import Detector
from .numbers import iban_ok

__all__ = [
    "BUILTIN_KINDS",
    "DEFAULT_REGIONS",
    "TOKEN_IDS",
    "UNKNOWN_KINDS",
    "UNSCANNED",
    "Detector",
    "OperatorPattern",
    "PrivacyConfig",
    "default_detector",
    "detect_pii",
    "iban_ok",
    "luhn_ok",
]


@functools.cache
def default_detector() -> Detector:
    """The detector of a policy without a `privacy:` section (built once)."""
    return Detector(PrivacyConfig())


def detect_pii(text: str) -> tuple[str, ...]:
    """The kinds of private data in `text` under the default configuration."""
    return default_detector().find(text)


def luhn_ok(digits: str) -> bool:
    from stdnum import luhn

    return bool(luhn.is_valid(digits))
