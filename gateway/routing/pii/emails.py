"""E-mail addresses as people write them: any script in the local part and the domain
(`jörg@müller-bau.de`, `用户@例子.中国`), punycode domains, and the `name(at)firm.de`
spelling common on European pages.

Anchored on the `@` (or the spelled-out at): one local-part character before it is enough
to call it an address, and the domain after it is bounded in label count and length, so a
scan is linear; an unanchored `[...]+@` pattern retries from every start position and is
quadratic on "aaaa...@b". The text has been folded first (text.py): a fullwidth `＠` is `@`.
"""

from __future__ import annotations

import re

# A domain label: letters or digits of any script, inner hyphens; the top level is letters
# (any script) or an IDNA `xn--` label.
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_TLD = r"(?:[^\W\d_]{2,63}|xn--[a-z0-9-]{1,59})"
_AT = r"(?:@|\s?[\[({<]\s?(?:at|AT|At)\s?[\])}>]\s?)"
_DOT = r"(?:\.|\s?[\[({<]\s?(?:dot|DOT|Dot)\s?[\])}>]\s?)"
_EMAIL = re.compile(rf"[\w.!#$%&'*+/=?^`{{|}}~-]{_AT}(?:{_LABEL}{_DOT}){{1,8}}{_TLD}(?![\w-])")


# The address pattern starts with a class most characters are in, so the engine tries it
# almost everywhere: look for what every address has first (an `@`, or a bracketed "at").
_SPELLED_AT = re.compile(r"[\[({<]\s?at\s?[\])}>]", re.IGNORECASE)


def mentions_at(text: str) -> bool:
    """An `@` or a bracketed "at": what every address has, found fast."""
    return "@" in text or _SPELLED_AT.search(text) is not None


def has_email(text: str) -> bool:
    return mentions_at(text) and _EMAIL.search(text) is not None
