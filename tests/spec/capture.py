"""What every in-process gateway of the suite answers on OpenAI's paths, handed to the
conformance check as each answer ends.

aiohttp offers no hook on a response's body, so `StreamResponse.write` and `write_eof` are
wrapped for the session (test code only; the gateway itself reads no private attribute but
those tests/test_aiohttp_contract.py names). A body is kept up to CAP bytes: a longer one (the
suite's multi-megabyte streams, the send-timeout tests' endless ones) is not checked, so the
tests that measure memory measure the gateway rather than this tee.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from gateway.services import SERVICES

from .conformance import Conformance

CAP = 64 * 1024


@contextmanager
def teed(conformance: Conformance) -> Iterator[None]:
    """Check every answer on /v1/ that ends while this is entered; note what breaks the spec
    with the test that was running."""
    kept: dict[int, tuple[Any, bytearray | None]] = {}  # id(response) -> (request, body)
    write, write_eof = web.StreamResponse.write, web.StreamResponse.write_eof

    def _body(resp: web.StreamResponse) -> tuple[Any, bytearray | None] | None:
        req = resp._req
        # The gateway's answers only: the suite's fakes (the cloud, the collector) are aiohttp
        # servers in the same process.
        if req is None or not req.path.startswith("/v1/") or SERVICES not in req.app:
            return None
        entry = kept.get(id(resp))
        if entry is None or entry[0] is not req:  # a new answer (ids are reused)
            entry = kept[id(resp)] = (req, bytearray())
        return entry

    async def teeing_write(self: web.StreamResponse, data: Any) -> None:
        entry = _body(self)
        if entry is not None and entry[1] is not None:
            if len(entry[1]) + len(data) > CAP:
                kept[id(self)] = (entry[0], None)  # too long to keep: not checked
            else:
                entry[1].extend(data)
        await write(self, data)

    async def teeing_write_eof(self: web.StreamResponse, data: bytes = b"") -> None:
        entry = None if self._eof_sent else _body(self)
        if entry is not None:
            kept.pop(id(self), None)
            req, body = entry
            if body is not None and len(body) + len(data) <= CAP:
                test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
                try:
                    found = conformance.check(
                        req.method, req.path, self.status, self.content_type, bytes(body + data)
                    )
                except ValueError as exc:  # not JSON where JSON belongs
                    found = [f"{req.method} {req.path}: unparsable answer ({exc})"]
                conformance.violations.extend((test, v) for v in found)
        await write_eof(self, data)

    web.StreamResponse.write = teeing_write  # type: ignore[method-assign]
    web.StreamResponse.write_eof = teeing_write_eof  # type: ignore[method-assign]
    try:
        yield
    finally:
        web.StreamResponse.write = write  # type: ignore[method-assign]
        web.StreamResponse.write_eof = write_eof  # type: ignore[method-assign]
