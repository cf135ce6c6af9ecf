"""Text as a person reads it, before any detector looks at it.

A card typed by a Japanese input method (`４１２４ ０００３ …`), a number copied from a web
page with no-break spaces, an address with a fullwidth `＠`, digits in Arabic-Indic or
Devanagari script, a zero-width space pasted inside an IBAN: each reads the same to a person
as its plain ASCII spelling, so each is folded into it. NFKC does the compatibility forms
(fullwidth, `＠`, ideographic space); a translation table built once does the rest: every
decimal digit of every script to its ASCII digit, every space-like character to a space,
every dash to `-`, and invisible characters removed.

Only the detectors read the folded text; the request itself is never changed.
"""

from __future__ import annotations

import functools
import unicodedata

# Invisible characters people paste inside numbers and addresses without seeing them.
_INVISIBLE = "\u00ad\u180e\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062\u2063\u2064\ufeff"
# Dashes and minus signs that a person reads as a hyphen between digit groups.
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d\u30fc"


@functools.cache
def _table() -> dict[int, str | None]:
    """Built once, on first use (the planes that hold decimal digits: about 30 ms)."""
    table: dict[int, str | None] = {}
    for cp in range(0x80, 0x20000):
        ch = chr(cp)
        category = unicodedata.category(ch)
        if category == "Nd":
            table[cp] = str(unicodedata.decimal(ch))
        elif category == "Zs" or ch in "\u2028\u2029\u0085":
            table[cp] = " "
    table.update(dict.fromkeys(map(ord, _DASHES), "-"))
    table.update(dict.fromkeys(map(ord, _INVISIBLE), None))
    return table


@functools.cache
def _mapped() -> frozenset[str]:
    return frozenset(map(chr, _table()))


def prepare() -> None:
    """Build the table now (at start-up) rather than on the first request."""
    _mapped()


def fold(text: str) -> str:
    """`text` as a person reads it: ASCII digits, plain spaces and hyphens, nothing invisible.

    ASCII text is returned as it is (the common request pays one C-speed check). Linear.
    """
    if text.isascii():
        return text
    text = unicodedata.normalize("NFKC", text)
    # Most non-ASCII text (accents, curly quotes, CJK) has nothing the table maps: a set
    # look-up per character, in C, tells so and skips the slower translation.
    return text if _mapped().isdisjoint(text) else text.translate(_table())
