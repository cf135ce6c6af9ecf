"""An upstream's words with this box's key for it taken out: upstreams may echo headers back
in errors and streams, and a key must never reach a client, a log line or a relayed header."""

from __future__ import annotations

from ..settings import CloudModel

REDACTED = "[redacted]"


def scrub(text: str, model: CloudModel) -> str:
    """An upstream's words with the operator's key taken out (upstreams may echo headers)."""
    key = model.api_key()
    return text.replace(key, REDACTED) if key else text


def scrub_bytes(data: bytes, model: CloudModel) -> bytes:
    """`scrub` for relayed stream bytes; a substring search, cheap enough for every chunk."""
    key = model.api_key()
    if key and (raw := key.encode()) in data:
        return data.replace(raw, REDACTED.encode())
    return data
