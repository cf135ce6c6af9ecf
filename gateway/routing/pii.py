"""Private-data detection: cheap regexes, with checksums where the format has one.

Every pattern is anchored or bounded so that a scan is linear in the text's length: this runs
on the request path, on text a client chose.

Detected kinds (documented in docs/ROUTING.md):
- `email`: local@domain.tld
- `phone`: international (+CC ...) or common national formats with 9 to 15 digits
- `card`: 13 to 19 digit payment card numbers that pass the Luhn check
- `iban`: IBANs (two letters, two check digits, up to 30 alphanumerics) that pass mod-97
"""

from __future__ import annotations

import re

# Anchored on the `@` (one local-part character before it is enough to call it an address),
# with bounded label counts and lengths: linear time. An unanchored `[...]+@` pattern retries
# from every start position and is quadratic on "aaaa...@b".
_EMAIL = re.compile(
    r"[A-Za-z0-9._%+-]@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}"
)
# + country code, or a grouped national number like (030) 1234-5678 or 555-123-4567.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(?\d{1,4}\)?[\s.-]?){2,5}\d{2,4}"
    r"|\(?\d{3,4}\)?[\s.-]\d{3,4}[\s.-]\d{3,4})(?!\w)"
)
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def detect_pii(text: str) -> tuple[str, ...]:
    """The kinds of private data found in `text`, in a fixed order, each at most once."""
    found: list[str] = []
    if "@" in text and _EMAIL.search(text):
        found.append("email")
    cards = False
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            cards = True
            break
    if cards:
        found.append("card")
    for m in _IBAN.finditer(text):
        if iban_ok(m.group()):
            found.append("iban")
            break
    # Long digit groups are cards or account numbers (valid or not), never phone numbers.
    rest = _IBAN.sub(" ", _CARD.sub(" ", text)) if any(c.isdigit() for c in text) else ""
    for m in _PHONE.finditer(rest):
        digits = re.sub(r"\D", "", m.group())
        if 9 <= len(digits) <= 15:
            found.append("phone")
            break
    return tuple(found)
