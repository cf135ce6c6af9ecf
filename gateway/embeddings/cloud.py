"""Cloud embedding models: the pass-through POST {api_base}/embeddings, or litellm.aembedding.

The same rules as chat: where the call goes and with which key comes from settings alone;
on the litellm path only OpenAI's documented embedding parameters become keyword arguments
and every other client field travels as a JSON body field (`extra_body`); what comes back
(answers and error messages) is scrubbed of the key. Errors map as for chat: a dead or failing
provider is `BackendUnavailable` (failover, breaker), a refused request a 4xx naming why.

A full batch of floats is tens of megabytes of JSON. The body is read up to
`cloud.max_embedding_response_bytes` (a 502 past it) and a large one is parsed off the loop,
one vector at a time: `json.loads` in a thread would hold the GIL for the whole body (a
second or more), while ijson's incremental parser lets the loop run between vectors.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import numpy as np

from ..backends.base import BackendUnavailable, http_probe
from ..backends.client import Upstream
from ..backends.cloud import LiteLLMBackend
from ..backends.scrub import scrub_bytes
from ..errors import UpstreamError
from .request import EmbeddingRequest, Item

# OpenAI's embedding request parameters, minus `model` (set by the gateway).
EMBEDDING_PARAMS = frozenset({"input", "dimensions", "encoding_format", "user"})
# Bodies above this are parsed in a thread, incrementally; below, on the loop in microseconds.
LARGE_BODY = 1 << 20
# Floats above this many (inputs x width) are turned into arrays in a thread (litellm path).
LARGE_FLOATS = 1 << 18


def upstream_body(req: EmbeddingRequest, items: list[Item], upstream_model: str) -> dict[str, Any]:
    """The client's fields for the inputs still to embed, as floats (every server has them)."""
    body = req.upstream_body()
    body["model"] = upstream_model
    body["input"] = items
    body["encoding_format"] = "float"
    return body


def vectors_of(obj: Any, n: int, name: str) -> tuple[list[np.ndarray], int]:
    """The vectors (in input order) and prompt tokens of an OpenAI embeddings answer."""
    try:
        data = sorted(obj["data"], key=lambda d: int(d.get("index", 0)))
        vectors = []
        for d in data:
            e = d["embedding"]
            if isinstance(e, str):
                vectors.append(np.frombuffer(base64.b64decode(e), dtype="<f4").astype(np.float32))
            else:
                vectors.append(np.asarray(e, dtype=np.float32))
        tokens = int((obj.get("usage") or {}).get("prompt_tokens") or 0)
    except (KeyError, TypeError, ValueError, AttributeError):
        vectors, tokens = [], 0
    if len(vectors) != n or any(v.ndim != 1 or v.size == 0 for v in vectors):
        raise BackendUnavailable(
            f"cloud model '{name}' sent a malformed embeddings answer",
            cause="5xx",
            unreachable=False,
        )
    return vectors, tokens


def too_large(name: str, cap: int) -> UpstreamError:
    return UpstreamError(
        f"cloud model '{name}' sent an embeddings answer larger than {cap} bytes "
        "(cloud.max_embedding_response_bytes).",
        code="upstream_response_too_large",
    )


async def read_capped(resp: aiohttp.ClientResponse, cap: int, name: str) -> bytes:
    """The whole body, or a 502 as soon as it is past `cap` (never held in memory whole)."""
    if resp.content_length is not None and resp.content_length > cap:
        raise too_large(name, cap)
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > cap:
            raise too_large(name, cap)
    return bytes(buf)


class _Chunks:
    """`raw` read 64 KiB at a time by Python code: each read lets other threads (the loop)
    take the GIL, which a C-level read of the whole buffer would not."""

    def __init__(self, raw: bytes) -> None:
        self._view = memoryview(raw)
        self._at = 0

    def read(self, n: int = 1 << 16) -> bytes:
        part = self._view[self._at : self._at + n]
        self._at += len(part)
        return bytes(part)


def parse_large(raw: bytes, n: int, name: str) -> tuple[list[np.ndarray], int]:
    """`vectors_of` for a large body, incrementally. Blocking: run it in a thread."""
    import ijson

    data: list[dict[str, Any]] = []
    usage: Any = None
    try:
        for item in ijson.items(_Chunks(raw), "data.item", use_float=True):
            if isinstance(item, dict) and isinstance(item.get("embedding"), list):
                item["embedding"] = np.asarray(item["embedding"], dtype=np.float32)
            data.append(item)
        usage = next(ijson.items(_Chunks(raw), "usage", use_float=True), None)
    except (ijson.JSONError, ValueError, TypeError):
        return vectors_of(None, n, name)
    return vectors_of({"data": data, "usage": usage}, n, name)


