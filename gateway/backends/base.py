"""What every backend (local model, cloud through litellm, OpenAI pass-through) offers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import aiohttp

from ..errors import GatewayError
from ..jsonfast import dumps, loads
from ..schemas import AnyRequest

if TYPE_CHECKING:
    from ..settings import CloudSettings
    from .tier import TierReport

Kind = Literal["local", "cloud"]
Endpoint = Literal["chat", "completion"]


class Chunk:
    """One streamed OpenAI chunk, kept as bytes or dict and converted only when asked."""

    __slots__ = ("_data", "_obj", "plain", "sse", "tier")

    def __init__(
        self,
        *,
        data: bytes | None = None,
        obj: dict[str, Any] | None = None,
        plain: bool = False,
        sse: bytes | None = None,
        tier: TierReport | None = None,
    ) -> None:
        self._data = data
        self._obj = obj
        # Ready-made SSE frames (one or more chunks), written as they are.
        self.sse = sse
        # A plain content chunk carries no usage and nothing else to inspect: the writer can
        # send its bytes without parsing them (the local model's per-token hot path).
        self.plain = plain
        # A tier's report on its answer, known from its response headers: on the first chunk.
        self.tier = tier

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = dumps(self._obj)
        return self._data

    @property
    def obj(self) -> dict[str, Any]:
        if self._obj is None:
            self._obj = loads(self._data or b"{}")
        return self._obj


@dataclass
class Completion:
    """A whole (non-streamed) OpenAI response; `raw` is its bytes when we already have them."""

    obj: dict[str, Any]
    raw: bytes | None = None
    tier: TierReport | None = None  # what the tier that gave this answer said about it

    def body(self) -> bytes:
        if self.raw is None:
            self.raw = dumps(self.obj)
        return self.raw


class BackendUnavailable(GatewayError):
    """The backend could not answer before the first byte: fail over, and tell the breaker.

    `unreachable` (timeout, refused or reset connection) means the uplink is gone and opens the
    breaker at once; provider errors (5xx, 429, rejected credentials) count towards it.
    """

    status = 503
    type = "service_unavailable"
    default_code = "upstream_unavailable"

    def __init__(self, message: str, *, cause: str, unreachable: bool) -> None:
        super().__init__(message)
        self.cause = cause
        self.unreachable = unreachable

    @classmethod
    def timed_out(cls, name: str, seconds: float) -> BackendUnavailable:
        """No first byte in time: the uplink counts as gone."""
        return cls._gone(name, f"did not answer within {seconds:g} s", "timeout")

    @classmethod
    def connect_failed(cls, name: str, exc: BaseException) -> BackendUnavailable:
        """The connection failed or broke (refused, reset, DNS): the uplink counts as gone."""
        return cls._gone(name, f"is unreachable ({type(exc).__name__})", "connect")

    @classmethod
    def _gone(cls, name: str, what: str, cause: str) -> BackendUnavailable:
        return cls(f"cloud model '{name}' {what}", cause=cause, unreachable=True)


class Backend(Protocol):
    """A place answers come from. Errors before the first chunk are failover-able."""

    name: str
    kind: Kind

    async def complete(self, req: AnyRequest, endpoint: Endpoint) -> Completion: ...

    def stream(self, req: AnyRequest, endpoint: Endpoint) -> AsyncIterator[Chunk]: ...

    async def close(self) -> None: ...

    async def probe(self, *, deep: bool = False) -> bool | None:
        """True: the target answers; False: it does not; None: this backend cannot probe.

        `deep` asks for a one-token completion instead of a look at the model list: after a
        first-byte timeout, an upstream whose /models answers while chat hangs is not back.
        """
        ...


async def http_probe(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str], settings: CloudSettings
) -> bool:
    """A light reachability check: any HTTP answer below 500 from GET {base}/models."""
    try:
        async with asyncio.timeout(settings.connect_timeout_s):
            async with session.get(f"{base.rstrip('/')}/models", headers=headers) as r:
                return r.status < 500
    except (TimeoutError, aiohttp.ClientError):
        return False


PROBE_BODY: dict[str, Any] = {
    "messages": [{"role": "user", "content": "ping"}],
    "max_tokens": 1,
    "temperature": 0,
}


async def completion_probe(
    session: aiohttp.ClientSession,
    base: str,
    headers: dict[str, str],
    upstream_model: str,
    settings: CloudSettings,
) -> bool:
    """A deep check: a one-token chat completion answered within the first-byte timeout."""
    body = {**PROBE_BODY, "model": upstream_model}
    try:
        async with asyncio.timeout(settings.first_byte_timeout_s):
            async with session.post(
                f"{base.rstrip('/')}/chat/completions", json=body, headers=headers
            ) as r:
                await r.read()
                return r.status < 500 and r.status != 429
    except (TimeoutError, aiohttp.ClientError):
        return False
