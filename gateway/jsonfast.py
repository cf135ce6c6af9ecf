"""JSON on the hot path: orjson, and the standard library for the few inputs orjson refuses.

orjson encodes and decodes a chat answer several times faster than `json` (and sorts keys for
a cache key just as fast). It refuses some of what the standard library takes (NaN and
Infinity literals, lone surrogates, non-string keys, integers beyond 64 bits when encoding)
and reads an integer beyond 64 bits as a float. Those inputs go to `json`, so every document
reads as it did before.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes (UTF-8, not ASCII-escaped)."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(obj, separators=(",", ":")).encode()


# A run of 19 digits may be an integer beyond 64 bits (orjson would make it a float); it is
# rare outside such numbers (a card number in a prompt), and those documents take the stdlib.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def fast_loads(data: bytes) -> Any:
    """orjson's reading of `data`; ValueError where orjson refuses it or may read it unlike the
    stdlib (the caller then asks `json`, for its value or its error)."""
    if _LONG_DIGITS.search(data):
        raise ValueError("long digit run")
    return orjson.loads(data)  # orjson.JSONDecodeError is a ValueError


def loads(data: bytes | str) -> Any:
    """The value of a JSON document, as `json.loads` reads it; ValueError when it is not one."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        return fast_loads(raw)
    except ValueError:  # malformed, or only orjson refuses it
        return json.loads(data)


def canonical(obj: Any) -> bytes:
    """Sorted keys, compact, UTF-8: the same value always gives the same bytes (cache keys).

    Values JSON cannot hold are written as their str(), as before."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:
        return json.dumps(
            obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        ).encode("utf-8", "surrogatepass")
