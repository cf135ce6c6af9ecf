"""Reads what a PNG says about itself: the signature and its tEXt chunks (no image library)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_text(path: Path) -> dict[str, str]:
    """The tEXt chunks of a PNG file; AssertionError when it is not a well-formed PNG."""
    data = path.read_bytes()
    assert data[:8] == SIGNATURE, f"{path} is not a PNG: {data[:8]!r}"
    out: dict[str, str] = {}
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: bad CRC in a {kind!r} chunk"
        if kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            return out
        pos += 12 + length
    raise AssertionError(f"{path}: no IEND chunk")
