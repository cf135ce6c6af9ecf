"""JSON on the hot path: orjson, and the standard library for the few inputs orjson refuses.

orjson encodes and decodes a chat answer several times faster than `json` (and sorts keys for
a cache key just as fast). It refuses what the standard library takes: NaN and Infinity
literals and integers beyond 64 bits when decoding, lone surrogates, non-string keys and such
integers when encoding. Those inputs go to `json`, so no answer is rejected that was accepted.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes (UTF-8, not ASCII-escaped)."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(obj, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """The value of a JSON document; ValueError when it is not one."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # a ValueError: malformed, or only refused by orjson
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
