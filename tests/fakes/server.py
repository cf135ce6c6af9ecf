"""What the loopback fakes share: an aiohttp app on 127.0.0.1 that a test can take off the
network (nothing listens: connections are refused) and bring back, run in the test's own loop
or in a thread of its own (for gateway processes and sync tests)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Self

from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopbackServer:
    MODES: tuple[str, ...] = ()
    OFFLINE = ""  # the mode in which nothing listens

    def __init__(self, *, port: int | None, mode: str) -> None:
        assert mode in self.MODES, mode
        self.port = port or free_port()
        self.mode = mode
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def app(self) -> web.Application:
        raise NotImplementedError

    # -- lifecycle (in the caller's loop) --------------------------------------------------

    async def start(self) -> Self:
        self._runner = web.AppRunner(self.app(), handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        if self.mode != self.OFFLINE:
            await self._listen()
        return self

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def set_mode(self, mode: str) -> None:
        """Switch modes; the offline mode closes the listening socket, leaving it reopens it."""
        assert mode in self.MODES, mode
        if mode == self.OFFLINE and self._site is not None:
            await self._site.stop()
            self._site = None
            # Stopping the listener leaves keep-alive connections open; a dead uplink has none.
            assert self._runner is not None and self._runner.server is not None
            for conn in list(self._runner.server.connections):
                conn.force_close()
        elif mode != self.OFFLINE and self._site is None:
            await self._listen()
        self.mode = mode

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- lifecycle (own thread) --------------------------------------------------------------

    def start_in_thread(self) -> Self:
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


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _one_model(_request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})


@contextlib.asynccontextmanager
async def upstream(chat: Handler, port: int) -> AsyncIterator[None]:
    """A minimal OpenAI-compatible upstream on 127.0.0.1:`port` for one test's own behaviour:
    `chat` answers /v1/chat/completions, /v1/models lists one model (the health probe)."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", _one_model)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


def sse(obj: dict[str, Any]) -> bytes:
    """One server-sent event of a JSON object, as OpenAI streams chunks."""
    return b"data: " + json.dumps(obj).encode() + b"\n\n"
