"""The spec check every answer of the suite goes through (tests/spec/), checked itself: it
rejects what OpenAI's published schemas reject, keeps to KNOWN where the spec contradicts
OpenAI's API, and sees the answers of a running gateway."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import RunningGateway
from tests.spec.conformance import KNOWN, Conformance


@pytest.fixture(scope="module")
def spec() -> Conformance:
    return Conformance()


def chat_answer(**message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "hi", **message},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
    }


def check(spec: Conformance, path: str, obj: Any, *, stream: bool = False) -> list[str]:
    if stream:
        body = b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in obj)
        return spec.check("POST", path, 200, "text/event-stream", body + b"data: [DONE]\n\n")
    return spec.check("POST", path, 200, "application/json", json.dumps(obj).encode())


def test_it_rejects_what_the_spec_rejects(spec: Conformance) -> None:
    assert spec.source.startswith("openai/openai-openapi")
    assert check(spec, "/v1/chat/completions", chat_answer(refusal=None)) == []
    missing = check(spec, "/v1/chat/completions", chat_answer())
    assert missing and "refusal" in missing[0]
    bad_fingerprint = {**chat_answer(refusal=None), "system_fingerprint": None}
    assert check(spec, "/v1/chat/completions", bad_fingerprint)
    error = spec.check("POST", "/v1/chat/completions", 400, "application/json", b'{"error": {}}')
    assert error  # an error body needs message, type, param, code


def test_known_contradictions_are_the_only_ones_let_through(spec: Conformance) -> None:
    assert {k.schema for k in KNOWN} <= set(spec.schemas)
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "delta": {"content": "hi"}, "logprobs": None, "finish_reason": None}
        ],
    }
    assert check(spec, "/v1/chat/completions", [chunk], stream=True) == []
    wrong = {**chunk, "object": "chat.completion"}
    assert check(spec, "/v1/chat/completions", [wrong], stream=True)


def test_responses_events_are_checked_by_their_type(spec: Conformance) -> None:
    assert spec.events["response.output_text.delta"] != "ResponseStreamEvent"
    event = {"type": "response.output_text.delta", "sequence_number": 3, "item_id": "m",
             "output_index": 0, "content_index": 0, "delta": "hi", "logprobs": []}  # fmt: skip
    assert check(spec, "/v1/responses", [event], stream=True) == []
    assert check(spec, "/v1/responses", [{**event, "delta": 5}], stream=True)


async def test_a_running_gateways_answers_are_seen(
    gateway: RunningGateway,
    http: aiohttp.ClientSession,
    spec_check: Conformance,
) -> None:
    before = spec_check.checked
    body = {"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    async with http.post(f"{gateway.base_url}/chat/completions", json=body) as r:
        assert r.status == 200
    # The session's checker saw it (the answer, and the /readyz polls are not OpenAI's).
    assert spec_check.checked == before + 1
