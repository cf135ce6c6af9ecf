"""The one upstream client: an OpenAI-compatible upstream over the pooled aiohttp session.

Chat's pass-through backend and the pass-through embedder both go through it: the base URL
and the upstream's model name, the timeouts (connect and read per socket, the first byte as a
whole), the operator's key in one header, and what an upstream's failure means: a timeout or
a broken connection is an unreachable target, a provider fault (5xx, 429, credentials) a
failover, and a refused request the provider's words, scrubbed of the key, with its status.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType

import aiohttp

from ..errors import GatewayError, InvalidRequest
from ..settings import CloudModel, CloudSettings
from .base import BackendUnavailable
from .scrub import scrub
from .upstream import bearer_headers

# Statuses that say the provider, not the request, is at fault: fail over.
_PROVIDER_FAULT = {401, 403, 408, 409, 429}


def upstream_session(cloud: CloudSettings, *, limit: int) -> aiohttp.ClientSession:
    """A pooled session for upstream calls (connect timeout per call; no total bound).

    One upstream may hold at most half the pool: streams to one (slow, or read by nobody)
    never leave another upstream without a connection, nor time its requests out into an
    open breaker.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(
            limit=limit, limit_per_host=max(1, limit // 2), ttl_dns_cache=300
        ),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=cloud.connect_timeout_s),
    )


class Upstream:
    __slots__ = ("base", "model", "name", "session", "settings", "timeout", "upstream_model")

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
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=settings.connect_timeout_s,
            sock_read=settings.read_timeout_s,
        )

    def headers(self) -> dict[str, str]:
        return bearer_headers(self.model)

    def first_byte(self) -> _FirstByte:
        """`async with`: the call bounded by `first_byte_timeout_s`, its failures mapped."""
        return _FirstByte(self)

    def status_error(self, status: int, payload: bytes) -> GatewayError:
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


class _FirstByte:
    """A class, not a generator-based context manager: it sits on every pass-through call."""

    __slots__ = ("_bound", "_up")

    def __init__(self, up: Upstream) -> None:
        self._up = up
        self._bound = asyncio.timeout(up.settings.first_byte_timeout_s)

    async def __aenter__(self) -> None:
        await self._bound.__aenter__()

    async def __aexit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        up = self._up
        try:
            await self._bound.__aexit__(typ, exc, tb)
        except TimeoutError:
            raise BackendUnavailable.timed_out(up.name, up.settings.first_byte_timeout_s) from None
        if isinstance(exc, TimeoutError):
            raise BackendUnavailable.timed_out(up.name, up.settings.first_byte_timeout_s) from None
        if isinstance(exc, aiohttp.ClientError):
            raise BackendUnavailable.connect_failed(up.name, exc) from None
