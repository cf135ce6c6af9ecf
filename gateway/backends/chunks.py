"""One answer as a sequence of OpenAI stream chunks: the local model and cache replays share it.

Both endpoints stream the same sequence (a role chunk for chat, content pieces, a finish
chunk, a usage-only chunk); only the chunk's shape differs, and that is decided here once.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ..schemas import new_id, stream_chunk
from .base import Chunk, Endpoint

_MARKER = "\x00TEXT\x00"


class ChunkSequence:
    """Chunks of one streamed answer: same id, model and creation time throughout."""

    def __init__(self, endpoint: Endpoint, *, model: str) -> None:
        self.chat = endpoint == "chat"
        self.rid = new_id("chatcmpl" if self.chat else "cmpl")
        self.model = model
        self.created = int(time.time())
        self._frame: tuple[bytes, bytes] | None = None

    def _make(
        self,
        *,
        delta: dict[str, Any] | None,
        text: str | None,
        finish: str | None = None,
        usage: dict[str, Any] | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> Chunk:
        rid, model, created = self.rid, self.model, self.created
        content = delta if self.chat else text
        obj = stream_chunk(self.chat, rid, model, created, content, finish, usage, logprobs)
        return Chunk(obj=obj)

    def role(self, role: str = "assistant") -> Chunk | None:
        """The opening chunk of a chat stream; completions have none."""
        return self._make(delta={"role": role, "content": ""}, text=None) if self.chat else None

    def text(self, piece: str, *, logprobs: dict[str, Any] | None = None) -> Chunk:
        return self._make(delta={"content": piece}, text=piece, logprobs=logprobs)

    def tool_calls(self, calls: list[dict[str, Any]]) -> Chunk:
        return self._make(delta={"tool_calls": calls}, text=None)

    def finish(self, reason: str) -> Chunk:
        return self._make(delta={}, text="", finish=reason)

    def usage(self, usage: dict[str, Any]) -> Chunk:
        """The usage-only chunk (no choices) that `stream_options.include_usage` asks for."""
        return self._make(delta=None, text=None, usage=usage)

    def frames(self, pieces: list[str]) -> Chunk:
        """Plain text pieces as ready SSE frames: the JSON is built once and the text spliced
        in, instead of a dict and json.dumps per token (the local model's hot path)."""
        if self._frame is None:
            head, tail = self.text(_MARKER).data.split(json.dumps(_MARKER).encode())
            self._frame = (b"data: " + head, tail + b"\n\n")
        head, tail = self._frame
        return Chunk(
            sse=b"".join(head + json.dumps(p).encode() + tail for p in pieces),
            plain=True,
        )
