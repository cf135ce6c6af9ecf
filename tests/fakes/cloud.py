"""A fake OpenAI-compatible cloud on loopback that can be told to misbehave.

Modes: ok, slow (late first byte and slow chunks), fail500, fail429, hang (accepts, never
answers), drop (streams a few chunks then cuts the connection), flaky (every other request
500), refuse (nothing listens: connections are refused), hang_chat (completions hang while the
model list still answers), echo400 (a 400 whose message echoes the Authorization header, as
some upstreams do), echo_stream (streams the Authorization header back as content), judge
(answers like ok, but a pairwise judge prompt gets a verdict: the local answer loses when the
question mentions `judge_topic`, and wins otherwise; `judge_reply` overrides the verdict text).
A chat request that forces a tool call (`tool_choice` required or a named function) gets one.

Every request, to any path, is recorded in `hits` (method, path, headers) and, byte for byte
(request line, headers and body as received), in `received`: a fake started as an attacker's
host proves that nothing reached it, and a privacy test that no marker did. `response_headers`
go out on every answer (an upstream that claims to be an edge-gateway, or leaks what it should
not).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import time
from typing import Any

from aiohttp import web

from .server import LoopbackServer

EMBEDDING_WIDTH = 8  # of the fake's embedding vectors (not unit length: the gateway normalises)

MODES = (
    "ok",
    "slow",
    "fail500",
    "fail429",
    "hang",
    "drop",
    "flaky",
    "refuse",
    "hang_chat",
    "echo400",
    "echo_stream",
    "judge",
)
JUDGE_MARKER = "impartial judge"


class FakeCloud(LoopbackServer):
    MODES = MODES
    OFFLINE = "refuse"

    def __init__(self, *, port: int | None = None, slow_s: float = 0.5) -> None:
        super().__init__(port=port, mode="ok")
        self.slow_s = slow_s
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.probes = 0
        self.hits: list[tuple[str, str, dict[str, str]]] = []
        self.received: list[bytes] = []  # every request as it arrived: line, headers, body
        self.embedding_requests: list[dict[str, Any]] = []  # bodies sent to /v1/embeddings
        self._counter = 0
        self.judge_topic = "tax"
        self.judge_reply: str | None = None
        self.judge_calls = 0
        self.response_headers: dict[str, str] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def model_entry(
        self, name: str = "gpt-fake", model: str = "openai/gpt-4o-mini"
    ) -> dict[str, Any]:
        return {
            "name": name,
            "model": model,
            "api_base": self.base_url,
            "api_key_env": "FAKE_CLOUD_KEY",
        }

    @property
    def chat_calls(self) -> int:
        return len(self.requests)

    # -- app -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.hits.append((request.method, request.path, dict(request.headers)))
            line = f"{request.method} {request.path_qs}\n".encode()
            head = b"".join(k + b": " + v + b"\n" for k, v in request.raw_headers)
            self.received.append(line + head + b"\n" + await request.read())
            return await handler(request)

        app = web.Application(middlewares=[record])

        async def extra_headers(request: web.Request, response: web.StreamResponse) -> None:
            response.headers.update(self.response_headers)

        app.on_response_prepare.append(extra_headers)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/embeddings", self._embeddings)
        return app

    async def _gate(self, request: web.Request) -> web.Response | None:
        """Apply the failure mode before answering; a response means: answer with this."""
        self._counter += 1
        mode = self.mode
        if mode == "flaky":
            mode = "fail500" if self._counter % 2 else "ok"
        if mode in ("hang", "hang_chat"):
            await asyncio.sleep(3600)
        if mode == "echo400":
            auth = request.headers.get("Authorization", "")
            return web.json_response(
                {
                    "error": {
                        "message": f"bad request; you sent Authorization: {auth}",
                        "type": "invalid_request_error",
                        "param": auth,
                        "code": None,
                    }
                },
                status=400,
            )
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        if mode == "fail500":
            return web.json_response(
                {
                    "error": {
                        "message": "upstream exploded",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                },
                status=500,
            )
        if mode == "fail429":
            return web.json_response(
                {
                    "error": {
                        "message": "slow down",
                        "type": "rate_limit_error",
                        "param": None,
                        "code": "rate_limit_exceeded",
                    }
                },
                status=429,
                headers={"Retry-After": "1"},
            )
        return None

    def _verdict(self, body: dict[str, Any]) -> str | None:
        """judge mode: the verdict for a pairwise judge prompt; None for any other request."""
        msgs = body.get("messages") or []
        system = msgs[0].get("content") if msgs and isinstance(msgs[0], dict) else ""
        if self.mode != "judge" or not isinstance(system, str) or JUDGE_MARKER not in system:
            return None
        self.judge_calls += 1
        if self.judge_reply is not None:
            return self.judge_reply
        user = str(msgs[-1].get("content") or "")
        question = user.split("[The start of assistant A's answer]")[0]
        a = user.split("[The start of assistant A's answer]\n", 1)[-1]
        local_is_a = not a.startswith("cloud answer to:")
        local_bad = self.judge_topic in question.lower()
        a_wins = local_is_a != local_bad
        return f"Compared both.\n[[{'A' if a_wins else 'B'}]]"

    def _answer(self, body: dict[str, Any]) -> str:
        msgs = body.get("messages") or [{"content": body.get("prompt", "")}]
        last = msgs[-1].get("content") if isinstance(msgs[-1], dict) else ""
        if not isinstance(last, str):
            last = json.dumps(last)
        return f"cloud answer to: {last[:60]}"

    def _forced_call(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """A tool call when the request forces one (`required` or a named function)."""
        choice = body.get("tool_choice")
        tools = body.get("tools") or []
        if not tools or (choice != "required" and not isinstance(choice, dict)):
            return None
        name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
        return {
            "id": "call_fake",
            "type": "function",
            "function": {
                "name": name or tools[0]["function"]["name"],
                "arguments": json.dumps({"city": "Oslo"}),
            },
        }

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        gated = await self._gate(request)
        if gated is not None:
            return gated
        text = self._verdict(body) or self._answer(body)
        if self.mode == "echo_stream":
            text = "you sent " + request.headers.get("Authorization", "")
        model = body.get("model", "gpt-fake")
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": len(text.split()),
            "total_tokens": 11 + len(text.split()),
        }
        call = self._forced_call(body)
        if call is not None and not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": None,
                                "refusal": None,
                                "tool_calls": [call],
                            },
                            "finish_reason": "tool_calls",
                        }
                    ],
                    "usage": usage,
                }
            )
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text, "refusal": None},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        words = text.split(" ")
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

        async def send(obj: dict[str, Any]) -> None:
            await resp.write(b"data: " + json.dumps(obj).encode() + b"\n\n")

        await send(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
        )
        if call is not None:
            # Streamed as OpenAI does: the call's head first, then its arguments in pieces.
            fn = call["function"]
            head = {**call, "index": 0, "function": {"name": fn["name"], "arguments": ""}}
            pieces = [fn["arguments"][:5], fn["arguments"][5:]]
            for delta in [head] + [{"index": 0, "function": {"arguments": p}} for p in pieces]:
                await send(
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"tool_calls": [delta]}, "finish_reason": None}
                        ],
                    }
                )
            words = []
        for i, w in enumerate(words):
            if self.mode == "drop" and i == 2:
                # Cut the TCP connection mid-stream, without the terminating chunk.
                assert request.transport is not None
                request.transport.close()
                return resp
            if self.mode == "slow":
                await asyncio.sleep(self.slow_s / 10)
            await send(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": (" " if i else "") + w},
                            "finish_reason": None,
                        }
                    ],
                }
            )
        finish = "stop" if call is None else "tool_calls"
        await send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({**base, "choices": [], "usage": usage})
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        gated = await self._gate(request)
        if gated is not None:
            return gated
        text = self._answer(body)
        return web.json_response(
            {
                "id": "cmpl-fake",
                "object": "text_completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10},
            }
        )

    async def _embeddings(self, request: web.Request) -> web.Response:
        """Deterministic 8-wide vectors from each input's hash (or `dimensions` wide)."""
        body = await request.json()
        self.embedding_requests.append(body)
        gated = await self._gate(request)
        if gated is not None:
            return gated
        raw = body.get("input")
        items = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else raw
        width = int(body.get("dimensions") or EMBEDDING_WIDTH)
        data = []
        for i, item in enumerate(items or []):
            digest = hashlib.sha256(json.dumps(item).encode()).digest()
            vec = [(digest[j % 32] - 127.5) / 127.5 for j in range(width)]
            emb: Any = vec
            if body.get("encoding_format") == "base64":
                emb = base64.b64encode(struct.pack(f"<{width}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        tokens = sum(len(str(x).split()) for x in items or [])
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: web.Request) -> web.Response:
        self.probes += 1
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "fail500":
            return web.json_response({"error": {"message": "down"}}, status=500)
        return web.json_response(
            {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}
        )
