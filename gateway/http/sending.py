"""The write side of a client connection, bounded as the read side is.

A client that takes nothing of an answer (its socket full) would otherwise hold the answer's
bytes and the connection for as long as it likes. Each connection's kernel send buffer is
bounded, so past it the answer waits in the gateway's own buffer, where asyncio tells when it
passes its high-water mark (`pause_writing`); a client that then takes nothing for
`server.send_timeout_s` is reset (as nginx's `send_timeout`): its buffer is freed and a
stream's writer fails, which releases its upstream connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

# The kernel's send buffer per client connection (Linux doubles it): 512 KiB in flight is
# 40 Mbit/s at 100 ms, more than an edge box's clients read of answers and streams.
SEND_BUFFER_BYTES = 256 * 1024


def bound_send_buffer(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)


class SendTimeout:
    """Mixed into the connection handler (an asyncio protocol): cuts a stalled reader.

    The handler provides `_loop`, `transport`, `_limits` (ConnectionLimits) and `_address`.
    """

    _stalled: asyncio.TimerHandle | None = None
    _loop: asyncio.AbstractEventLoop
    transport: Any
    _limits: Any
    _address: str | None

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        if self._stalled is None:
            self._stalled = self._loop.call_later(
                self._limits.settings.send_timeout_s, self._send_expired
            )

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        self._unstall()

    def _unstall(self) -> None:
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def _send_expired(self) -> None:
        self._stalled = None
        if self.transport is None:
            return
        self._limits.dropped("send_timeout", self._loop, self._address)
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            # A reset, not a close: what the kernel still holds for this client is dropped
            # too, rather than trickled to a reader that is not reading.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()
