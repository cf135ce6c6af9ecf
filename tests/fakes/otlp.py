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
from typing import Any

from aiohttp import web

from .server import LoopbackServer

MODES = ("up", "down", "unavailable", "reject", "hang")


class FakeCollector(LoopbackServer):
    MODES = MODES
    OFFLINE = "down"

    def __init__(self, *, port: int | None = None, mode: str = "up") -> None:
        super().__init__(port=port, mode=mode)
        self.batches: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []  # of accepted batches
        self.encodings: list[str] = []  # Content-Encoding of every POST ("" when none)
        self.bodies: list[bytes] = []
        self.retry_after = "0"  # sent with `unavailable`
        self.attempts = 0  # POSTs that reached a listening socket, whatever the answer

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
