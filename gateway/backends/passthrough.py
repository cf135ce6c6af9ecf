"""Fast path for upstreams that already speak the OpenAI API: pooled aiohttp, bytes through.

Used for `openai/...` models with an `api_base` (vLLM, llama.cpp servers, another gateway, a
nearer tier). No translation is needed, so litellm's per-call cost (about 4 ms) is skipped.
From a `tier: true` upstream it also reads the tier's report on its answer (its `x-gateway-*`
headers, see tier.py); from any other upstream no response header is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ..errors import GatewayError, InvalidRequest, UpstreamError, UpstreamTimeout
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
from .tier import TierReport
from .upstream import bearer_headers, openai_body, scrub, scrub_bytes

log = logging.getLogger(__name__)

_PATHS = {"chat": "/chat/completions", "completion": "/completions"}
# Statuses that say the provider, not the request, is at fault: fail over.
_PROVIDER_FAULT = {401, 403, 408, 409, 429}


class PassthroughBackend:
    kind: Kind = "cloud"

    def __init__(
        self, model: CloudModel, settings: CloudSettings, session: aiohttp.ClientSession
    ) -> None:
        assert model.api_base
        self.name = model.name
        self.model = model
        self.settings = settings
        self.session = session
        self.base = model.api_base.rstrip("/")
        self.upstream_model = model.model.split("/", 1)[1] if "/" in model.model else model.model
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.connect_timeout_s,
            sock_read=settings.read_timeout_s,
        )

    def _body(self, req: AnyRequest, *, stream: bool) -> dict[str, Any]:
        return openai_body(req, self.model, upstream_model=self.upstream_model, stream=stream)

    async def _post(self, req: AnyRequest, endpoint: Endpoint, *, stream: bool) -> Any:
        url = self.base + _PATHS[endpoint]
        try:
            async with asyncio.timeout(self.settings.first_byte_timeout_s):
                resp = await self.session.post(
                    url,
                    json=self._body(req, stream=stream),
                    headers=bearer_headers(self.model),
                    timeout=self._timeout,
                )
                if resp.status >= 400:
                    payload = await resp.read()
                    resp.release()
                    raise self._status_error(resp.status, payload)
                if not stream:
                    raw = await resp.read()
                    resp.release()
                    return raw, self._report(resp)
                return resp
        except TimeoutError:
            raise BackendUnavailable.timed_out(
                self.name, self.settings.first_byte_timeout_s
            ) from None
        except aiohttp.ClientError as exc:
            raise BackendUnavailable.connect_failed(self.name, exc) from None

    def _report(self, resp: aiohttp.ClientResponse) -> TierReport | None:
        """A tier's account of its answer; never read from an upstream not marked as a tier."""
        return (
            TierReport.from_headers(self.name, resp.headers, self.model)
            if self.model.tier
            else None
        )

    def _status_error(self, status: int, payload: bytes) -> GatewayError:
        if status >= 500 or status in _PROVIDER_FAULT:
            cause = "429" if status == 429 else ("auth" if status in (401, 403) else "5xx")
            return BackendUnavailable(
                f"cloud model '{self.name}' answered {status}", cause=cause, unreachable=False
            )
        # The request itself was refused (400, 404, 413, 422): relay the provider's words.
        message = f"cloud model '{self.name}' rejected the request ({status})"
        param = None
        try:
            err = json.loads(payload).get("error") or {}
            if isinstance(err, dict) and err.get("message"):
                message = scrub(str(err["message"]), self.model)[:2000]
                param = err.get("param")
                param = scrub(param, self.model)[:200] if isinstance(param, str) else None
        except (ValueError, AttributeError):
            pass
        exc = InvalidRequest(message, param=param, code="upstream_rejected")
        exc.status = status if 400 <= status < 500 else 400  # type: ignore[misc]
        return exc

    async def complete(self, req: AnyRequest, endpoint: Endpoint) -> Completion:
        raw, tier = await self._post(req, endpoint, stream=False)
        raw = scrub_bytes(raw, self.model)
        try:
            obj = json.loads(raw)
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
        try:
            async for data in iter_sse_data(aiter(resp.content)):
                yield Chunk(data=scrub_bytes(data, self.model), tier=tier)
                tier = None
            complete = True
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
        headers = bearer_headers(self.model)
        if deep:
            return await completion_probe(
                self.session, self.base, headers, self.upstream_model, self.settings
            )
        return await http_probe(self.session, self.base, headers, self.settings)

    async def close(self) -> None:
        pass  # the session is shared and closed by the app
