"""An upstream's words with this box's key for it taken out: upstreams may echo headers back
in errors and streams, and a key must never reach a client, a log line or a relayed header."""

from __future__ import annotations

from typing import Any

from ..jsonfast import dumps, loads
from ..settings import CloudModel

REDACTED = "[redacted]"


def scrub(text: str, model: CloudModel) -> str:
    """An upstream's words with the operator's key taken out (upstreams may echo headers)."""
    key = model.api_key()
    return text.replace(key, REDACTED) if key else text


def scrub_bytes(data: bytes, model: CloudModel) -> bytes:
    """`scrub` for a whole answer's bytes; a substring search."""
    key = model.api_key()
    return scrub_bytes_key(data, key) if key else data


class StreamScrub:
    """The key taken out of a stream's text even when it comes in pieces: a model echoing
    it streams a token or two per chunk, and a per-chunk search never sees it whole.

    Per choice, text that ends with the start of the key is held back until the next chunk
    shows whether the key follows (then it is replaced) or not (then it goes out with that
    chunk); a chunk that finishes its choice takes whatever is held. The chunk is re-encoded
    only when its text changed.
    """

    __slots__ = ("held", "key", "last")

    def __init__(self, model: CloudModel) -> None:
        self.key = model.api_key() or ""
        self.held: dict[int, str] = {}
        self.last: dict[str, Any] | None = None

    def data(self, data: bytes) -> bytes:
        """One chunk's JSON as it came from the upstream; the same bytes unless changed."""
        if not self.key:
            return data
        try:
            obj = loads(data)
        except ValueError:
            return scrub_bytes_key(data, self.key)
        return dumps(obj) if isinstance(obj, dict) and self.obj(obj) else data

    def obj(self, obj: dict[str, Any]) -> bool:
        """Scrub one chunk in place; whether its text changed."""
        if not self.key:
            return False
        self.last = obj
        changed = False
        for choice in obj.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            holder, field = (delta, "content") if isinstance(delta, dict) else (choice, "text")
            text = holder.get(field)
            held = self.held.pop(int(choice.get("index") or 0), "")
            if not isinstance(text, str):
                if held:  # nothing to carry it: it goes out now
                    holder[field], changed = held, True
                continue
            whole = (held + text).replace(self.key, REDACTED)
            keep = 0 if choice.get("finish_reason") else _key_start(whole, self.key)
            out = whole[: len(whole) - keep]
            if keep:
                self.held[int(choice.get("index") or 0)] = whole[-keep:]
            if out != text:
                holder[field], changed = out, True
        return changed

    def tail(self) -> dict[str, Any] | None:
        """A last chunk with the text still held when the stream ended without finishing."""
        if not self.held or self.last is None:
            return None
        choices = [{"index": i, "delta": {"content": t}} for i, t in self.held.items()]
        self.held = {}
        return {**{k: v for k, v in self.last.items() if k != "choices"}, "choices": choices}


def _key_start(text: str, key: str) -> int:
    """The length of the longest end of `text` that begins `key` (shorter than the key)."""
    first = key[0]
    start = max(0, len(text) - len(key) + 1)
    i = text.find(first, start)
    while i != -1:
        if key.startswith(text[i:]):
            return len(text) - i
        i = text.find(first, i + 1)
    return 0


def scrub_bytes_key(data: bytes, key: str) -> bytes:
    raw = key.encode()
    return data.replace(raw, REDACTED.encode()) if raw in data else data
