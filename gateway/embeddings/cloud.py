"""Cloud embedding models: the pass-through POST {api_base}/embeddings, or litellm.aembedding.

The same rules as chat: where the call goes and with which key comes from settings alone;
on the litellm path only OpenAI's documented embedding parameters become keyword arguments
and every other client field travels as a JSON body field (`extra_body`); what comes back
(answers and error messages) is scrubbed of the key. Errors map as for chat: a dead or failing
provider is `BackendUnavailable` (failover, breaker), a refused request a 4xx naming why.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import numpy as np

from ..backends.base import BackendUnavailable
from ..backends.cloud import LiteLLMBackend
from ..backends.passthrough import PassthroughBackend
from ..backends.upstream import bearer_headers, scrub_bytes
from ..settings import CloudModel, CloudSettings
from .request import EmbeddingRequest, Item

# OpenAI's embedding request parameters, minus `model` (set by the gateway).
EMBEDDING_PARAMS = frozenset({"input", "dimensions", "encoding_format", "user"})


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


class PassthroughEmbedder:
    """An OpenAI-compatible upstream: JSON through a pooled session, the key in one header."""

    kind = "cloud"

    def __init__(
        self, model: CloudModel, settings: CloudSettings, session: aiohttp.ClientSession
    ) -> None:
        # The chat pass-through holds the base URL, timeouts and the mapping of upstream errors.
        self._chat = PassthroughBackend(model, settings, session)
        self.name = model.name
        self.model = model
        self.settings = settings
        self.session = session

    async def embed(self, req: EmbeddingRequest, items: list[Item]) -> tuple[list[np.ndarray], int]:
        chat = self._chat
        body = upstream_body(req, items, chat.upstream_model)
        try:
            async with asyncio.timeout(self.settings.first_byte_timeout_s):
                async with self.session.post(
                    chat.base + "/embeddings",
                    json=body,
                    headers=bearer_headers(self.model),
                    timeout=chat._timeout,
                ) as resp:
                    raw = scrub_bytes(await resp.read(), self.model)
                    if resp.status >= 400:
                        raise chat._status_error(resp.status, raw)
        except TimeoutError:
            raise BackendUnavailable.timed_out(
                self.name, self.settings.first_byte_timeout_s
            ) from None
        except aiohttp.ClientError as exc:
            raise BackendUnavailable.connect_failed(self.name, exc) from None
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        return vectors_of(obj, len(items), self.name)


class LiteLLMEmbedder:
    """Any provider litellm speaks, through `litellm.aembedding`."""

    kind = "cloud"

    def __init__(
        self,
        model: CloudModel,
        settings: CloudSettings,
        litellm: Any,
        session: aiohttp.ClientSession,
    ) -> None:
        # The chat backend maps litellm's exception classes to ours, scrubbed of the key.
        self._chat = LiteLLMBackend(model, settings, litellm, session)
        self.name = model.name
        self.model = model
        self.settings = settings
        self.litellm = litellm

    async def embed(self, req: EmbeddingRequest, items: list[Item]) -> tuple[list[np.ndarray], int]:
        body = upstream_body(req, items, self.model.model)
        params: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in body.items():
            if k != "model":
                (params if k in EMBEDDING_PARAMS else extra)[k] = v
        if extra:
            # Only ever JSON body fields: litellm reads unknown keyword arguments as options.
            params["extra_body"] = extra
        try:
            async with asyncio.timeout(self.settings.first_byte_timeout_s):
                resp = await self.litellm.aembedding(
                    **params,
                    model=self.model.model,
                    api_base=self.model.api_base,
                    api_key=self.model.api_key(),
                    timeout=self.settings.first_byte_timeout_s,
                    num_retries=0,
                )
        except TimeoutError:
            raise BackendUnavailable.timed_out(
                self.name, self.settings.first_byte_timeout_s
            ) from None
        except Exception as exc:
            raise self._chat._map(exc) from None
        obj = resp.model_dump() if hasattr(resp, "model_dump") else resp
        return vectors_of(obj, len(items), self.name)
