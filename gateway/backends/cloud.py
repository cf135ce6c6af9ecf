"""Cloud models through litellm, for every provider that needs translation."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ..errors import ContextLengthExceeded, GatewayError, InvalidRequest, UpstreamError
from ..schemas import AnyRequest
from ..settings import CloudModel, CloudSettings
from .base import (
    PROBE_BODY,
    BackendUnavailable,
    Chunk,
    Completion,
    Endpoint,
    Kind,
    http_probe,
)
from .scrub import StreamScrub, scrub
from .tier import TierReport
from .upstream import bearer_headers, openai_body, split_params

log = logging.getLogger(__name__)

# litellm hands the provider's response headers back under this prefix, on `_hidden_params`.
_PROVIDER_HEADER = "llm_provider-"


def import_litellm() -> Any:
    """Import litellm offline: its bundled cost map, no telemetry. Takes seconds: startup only."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    import litellm

    litellm.telemetry = False
    litellm.drop_params = True  # a provider that lacks a parameter should not fail the call
    litellm.suppress_debug_info = True
    return litellm


class LiteLLMBackend:
    kind: Kind = "cloud"

    def __init__(
        self,
        model: CloudModel,
        settings: CloudSettings,
        litellm: Any,
        session: aiohttp.ClientSession,
    ) -> None:
        self.session = session
        self.name = model.name
        self.model = model
        self.settings = settings
        self.litellm = litellm
        self._errors = litellm.exceptions

    def _kwargs(self, req: AnyRequest, endpoint: Endpoint, *, stream: bool) -> dict[str, Any]:
        body = openai_body(req, self.model, upstream_model=self.model.model, stream=stream)
        if endpoint == "completion":
            body.pop("stream_options", None)
        params, extra = split_params(body, endpoint)
        if extra:
            # Only ever JSON body fields: litellm reads unknown keyword arguments as options.
            params["extra_body"] = extra
        # Where and how the call goes comes from settings alone, never from the request.
        return {
            **params,
            "model": self.model.model,
            "api_base": self.model.api_base,
            "api_key": self.model.api_key(),
            "stream": stream,
            "timeout": self.settings.first_byte_timeout_s,
            "num_retries": 0,  # failover is ours to decide, and fast
            # The app's pooled session: closed with the app, never a client cached by litellm
            # from another event loop.
            "shared_session": self.session,
        }

    async def _call(self, req: AnyRequest, endpoint: Endpoint, *, stream: bool) -> Any:
        fn = self.litellm.acompletion if endpoint == "chat" else self.litellm.atext_completion
        kwargs = self._kwargs(req, endpoint, stream=stream)
        try:
            async with asyncio.timeout(self.settings.first_byte_timeout_s):
                return await fn(**kwargs)
        except TimeoutError:
            raise BackendUnavailable.timed_out(
                self.name, self.settings.first_byte_timeout_s
            ) from None
        except Exception as exc:
            raise self.map_error(exc) from None

    def map_error(self, exc: Exception) -> GatewayError:
        """litellm's exception classes to ours; messages scrubbed of the key."""
        e = self._errors
        name = f"cloud model '{self.name}'"
        if isinstance(exc, e.Timeout | e.APIConnectionError):
            return BackendUnavailable(f"{name} is unreachable", cause="connect", unreachable=True)
        if isinstance(exc, e.RateLimitError):
            return BackendUnavailable(
                f"{name} is rate limited (429)", cause="429", unreachable=False
            )
        if isinstance(exc, e.AuthenticationError | e.PermissionDeniedError):
            return BackendUnavailable(
                f"{name} rejected the gateway's credentials", cause="auth", unreachable=False
            )
        if isinstance(exc, e.ContextWindowExceededError):
            return ContextLengthExceeded(self._scrub(str(exc)), param="messages")
        if isinstance(exc, e.BadRequestError | e.NotFoundError | e.UnprocessableEntityError):
            err = InvalidRequest(self._scrub(str(exc)), code="upstream_rejected")
            return err
        status = getattr(exc, "status_code", None)
        log.warning(
            "cloud call failed",
            extra={"target": self.name, "error": type(exc).__name__, "status": status},
        )
        return BackendUnavailable(
            f"{name} failed ({type(exc).__name__})", cause="5xx", unreachable=False
        )

    def _scrub(self, text: str) -> str:
        return scrub(text, self.model)[:2000]

    def _report(self, resp: Any) -> TierReport | None:
        """A tier's account of its answer, from the response headers litellm kept; never read
        from an upstream not marked as a tier."""
        if not self.model.tier:
            return None
        hidden = getattr(resp, "_hidden_params", None) or {}
        kept = hidden.get("additional_headers") if isinstance(hidden, dict) else None
        if not isinstance(kept, dict):
            return None
        headers = {
            k.removeprefix(_PROVIDER_HEADER).lower(): str(v)
            for k, v in kept.items()
            if isinstance(k, str) and k.startswith(_PROVIDER_HEADER)
        }
        return TierReport.from_headers(self.name, headers, self.model)

    async def complete(self, req: AnyRequest, endpoint: Endpoint) -> Completion:
        resp = await self._call(req, endpoint, stream=False)
        return Completion(spec_nulls(resp.model_dump(exclude_none=True)), tier=self._report(resp))

    async def stream(self, req: AnyRequest, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        wrapper = await self._call(req, endpoint, stream=True)
        tier = self._report(wrapper)  # the headers came with the stream: on the first chunk
        it = wrapper.__aiter__()
        scrub = StreamScrub(self.model)
        try:
            while True:
                # Bound each gap, not the whole stream; a timeout must not span our yields.
                try:
                    chunk = await asyncio.wait_for(anext(it), self.settings.read_timeout_s)
                except StopAsyncIteration:
                    if (rest := scrub.tail()) is not None:
                        yield Chunk(obj=rest)
                    return
                obj = spec_nulls(chunk.model_dump(exclude_none=True))
                scrub.obj(obj)
                yield Chunk(obj=obj, tier=tier)
                tier = None
        except TimeoutError:
            raise UpstreamError(
                f"cloud model '{self.name}' stream stalled", code="upstream_stream_interrupted"
            ) from None
        except GatewayError:
            raise
        except Exception as exc:
            raise UpstreamError(
                f"cloud model '{self.name}' stream failed mid-way ({type(exc).__name__})",
                code="upstream_stream_interrupted",
            ) from None

    async def probe(self, *, deep: bool = False) -> bool | None:
        if deep:
            try:
                async with asyncio.timeout(self.settings.first_byte_timeout_s):
                    await self.litellm.acompletion(
                        **PROBE_BODY,
                        model=self.model.model,
                        api_base=self.model.api_base,
                        api_key=self.model.api_key(),
                        timeout=self.settings.first_byte_timeout_s,
                        num_retries=0,
                    )
            except Exception:  # any failure, timeout included, means: not back yet
                return False
            return True
        if not self.model.api_base:
            return None  # no cheap generic probe for arbitrary providers: half-open trials
        return await http_probe(
            self.session, self.model.api_base, bearer_headers(self.model), self.settings
        )

    async def close(self) -> None:
        pass


def spec_nulls(obj: dict[str, Any]) -> dict[str, Any]:
    """litellm's objects dumped without their None fields (litellm adds many the spec does not
    know), with the nulls OpenAI's spec requires put back: each choice's `logprobs`, a chunk's
    `finish_reason`, a message's `refusal`."""
    for choice in obj.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        choice.setdefault("logprobs", None)
        if "delta" in choice:
            choice.setdefault("finish_reason", None)
        message = choice.get("message")
        if isinstance(message, dict) and message.get("role") == "assistant":
            message.setdefault("refusal", None)
    return obj
