"""A fast fake OpenAI-compatible upstream: a fixed answer, no per-request state.

.venv/bin/python -m bench.upstream --port 18001
"""

from __future__ import annotations

import argparse
import json
import time

from aiohttp import web

ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": int(time.time()),
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris is the capital."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
}
BODY = json.dumps(ANSWER).encode()
CHUNKS = [
    json.dumps(
        {
            **ANSWER,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": d, "finish_reason": f}],
        }
    ).encode()
    for d, f in (
        ({"role": "assistant", "content": ""}, None),
        ({"content": "Paris"}, None),
        ({"content": " is the capital."}, None),
        ({}, "stop"),
    )
]


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    if not body.get("stream"):
        return web.Response(body=BODY, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for c in CHUNKS:
        await resp.write(b"data: " + c + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    return resp


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini"}]})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=18001)
    args = ap.parse_args()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
