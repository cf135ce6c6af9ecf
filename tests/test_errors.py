"""Every kind of bad input gets a 4xx in OpenAI's error shape, never a 500 or a hang."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.conftest import RunningGateway

MSG = [{"role": "user", "content": "Hi"}]

BAD_BODIES: list[tuple[str, bytes, int, str | None]] = [
    ("malformed json", b'{"model": "auto", "messages": [', 400, "invalid_json"),
    ("not an object", b"[1, 2, 3]", 400, "invalid_json"),
    ("empty body", b"", 400, "invalid_json"),
    ("invalid utf-8", b'{"model": "auto", "messages": "\xff\xfe"}', 400, "invalid_encoding"),
    (
        "lone surrogate",
        b'{"model":"auto","messages":[{"role":"user","content":"\\ud800"}]}',
        400,
        "invalid_encoding",
    ),
    ("missing model", json.dumps({"messages": MSG}).encode(), 400, "missing_required_parameter"),
    ("missing messages", json.dumps({"model": "auto"}).encode(), 400, "missing_required_parameter"),
    ("empty messages", json.dumps({"model": "auto", "messages": []}).encode(), 400, None),
    ("messages wrong type", json.dumps({"model": "auto", "messages": "hi"}).encode(), 400, None),
    (
        "bad role",
        json.dumps({"model": "auto", "messages": [{"role": "x", "content": "a"}]}).encode(),
        400,
        None,
    ),
    (
        "content wrong type",
        json.dumps({"model": "auto", "messages": [{"role": "user", "content": 5}]}).encode(),
        400,
        None,
    ),
    ("model wrong type", json.dumps({"model": 5, "messages": MSG}).encode(), 400, None),
    (
        "stream wrong type",
        json.dumps({"model": "auto", "messages": MSG, "stream": "yes"}).encode(),
        400,
        None,
    ),
    (
        "negative max_tokens",
        json.dumps({"model": "auto", "messages": MSG, "max_tokens": -5}).encode(),
        400,
        None,
    ),
    (
        "zero max_tokens",
        json.dumps({"model": "auto", "messages": MSG, "max_tokens": 0}).encode(),
        400,
        None,
    ),
    (
        "absurd max_tokens",
        json.dumps({"model": "auto", "messages": MSG, "max_tokens": 10**12}).encode(),
        400,
        None,
    ),
    (
        "temperature out of range",
        json.dumps({"model": "auto", "messages": MSG, "temperature": 7}).encode(),
        400,
        None,
    ),
    (
        "unknown model",
        json.dumps({"model": "gpt-9", "messages": MSG}).encode(),
        404,
        "model_not_found",
    ),
    (
        "too long for local context",
        json.dumps(
            {"model": "local", "messages": [{"role": "user", "content": "lorem ipsum " * 2000}]}
        ).encode(),
        400,
        "context_length_exceeded",
    ),
]


def assert_openai_error(body: dict[str, object]) -> dict[str, object]:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert isinstance(err, dict)
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in err["message"]
    return err


@pytest.mark.parametrize(
    ("name", "raw", "status", "code"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES]
)
async def test_bad_chat_bodies(
    gateway: RunningGateway,
    http: aiohttp.ClientSession,
    name: str,
    raw: bytes,
    status: int,
    code: str | None,
) -> None:
    async with http.post(
        f"{gateway.base_url}/chat/completions",
        data=raw,
        headers={"Content-Type": "application/json"},
    ) as r:
        body = await r.json()
        assert r.status == status, body
        err = assert_openai_error(body)
        if code:
            assert err["code"] == code
        assert r.headers["x-request-id"]


@pytest.mark.parametrize("stream", [False, True])
async def test_context_error_before_stream_starts(
    gateway: RunningGateway, http: aiohttp.ClientSession, stream: bool
) -> None:
    body = {
        "model": "local",
        "stream": stream,
        "messages": [{"role": "user", "content": "lorem ipsum " * 2000}],
    }
    async with http.post(f"{gateway.base_url}/chat/completions", json=body) as r:
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "context_length_exceeded"


async def test_bad_completion_bodies(gateway: RunningGateway, http: aiohttp.ClientSession) -> None:
    for body, status in [
        ({"model": "local"}, 400),
        ({"model": "local", "prompt": 5}, 400),
        ({"model": "local", "prompt": []}, 400),
        ({"model": "nope", "prompt": "x"}, 404),
    ]:
        async with http.post(f"{gateway.base_url}/completions", json=body) as r:
            assert r.status == status, body
            assert_openai_error(await r.json())


async def test_unknown_path_and_method(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{gateway.base_url}/nothing-here") as r:
        assert r.status == 404
        assert_openai_error(await r.json())
    async with http.get(f"{gateway.base_url}/chat/completions") as r:
        assert r.status == 405
        assert_openai_error(await r.json())
