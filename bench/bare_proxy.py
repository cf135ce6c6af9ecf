"""The floor for the pass-through: a bare aiohttp proxy, run beside the gateway in every bench.

It reads the body, forwards it on one pooled ClientSession and relays the answer: no parsing,
routing, metrics or logs. Whatever the gateway costs above this is its own work; what this
costs is aiohttp's, which the gateway cannot go below.

.venv/bin/python -m bench.bare_proxy --port 18002 --upstream http://127.0.0.1:18001
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

_HOP = {"content-length", "transfer-encoding", "connection", "content-encoding"}


def make_app(upstream: str) -> web.Application:
    app = web.Application()

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )
        yield
        await app["session"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        async with request.app["session"].post(
            upstream + request.path, data=body, headers=headers
        ) as up:
            if up.content_type != "text/event-stream":
                payload = await up.read()
                hdrs = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
                return web.Response(status=up.status, body=payload, headers=hdrs)
            out = web.StreamResponse(status=up.status, headers={"Content-Type": up.content_type})
            await out.prepare(request)
            async for chunk in up.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out

    app.cleanup_ctx.append(session)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")  # for the bench to wait on; not part of the floor

    app.router.add_post("/v1/{tail:.*}", forward)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:18001")
    args = ap.parse_args()
    web.run_app(make_app(args.upstream), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
