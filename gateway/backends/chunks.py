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
    """Chunks of one streamed answer: same id, model and creation time throughout. `index` is
    the choice a chunk belongs to (an answer with several choices interleaves them)."""

    def __init__(self, endpoint: Endpoint, *, model: str) -> None:
        self.chat = endpoint == "chat"
        self.rid = new_id("chatcmpl" if self.chat else "cmpl")
        self.model = model
        self.created = int(time.time())
        self._frames: dict[int, tuple[bytes, bytes]] = {}

    def _make(
        self,
        *,
        delta: dict[str, Any] | None,
        text: str | None,
        finish: str | None = None,
        usage: dict[str, Any] | None = None,
        logprobs: dict[str, Any] | None = None,
        index: int = 0,
    ) -> Chunk:
        rid, model, created = self.rid, self.model, self.created
        content = delta if self.chat else text
        obj = stream_chunk(self.chat, rid, model, created, content, finish, usage, logprobs)
        if index:
            obj["choices"][0]["index"] = index
        return Chunk(obj=obj)

    def role(self, role: str = "assistant", *, index: int = 0) -> Chunk | None:
        """The opening chunk of a chat stream; completions have none."""
        if not self.chat:
            return None
        return self._make(delta={"role": role, "content": ""}, text=None, index=index)

    def text(self, piece: str, *, logprobs: dict[str, Any] | None = None, index: int = 0) -> Chunk:
        return self._make(delta={"content": piece}, text=piece, logprobs=logprobs, index=index)

    def tool_calls(self, calls: list[dict[str, Any]], *, index: int = 0) -> Chunk:
        return self._make(delta={"tool_calls": calls}, text=None, index=index)

    def finish(self, reason: str, *, index: int = 0) -> Chunk:
        return self._make(delta={}, text="", finish=reason, index=index)

    def usage(self, usage: dict[str, Any]) -> Chunk:
        """The usage-only chunk (no choices) that `stream_options.include_usage` asks for."""
        return self._make(delta=None, text=None, usage=usage)

    def frames(self, pieces: list[str], *, index: int = 0) -> Chunk:
        """Plain text pieces as ready SSE frames: the JSON is built once and the text spliced
        in, instead of a dict and json.dumps per token (the local model's hot path)."""
        frame = self._frames.get(index)
        if frame is None:
            head, tail = self.text(_MARKER, index=index).data.split(json.dumps(_MARKER).encode())
            frame = self._frames[index] = (b"data: " + head, tail + b"\n\n")
        head, tail = frame
        return Chunk(
            sse=b"".join(head + json.dumps(p).encode() + tail for p in pieces),
            plain=True,
        )
