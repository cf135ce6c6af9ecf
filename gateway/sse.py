"""Server-sent events as OpenAI streams them: `data: {json}` frames and a final `[DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from .errors import GatewayError
from .jsonfast import loads

DONE = b"data: [DONE]\n\n"


def frame(data: bytes) -> bytes:
    return b"data: " + data + b"\n\n"


def error_frame(exc: GatewayError) -> bytes:
    """An in-band error for a stream that already sent bytes (the OpenAI SDK raises on it)."""
    return frame(json.dumps(exc.body()).encode())


async def iter_sse_data(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The payloads of `data:` lines of an upstream SSE stream; EOFError if `[DONE]` never came."""
    async for raw in lines:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue  # comments, event:, id:, blank separators
        payload = line[5:].strip()
        if payload == b"[DONE]":
            return
        if payload:
            yield payload
    raise EOFError("the stream ended before data: [DONE]")


def objects(payload: bytes) -> list[dict[str, Any]]:
    """The JSON objects of ready-made `data: {...}` frames (one or more in one payload)."""
    return [loads(line[6:]) for line in payload.split(b"\n") if line.startswith(b"data: {")]