class PassthroughEmbedder:
    """An OpenAI-compatible upstream: JSON through the upstream client, the key in one header."""

    kind = "cloud"

    def __init__(self, up: Upstream) -> None:
        self.up = up  # the same client as chat's pass-through: one session, one error map
        self.name = up.name
        self.model = up.model
        self.settings = up.settings

    async def embed(self, req: EmbeddingRequest, items: list[Item]) -> tuple[list[np.ndarray], int]:
        up = self.up
        body = upstream_body(req, items, up.upstream_model)
        async with up.first_byte():
            async with up.session.post(
                up.base + "/embeddings", json=body, headers=up.headers(), timeout=up.timeout
            ) as resp:
                raw = await read_capped(resp, self.settings.max_embedding_response_bytes, self.name)
                if resp.status >= 400:
                    raise up.status_error(resp.status, scrub_bytes(raw, self.model))
        if len(raw) > LARGE_BODY:
            return await asyncio.to_thread(parse_large, raw, len(items), self.name)
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        return vectors_of(obj, len(items), self.name)

    async def probe(self, *, deep: bool = False) -> bool | None:
        """The model list answers (light); after a timeout, one input embedded (deep)."""
        up = self.up
        if not deep:
            return await http_probe(up.session, up.base, up.headers(), self.settings)
        body = {"model": up.upstream_model, "input": ["ping"], "encoding_format": "float"}
        try:
            async with asyncio.timeout(self.settings.first_byte_timeout_s):
                async with up.session.post(
                    up.base + "/embeddings", json=body, headers=up.headers(), timeout=up.timeout
                ) as r:
                    await r.read()
                    return r.status < 500 and r.status != 429
        except (TimeoutError, aiohttp.ClientError):
            return False


class LiteLLMEmbedder:
    """Any provider litellm speaks, through `litellm.aembedding`."""

    kind = "cloud"

    def __init__(self, chat: LiteLLMBackend) -> None:
        # The chat backend maps litellm's exception classes to ours, scrubbed of the key.
        self._chat = chat
        self.name = chat.name

    async def _aembedding(self, **params: Any) -> Any:
        return await self._chat.litellm.aembedding(
            **params,
            model=self._chat.model.model,
            api_base=self._chat.model.api_base,
            api_key=self._chat.model.api_key(),
            timeout=self._chat.settings.first_byte_timeout_s,
            num_retries=0,
        )

    async def probe(self, *, deep: bool = False) -> bool | None:
        """As chat's litellm probe, with one input embedded for the deep one."""
        if not deep:
            return await self._chat.probe()
        try:
            async with asyncio.timeout(self._chat.settings.first_byte_timeout_s):
                await self._aembedding(input=["ping"])
        except Exception:  # any failure, timeout included, means: not back yet
            return False
        return True

    async def embed(self, req: EmbeddingRequest, items: list[Item]) -> tuple[list[np.ndarray], int]:
        body = upstream_body(req, items, self._chat.model.model)
        params: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in body.items():
            if k != "model":
                (params if k in EMBEDDING_PARAMS else extra)[k] = v
        if extra:
            # Only ever JSON body fields: litellm reads unknown keyword arguments as options.
            params["extra_body"] = extra
        try:
            async with asyncio.timeout(self._chat.settings.first_byte_timeout_s):
                resp = await self._aembedding(**params)
        except TimeoutError:
            raise BackendUnavailable.timed_out(
                self.name, self._chat.settings.first_byte_timeout_s
            ) from None
        except Exception as exc:
            raise self._chat.map_error(exc) from None

        # litellm has parsed the body already (on the loop, inside litellm); turning millions
        # of floats into arrays is pure Python again, so large answers go to a thread.
        def convert() -> tuple[list[np.ndarray], int]:
            obj = resp.model_dump() if hasattr(resp, "model_dump") else resp
            return vectors_of(obj, len(items), self.name)

        width = req.dimensions or 1536
        if len(items) * width > LARGE_FLOATS:
            return await asyncio.to_thread(convert)
        return convert()
