"""Fast path for upstreams that already speak the OpenAI API: pooled aiohttp, bytes through.

Used for `openai/...` models with an `api_base` (vLLM, llama.cpp servers, another gateway, a
nearer tier). No translation is needed, so litellm's per-call cost (about 4 ms) is skipped.
From a `tier: true` upstream it also reads the tier's report on its answer (its `x-gateway-*`
headers, see tier.py); from any other upstream no response header is read.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ..errors import UpstreamError, UpstreamTimeout
from ..jsonfast import dumps, loads
from ..schemas import AnyRequest
from ..settings import CloudModel, CloudSettings
from ..sse import iter_sse_data
from .base import (
    BackendUnavailable,
    Chunk,
    Completion,
    Endpoint,
    Kind,
    completion_probe,
    http_probe,
)
from .client import Upstream
from .scrub import StreamScrub, scrub_bytes
from .tier import TierReport
from .upstream import openai_body

log = logging.getLogger(__name__)

_PATHS = {"chat": "/chat/completions", "completion": "/completions"}


class PassthroughBackend:
    kind: Kind = "cloud"

    def __init__(
        self, model: CloudModel, settings: CloudSettings, session: aiohttp.ClientSession
    ) -> None:
        self.up = Upstream(model, settings, session)
        self.name = model.name
        self.model = model
        self.settings = settings

    def _body(self, req: AnyRequest, *, stream: bool) -> dict[str, Any]:
        return openai_body(req, self.model, upstream_model=self.up.upstream_model, stream=stream)

    async def _post(self, req: AnyRequest, endpoint: Endpoint, *, stream: bool) -> Any:
        up = self.up
        async with up.first_byte():
            resp = await up.session.post(
                up.base + _PATHS[endpoint],
                # orjson's bytes: aiohttp's `json=` would run the stdlib encoder per call.
                data=dumps(self._body(req, stream=stream)),
                headers={**up.headers(), "Content-Type": "application/json"},
                timeout=up.timeout,
            )
            if resp.status >= 400:
                payload = await resp.read()
                resp.release()
                raise up.status_error(resp.status, payload)
            if not stream:
                raw = await resp.read()
                resp.release()
                return raw, self._report(resp)
            return resp

    def _report(self, resp: aiohttp.ClientResponse) -> TierReport | None:
        """A tier's account of its answer; never read from an upstream not marked as a tier."""
        return (
            TierReport.from_headers(self.name, resp.headers, self.model)
            if self.model.tier
            else None
        )

    async def complete(self, req: AnyRequest, endpoint: Endpoint) -> Completion:
        raw, tier = await self._post(req, endpoint, stream=False)
        raw = scrub_bytes(raw, self.model)
        try:
            obj = loads(raw)
        except ValueError:
            raise BackendUnavailable(
                f"cloud model '{self.name}' sent a malformed answer",
                cause="5xx",
                unreachable=False,
            ) from None
        if not isinstance(obj, dict) or "choices" not in obj:
            raise BackendUnavailable(
                f"cloud model '{self.name}' sent an answer without choices",
                cause="5xx",
                unreachable=False,
            )
        return Completion(obj, raw=raw, tier=tier)

    async def stream(self, req: AnyRequest, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        resp: aiohttp.ClientResponse = await self._post(req, endpoint, stream=True)
        complete = False
        tier = self._report(resp)  # rides on the first chunk: the answer's headers come first
        scrub = StreamScrub(self.model)
        try:
            async for data in iter_sse_data(aiter(resp.content)):
                yield Chunk(data=scrub.data(data), tier=tier)
                tier = None
            complete = True
            if (rest := scrub.tail()) is not None:
                yield Chunk(obj=rest)
        except (aiohttp.ClientError, EOFError, TimeoutError) as exc:
            # Bytes may already be with the client: this becomes an in-band SSE error event.
            kind = "timed out" if isinstance(exc, TimeoutError) else "dropped"
            err = UpstreamTimeout if isinstance(exc, TimeoutError) else UpstreamError
            raise err(
                f"cloud model '{self.name}' stream {kind} mid-way",
                code="upstream_stream_interrupted",
            ) from None
        finally:
            # A finished stream returns its connection to the pool; an abandoned one is closed
            # so the upstream stops generating for nobody.
            if complete:
                resp.release()
            else:
                resp.close()

    async def probe(self, *, deep: bool = False) -> bool | None:
        up = self.up
        if deep:
            return await completion_probe(
                up.session, up.base, up.headers(), up.upstream_model, self.settings
            )
        return await http_probe(up.session, up.base, up.headers(), self.settings)

    async def close(self) -> None:
        pass  # the session is shared and closed by the app
