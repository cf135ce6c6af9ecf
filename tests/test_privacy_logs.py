"""No client text reaches the logs, at any level, while `server.log_bodies` is off (issue 32).

The gateway's logging is set up as `python -m gateway serve` sets it up, at DEBUG; every
record is formatted by the gateway's own JSON formatter. Then a marker string goes through
every error path a client can reach from outside: unreadable JSON, wrong types, unknown
models, a schema the grammar engine cannot start (the probe's `anyOf` of 700 objects, a 500
that logged the whole schema in one 107 KB line), an invalid schema, a body over the size
limit, a broken request line, unknown Responses ids, a failing and a refusing cloud, a
stream cut by the cloud. The marker must appear in no log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from gateway.logs import JsonFormatter, setup_logging
from tests.conftest import RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

MARK = "zq7-private-marker"
EMAIL = f"{MARK}@example.com"


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(JsonFormatter(bodies=False))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[Capture]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    setup_logging("DEBUG", bodies=False)  # as `gateway serve` does with log_level DEBUG
    capture = Capture()
    root.addHandler(capture)
    yield capture
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def any_of(n: int) -> dict[str, Any]:
    """A valid JSON schema: an `anyOf` of `n` small objects, each naming the marker (past
    llguidance's 2,000 items in a parser row from the second token on)."""
    return {
        "anyOf": [
            {
                "type": "object",
                "description": f"variant {i} for {EMAIL}",
                "properties": {"a": {"type": "string"}, f"{MARK}_{i}": {"type": "number"}},
                "additionalProperties": False,
            }
            for i in range(n)
        ]
    }


def chat(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": f"Hello from {EMAIL}"}],
        "max_tokens": 4,
        **extra,
    }


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), 10)
    finally:
        writer.close()


async def test_no_error_path_logs_client_text(
    captured: Capture,
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    http: aiohttp.ClientSession,
) -> None:
    gw: RunningGateway = await gateway_factory(
        **cloud_settings(fake_cloud), server={"max_body_bytes": 256 * 1024}
    )
    cloud = fake_cloud.model_entry()["name"]
    url = gw.base_url
    statuses: dict[str, int] = {}

    async def post(name: str, path: str, **kw: Any) -> None:
        async with http.post(f"{url}{path}", **kw) as r:
            await r.read()
            statuses[name] = r.status

    # The probe's finding: a valid schema the grammar engine compiles but cannot start.
    schema = {"type": "json_schema", "json_schema": {"name": "big", "schema": any_of(700)}}
    await post("any_of_700", "/chat/completions", json=chat("local", response_format=schema))
    bad_schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": MARK}}}
    await post(
        "invalid_schema", "/chat/completions", json=chat("local", response_format=bad_schema)
    )
    await post(
        "unreadable",
        "/chat/completions",
        data=f'{{"model": "{EMAIL}", ',
        headers={"content-type": "application/json"},
    )
    await post("wrong_types", "/chat/completions", json={"model": "local", "messages": EMAIL})
    await post("unknown_model", "/chat/completions", json=chat(EMAIL))
    await post("too_large", "/chat/completions", json=chat("local", user=EMAIL * 20_000))
    await post("bad_param", "/chat/completions", json=chat("local", temperature=EMAIL))
    await post(
        "unknown_response",
        "/responses",
        json={"model": "local", "input": "hi", "previous_response_id": f"resp_{MARK}"},
    )
    await post(
        "bad_item_reference",
        "/responses",
        json={"model": "local", "input": [{"type": "item_reference", "id": EMAIL}]},
    )
    await post(
        "embedding_format",
        "/embeddings",
        json={"model": "local", "input": EMAIL, "encoding_format": MARK},
    )
    async with http.get(f"{url}/responses/resp_{MARK}") as r:
        statuses["get_unknown_response"] = r.status
    # The cloud failing, refusing, and cutting a stream, for a request without private data
    # that still carries the marker (a plain word is not private data).
    plain = {
        "model": cloud,
        "messages": [{"role": "user", "content": f"say {MARK}"}],
        "max_tokens": 2,
    }
    for mode in ("fail500", "echo400", "drop"):
        await fake_cloud.set_mode(mode)
        await post(f"cloud_{mode}", "/chat/completions", json={**plain, "stream": mode == "drop"})
    await fake_cloud.set_mode("ok")
    reply = await raw_request(gw.port, f"G{MARK} /v1/models HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    statuses["broken_request_line"] = int(reply.split()[1]) if reply else 0

    assert statuses["any_of_700"] == 400, statuses  # was a 500 with the schema in the log
    assert statuses["invalid_schema"] == 400
    assert all(400 <= s < 500 for k, s in statuses.items() if not k.startswith("cloud_")), statuses
    assert statuses["too_large"] == 413 and statuses["cloud_echo400"] == 400, statuses
    assert captured.lines, "nothing was logged: the capture is not wired"
    leaked = [line[:300] for line in captured.lines if MARK in line]
    assert leaked == [], leaked
    assert max(len(line) for line in captured.lines) < 8192


async def test_any_of_700_is_refused_by_name(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "big", "schema": any_of(700)}}
    async with http.post(
        f"{gateway.base_url}/chat/completions", json=chat("local", response_format=schema)
    ) as r:
        body = await r.json()
    assert r.status == 400, body
    assert body["error"]["code"] in ("unsupported_schema", "invalid_schema"), body
    assert body["error"]["param"].startswith("response_format"), body


def test_the_formatter_withholds_exception_messages() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
    try:
        try:
            raise KeyError(EMAIL)
        except KeyError as inner:
            raise ValueError(f"while reading {EMAIL}") from inner
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    quiet = json.loads(JsonFormatter(bodies=False).format(record))
    assert MARK not in json.dumps(quiet)
    assert "ValueError" in quiet["exc"] and "KeyError" in quiet["exc"]
    assert quiet["exc_type"] == "ValueError"
    loud = JsonFormatter(bodies=True).format(record)
    assert MARK in loud  # an operator who opted in sees it
