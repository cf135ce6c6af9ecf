"""What every gateway of the suite answers on OpenAI's paths, handed to the conformance check
as it goes out.

aiohttp offers no hook on a response's body, so `StreamResponse.write` and `write_eof` are
wrapped (test code only; the gateway itself reads no private attribute but those
tests/test_aiohttp_contract.py names). An event stream is checked frame by frame as its
frames complete, keeping no more than the frame being written, so endless and
multi-megabyte streams are checked without the tee holding them; a whole answer is checked
when it is sent, its long lists cut to their first items (an item schema is the same for
every item), so a megabyte of echoed tools costs the loop milliseconds, not seconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from gateway.services import SERVICES

from .conformance import Conformance

LIST_ITEMS = 16  # of a long list, the first this many are checked
CAP = 8 * 2**20  # a body streamed in pieces that are not events: kept up to this, else unchecked


def shortened(node: Any) -> Any:
    if isinstance(node, list):
        return [shortened(v) for v in node[:LIST_ITEMS]]
    if isinstance(node, dict):
        return {k: shortened(v) for k, v in node.items()}
    return node


@contextmanager
def teed(conformance: Conformance) -> Iterator[None]:
    """Check every answer on /v1/ while this is entered; note what breaks the spec with the
    test that was running."""
    kept: dict[int, tuple[Any, bytearray | None]] = {}  # id(response) -> (request, pending)
    write, write_eof = web.StreamResponse.write, web.StreamResponse.write_eof

    def note(found: list[str]) -> None:
        if found:
            test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
            conformance.violations.extend((test, v) for v in found)

    def check(resp: web.StreamResponse, req: Any, body: bytes) -> None:
        try:
            if resp.content_type == "application/json" and body:
                obj = shortened(json.loads(body))
                body = json.dumps(obj).encode()
            note(conformance.check(req.method, req.path, resp.status, resp.content_type, body))
        except ValueError as exc:  # not JSON where JSON belongs
            note([f"{req.method} {req.path}: unparsable answer ({exc})"])

    def entry(resp: web.StreamResponse) -> tuple[Any, bytearray | None] | None:
        req = resp._req
        # The gateway's answers only: the suite's fakes (the cloud, the collector) are aiohttp
        # servers in the same process.
        if req is None or not req.path.startswith("/v1/") or SERVICES not in req.app:
            return None
        got = kept.get(id(resp))
        if got is None or got[0] is not req:  # a new answer (ids are reused)
            got = kept[id(resp)] = (req, bytearray())
        return got

    async def teeing_write(self: web.StreamResponse, data: Any) -> None:
        got = entry(self)
        if got is not None and got[1] is not None:
            req, pending = got
            pending.extend(data)
            if self.content_type == "text/event-stream":
                cut = pending.rfind(b"\n\n")
                if cut >= 0:  # every complete frame now, the partial one kept
                    done = bytes(pending[: cut + 2])
                    del pending[: cut + 2]
                    check(self, req, done)
            elif len(pending) > CAP:
                kept[id(self)] = (req, None)
                conformance.unchecked += 1
        await write(self, data)

    async def teeing_write_eof(self: web.StreamResponse, data: bytes = b"") -> None:
        got = None if self._eof_sent else entry(self)
        if got is not None:
            kept.pop(id(self), None)
            req, pending = got
            if pending is not None:
                check(self, req, bytes(pending) + bytes(data))
        await write_eof(self, data)

    web.StreamResponse.write = teeing_write  # type: ignore[method-assign]
    web.StreamResponse.write_eof = teeing_write_eof  # type: ignore[method-assign]
    try:
        yield
    finally:
        web.StreamResponse.write = write  # type: ignore[method-assign]
        web.StreamResponse.write_eof = write_eof  # type: ignore[method-assign]
