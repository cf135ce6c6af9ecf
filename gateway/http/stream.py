"""The one stream writer: a backend's chunks out as server-sent events, whatever the endpoint.

An encoder turns each backend chunk into the bytes its endpoint sends (chat chunks as they
are, Responses events) and says how a stream ends and how it fails. The writer owns the rest:
the event-stream headers, the deadline, backend time, time to first token, and the in-band
error event once bytes are out (upstream failure, `request_timeout`, shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Protocol

from aiohttp import web

from .. import sse
from ..backends.base import Chunk
from ..errors import GatewayError, ShuttingDown
from ..pipeline.outcome import Outcome, choice_text
from .middlewares import REQUEST_ID, REQUEST_ID_HEADER
from .observe import RequestRecord
from .opening import Opening, timed_out

log = logging.getLogger(__name__)


class Encoder(Protocol):
    def encode(self, chunk: Chunk, record: RequestRecord) -> bytes:
        """What one backend chunk becomes on the wire (b"": nothing to send)."""
        ...

    async def end(self) -> bytes:
        """The stream's last bytes once every chunk is out."""
        ...

    def failed(self, exc: GatewayError) -> bytes:
        """The in-band error event of a stream whose status line is already spent."""
        ...


class ChatFrames:
    """Chat and completions: OpenAI's chunks as `data:` frames, then `[DONE]`."""

    __slots__ = ("include_usage",)

    def __init__(self, *, include_usage: bool) -> None:
        self.include_usage = include_usage

    def encode(self, chunk: Chunk, record: RequestRecord) -> bytes:
        if chunk.plain:
            payload = chunk.sse or sse.frame(chunk.data)
            if record.answer_parts is not None:
                record.answer_parts += [choice_text(o) for o in sse.objects(payload)]
            return payload
        obj = chunk.obj
        if record.answer_parts is not None:
            record.answer_parts.append(choice_text(obj))
        if obj.get("usage"):
            record.usage_from(obj)
            if not obj.get("choices") and not self.include_usage:
                return b""  # a usage-only chunk the client did not ask for
        return sse.frame(chunk.data)

    async def end(self) -> bytes:
        return sse.DONE

    def failed(self, exc: GatewayError) -> bytes:
        return sse.error_frame(exc)


async def open_event_stream(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """Send the headers of a server-sent event stream (chat chunks or Responses events)."""
    resp = web.StreamResponse(
        headers={
            **headers,
            # prepare() sends the headers now, before the request-id middleware sees the response.
            REQUEST_ID_HEADER: request[REQUEST_ID],
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    return resp


async def write_stream(
    opening: Opening, outcome: Outcome, headers: dict[str, str], encoder: Encoder
) -> web.StreamResponse:
    assert outcome.chunks is not None
    record = opening.record
    resp = await open_event_stream(opening.request, headers)
    chunks = outcome.chunks
    bound = asyncio.timeout_at(opening.deadline)
    try:
        async with bound:
            await _relay(resp, chunks, record, encoder)
        await resp.write(await encoder.end())
    except TimeoutError:
        if not bound.expired():
            raise
        await _fail(resp, record, encoder, timed_out(opening.services.settings.server))
    except GatewayError as exc:
        await _fail(resp, record, encoder, exc)
    except asyncio.CancelledError:
        if opening.services.lifecycle.stopping:
            # Cut by the shutdown grace: tell the client why before the connection closes.
            err = ShuttingDown("The gateway is shutting down; retry the request.")
            with contextlib.suppress(Exception):
                await _fail(resp, record, encoder, err)
                await resp.write_eof()
        raise
    finally:
        record.backend_s += record.stream_wait_s
        await chunks.aclose()  # type: ignore[attr-defined]
    await resp.write_eof()
    return resp


async def _fail(
    resp: web.StreamResponse, record: RequestRecord, encoder: Encoder, exc: GatewayError
) -> None:
    # Bytes already went out, so the status is spent: say it in-band, never end silently.
    record.stream_error = exc.code
    log.warning("stream failed mid-way", extra={"code": exc.code})
    await resp.write(encoder.failed(exc))


async def timed_chunks(chunks: AsyncIterator[Chunk], record: RequestRecord) -> AsyncIterator[Chunk]:
    """The backend's chunks, each wait for the next one added to the stream's backend time
    (until its first chunk, plus every wait after it)."""
    while True:
        t0 = time.perf_counter()
        try:
            chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        record.stream_wait_s += time.perf_counter() - t0
        yield chunk


async def _relay(
    resp: web.StreamResponse, chunks: AsyncIterator[Chunk], record: RequestRecord, encoder: Encoder
) -> None:
    """Write the backend's chunks as the endpoint encodes them, counting time to first token."""
    async for chunk in timed_chunks(chunks, record):
        record.chunks += 1
        out = encoder.encode(chunk, record)
        if out:
            await resp.write(out)
            if record.ttft_s is None:
                record.ttft_s = time.perf_counter() - record.started
