"""A fake OpenTelemetry Collector OTLP/HTTP logs receiver on loopback.

Modes: up (200, records kept), down (nothing listens: connections are refused), unavailable
(503 with `retry_after` seconds, as a collector under memory pressure answers), reject (400,
a batch it will never take), hang (accepts, never answers). Every accepted POST to /v1/logs is kept
in `batches` (parsed JSON) with its headers; `bodies` keeps every raw body it saw, accepted
or not, so a test can look for text that must never leave the box.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from typing import Any

from aiohttp import web

MODES = ("up", "down", "unavailable", "reject", "hang")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FakeCollector:
    def __init__(self, *, port: int | None = None, mode: str = "up") -> None:
        assert mode in MODES, mode
        self.port = port or _free_port()
        self.mode = mode
        self.batches: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # of accepted batches
        self.encodings: list[str] = []  # Content-Encoding of every POST ("" when none)
        self.bodies: list[bytes] = []
        self.retry_after = "0"  # sent with `unavailable`
        self.attempts = 0  # POSTs that reached a listening socket, whatever the answer
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def records(self) -> list[dict[str, Any]]:
        """Every accepted log record, in arrival order, as {attribute key: python value}."""
        out = []
        for batch in self.batches:
            for rl in batch["resourceLogs"]:
                for sl in rl["scopeLogs"]:
                    for lr in sl["logRecords"]:
                        out.append({kv["key"]: plain(kv["value"]) for kv in lr["attributes"]})
        return out

    def request_ids(self) -> list[str]:
        return [r["gateway.request_id"] for r in self.records()]

    # -- app -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/logs", self._logs)
        return app

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()  # aiohttp undoes a gzip Content-Encoding
        self.encodings.append(request.headers.get("Content-Encoding", ""))
        self.bodies.append(body)
        self.attempts += 1
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "unavailable":
            return web.json_response(
                {"code": 14, "message": "memory limiter"},
                status=503,
                headers={"Retry-After": self.retry_after},
            )
        if self.mode == "reject":
            return web.json_response({"code": 3, "message": "bad batch"}, status=400)
        if request.content_type != "application/json":
            return web.json_response({"code": 3, "message": "not json"}, status=415)
        self.batches.append(json.loads(body))
        self.headers.append(dict(request.headers))
        return web.json_response({"partialSuccess": {}})

    # -- lifecycle (in the caller's loop) --------------------------------------------------

    async def start(self) -> FakeCollector:
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        if self.mode != "down":
            await self._listen()
        return self

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def set_mode(self, mode: str) -> None:
        """Switch modes; `down` closes the listening socket (and open connections)."""
        assert mode in MODES, mode
        if mode == "down" and self._site is not None:
            await self._site.stop()
            self._site = None
            assert self._runner is not None and self._runner.server is not None
            for conn in list(self._runner.server.connections):
                conn.force_close()
        elif mode != "down" and self._site is None:
            await self._listen()
        self.mode = mode

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- lifecycle (own thread, for gateway processes) -------------------------------------

    def start_in_thread(self) -> FakeCollector:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.stop())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def set_mode_threadsafe(self, mode: str) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self.set_mode(mode), self._loop).result(10)

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def plain(value: dict[str, Any]) -> Any:
    """An OTLP AnyValue back as a Python value."""
    ((kind, v),) = value.items()
    if kind == "intValue":
        return int(v)
    if kind == "arrayValue":
        return [plain(x) for x in v.get("values", [])]
    if kind == "kvlistValue":
        return {kv["key"]: plain(kv["value"]) for kv in v.get("values", [])}
    return v
