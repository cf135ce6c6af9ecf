"""The aiohttp runner the gateway serves with: connection limits, and OpenAI-shaped errors
even below the app.

aiohttp answers requests it cannot parse (a 100 KB header, a broken request line) and handler
failures it sees itself with plain text and an ERROR log line with a traceback. Clients of an
OpenAI-compatible API expect JSON errors; a client that walks away is not a server error.
The hook for both is aiohttp's `RequestHandler.handle_error`, reached through the `Server`
that the runner builds; both classes are public aiohttp API.

aiohttp also sets no bound on how long a client may take to send its request, and none on how
many connections are open: thousands of half-sent requests from one host hold as many file
descriptors until the box has none left. The limits production HTTP servers set (nginx's
client_header_timeout and client_body_timeout, Go's ReadHeaderTimeout, a connection cap per
server and per client address) live here, at the protocol, before any request reaches the
app: a connection past a cap gets a fixed 503 and is closed without a byte of it parsed, a
client slow with its headers or its body is closed, and each kind of drop is logged once per
burst with a count, never once per connection.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from ..errors import BodyTimeout, GatewayError, InternalError, InvalidRequest
from ..metrics import Metrics
from ..services import METRICS, SETTINGS
from ..settings import ServerSettings
from .sending import SendTimeout, bound_send_buffer

log = logging.getLogger(__name__)

# File descriptors kept for everything but client connections: model files, the Redis and
# cloud connection pools (64 each), the SQLite outbox and label store, the listener.
FD_RESERVE = 256
# A flood is logged as its first drop at once and then one line per window with the count.
BURST_WINDOW_S = 10.0
# After a body timeout the handler has this long to answer its 408 before the close.
_GRACE_S = 1.0


def _fixed_response(status: str, code: str, message: str, extra: str = "") -> bytes:
    body = orjson.dumps(
        {"error": {"message": message, "type": "service_unavailable", "param": None, "code": code}}
    )
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


# Written as is: a refused connection costs no parsing and no allocation beyond its socket.
_REFUSED = _fixed_response(
    "503 Service Unavailable",
    "too_many_connections",
    "The server has too many open connections; retry shortly.",
    "Retry-After: 1\r\n",
)
_HEADER_TIMEOUT = _fixed_response(
    "408 Request Timeout",
    "header_timeout",
    "The request headers did not arrive in time (server.header_timeout_s).",
)


class _Burst:
    """One log line when a burst of drops starts, then one per window with how many more."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        self.count = 0
        self._handle: asyncio.TimerHandle | None = None

    def hit(self, loop: asyncio.AbstractEventLoop, **extra: Any) -> None:
        if self._handle is None:
            log.warning(self.message, extra={"reason": self.reason, **extra})
            self._handle = loop.call_later(BURST_WINDOW_S, self._flush)
        else:
            self.count += 1

    def _flush(self) -> None:
        self._handle = None
        if self.count:
            log.warning(
                self.message + " (burst)",
                extra={"reason": self.reason, "more": self.count, "window_s": BURST_WINDOW_S},
            )
            self.count = 0

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class ConnectionLimits:
    """What one server's connections share: the counts per address and the drop bursts."""

    def __init__(self, settings: ServerSettings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.max_total = fit_fd_limit(settings.max_connections)
        self.max_per_address = settings.max_connections_per_address
        self.open = 0
        self._by_address: dict[str, int] = {}
        self._bursts = {
            "connection_limit": _Burst(
                "connection_limit", "refusing connections: server.max_connections reached"
            ),
            "address_limit": _Burst(
                "address_limit",
                "refusing connections from one address: server.max_connections_per_address",
            ),
            "header_timeout": _Burst(
                "header_timeout", "closing connections slow to send headers (header_timeout_s)"
            ),
            "body_timeout": _Burst(
                "body_timeout", "closing connections slow to send a body (body_timeout_s)"
            ),
            "send_timeout": _Burst(
                "send_timeout", "cutting connections that read nothing (send_timeout_s)"
            ),
        }

    def admit(self, address: str | None) -> str | None:
        """Count a new connection in, or say which cap refuses it."""
        if self.open >= self.max_total:
            return "connection_limit"
        key = address or ""
        held = self._by_address.get(key, 0)
        if held >= self.max_per_address:
            return "address_limit"
        self.open += 1
        self._by_address[key] = held + 1
        if self.metrics is not None:
            self.metrics.connections_open.set(self.open)
        return None

    def release(self, address: str | None) -> None:
        key = address or ""
        self.open -= 1
        left = self._by_address.get(key, 1) - 1
        if left > 0:
            self._by_address[key] = left
        else:
            self._by_address.pop(key, None)
        if self.metrics is not None:
            self.metrics.connections_open.set(self.open)

    def dropped(self, reason: str, loop: asyncio.AbstractEventLoop, address: str | None) -> None:
        if self.metrics is not None:
            self.metrics.connections_dropped.labels(reason).inc()
        self._bursts[reason].hit(loop, address=address)

    def close(self) -> None:
        for burst in self._bursts.values():
            burst.cancel()


def fit_fd_limit(wanted: int) -> int:
    """The connection cap the open-file limit allows: the soft limit is raised towards the
    hard one first (as Go's runtime does), and the cap lowered, with a warning, if it still
    would not fit beside the gateway's own files and pools."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    fitted = max(1, soft - FD_RESERVE)
    log.warning(
        "server.max_connections lowered to fit the open-file limit",
        extra={"wanted": wanted, "max_connections": fitted, "nofile": soft},
    )
    return fitted


class _Handler(SendTimeout, RequestHandler):
    """One connection: counted against the caps, timed while its request arrives."""

    def __init__(self, manager: web.Server, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._address: str | None = None
        self._counted = False
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "header" or "body" while the timer runs
        self._body: Any = None  # the payload the body timer watches
        self._cut = False  # the body timed out: close once the 408 is written
        self._partial = False  # some bytes of a request head arrived

    # -- the caps ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self._address = peer[0] if isinstance(peer, tuple) and peer else None
        refused = self._limits.admit(self._address)
        if refused is not None:
            # Never parsed, never a task: the fixed answer and the close.
            self._refused = True
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_REFUSED)
            transport.close()
            self._limits.dropped(refused, self._loop, self._address)
            return
        self._counted = True
        bound_send_buffer(transport)
        super().connection_made(transport)
        self._arm("header", self._limits.settings.header_timeout_s)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._disarm()
        self._unstall()
        if self._counted:
            self._counted = False
            self._limits.release(self._address)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        before = self._request_count
        super().data_received(data)
        self._partial = bool(data) and self._request_count == before
        if self._request_count > before and self._messages:
            # A whole request head arrived: its body, if any still missing, is timed next.
            payload = self._messages[-1][1]
            if not payload.is_eof():
                self._body = payload
                self._arm("body", self._limits.settings.body_timeout_s)
            else:
                self._disarm()
        elif self._waiting_for == "body" and self._body is not None and self._body.is_eof():
            self._disarm()
        elif data and self._waiting_for is None and (self._body is None or self._body.is_eof()):
            # The first bytes of a next request on a kept-alive connection.
            self._arm("header", self._limits.settings.header_timeout_s)

    # -- the timeouts -----------------------------------------------------------------------

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._waiting_for = phase
        self._timer = self._loop.call_later(seconds, self._expired, phase)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._waiting_for = None

    def _expired(self, phase: str) -> None:
        self._timer, self._waiting_for = None, None
        if self.transport is None:
            return
        if phase == "header":
            if self._request_in_progress:
                return  # a pipelined head behind a running request: keep-alive bounds it
            self._limits.dropped("header_timeout", self._loop, self._address)
            if self._partial:  # a connection that never said a word gets no answer either
                self.transport.write(_HEADER_TIMEOUT)
            self.force_close()
            return
        body, self._body = self._body, None
        if body is None or body.is_eof():
            return
        self._limits.dropped("body_timeout", self._loop, self._address)
        current = self._current_request
        if current is not None and current.content is body:
            # The handler waits on this body: it answers 408 (OpenAI JSON, one request log
            # line), then the connection closes; if it does not in a second, it is cut.
            self._cut = True
            body.set_exception(
                BodyTimeout(
                    "The request body did not arrive in time "
                    f"({self._limits.settings.body_timeout_s:g} s, server.body_timeout_s).",
                )
            )
            self._timer = self._loop.call_later(_GRACE_S, self.force_close)
        else:
            self.force_close()  # answered already (or not started): nothing waits for it

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if self._cut:
            resp.force_close()
        done = await super().finish_response(request, resp, start_time)
        if self._cut:
            self.force_close()  # the rest of the body is never read
        return done

    # -- errors below the app ---------------------------------------------------------------

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if isinstance(exc, ConnectionError):
            log.info("client went away", extra={"error": type(exc).__name__})
            if request.writer.output_size > 0:
                raise ConnectionError("client went away mid-response")
        elif status >= 500:
            log.error("unhandled error below the app", exc_info=exc)
        else:
            # Not aiohttp's message: it quotes the bytes it could not parse, the client's.
            log.info("unparsable request", extra={"status": status})
        err: GatewayError = (
            InternalError("The server had an error processing your request.")
            if status >= 500
            else InvalidRequest(message or "Bad request.", code=f"http_{status}")
        )
        resp = web.json_response(err.body(), status=status)
        resp.force_close()
        return resp


class _Server(web.Server):
    limits: ConnectionLimits

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, limits=self.limits, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` whose connections are capped and timed (`server.*` of the app's
    settings) and answer protocol-level errors as OpenAI JSON."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        settings = app.get(SETTINGS)
        self.settings = settings.server if settings is not None else ServerSettings()
        self.metrics = app.get(METRICS)
        # The idle timeout between requests is aiohttp's own keep-alive timer.
        kwargs.setdefault("keepalive_timeout", self.settings.keepalive_timeout_s)
        super().__init__(app, **kwargs)
        self.limits: ConnectionLimits | None = None

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # same state, our connection handler class
        self.limits = ConnectionLimits(self.settings, self.metrics)
        assert isinstance(server, _Server)
        server.limits = self.limits
        return server

    async def _cleanup_server(self) -> None:
        if self.limits is not None:
            self.limits.close()
        await super()._cleanup_server()
