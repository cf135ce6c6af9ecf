"""A grammar's cost is priced before llguidance builds it (issue 33).

An integer `multipleOf` of 999,983 (a 100-byte schema) took 13-18 s and 350 MB to compile,
and three of them stayed in the grammar cache; an `anyOf` of 700 objects compiled, then
failed at the first tokens with a 500. Each is now a 400 `unsupported_schema` naming the
keyword, at once, while another client's small request is answered, and memory does not
stay up.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import psutil
import pytest

from tests.conftest import RunningGateway


def chat(schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "model": "local",
        "messages": [{"role": "user", "content": "Give me a number."}],
        "max_tokens": 4,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
        **extra,
    }


def multiple_of(m: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"n": {"type": "integer", "multipleOf": m}},
        "required": ["n"],
    }


def any_of(n: int) -> dict[str, Any]:
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {"a": {"type": "string"}, f"b{i}": {"type": "number"}},
                "additionalProperties": False,
            }
            for i in range(n)
        ]
    }


async def test_costly_grammars_are_refused_by_name_while_others_are_served(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    rss = psutil.Process().memory_info().rss
    url = f"{gateway.base_url}/chat/completions"

    async def send(body: dict[str, Any], key: str) -> tuple[int, dict[str, Any], float]:
        t0 = time.monotonic()
        async with http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
            return r.status, await r.json(), time.monotonic() - t0

    costly = [
        send(chat(multiple_of(999_983)), "sk-a"),
        send(chat(multiple_of(3_999_971)), "sk-a"),
        # Two within the bound that add up past it.
        send(
            chat(
                {"type": "object", "properties": {"a": multiple_of(6_000), "b": multiple_of(6_000)}}
            ),
            "sk-a",
        ),
        send(chat(any_of(700)), "sk-a"),
    ]
    small = send(chat(multiple_of(7)), "sk-b")
    *refused, served = await asyncio.gather(*costly, small)
    for status, body, seconds in refused[:3]:
        assert status == 400, body
        assert body["error"]["code"] == "unsupported_schema", body
        assert body["error"]["param"].endswith("multipleOf"), body
        assert seconds < 2.0, seconds
    status, body, _ = refused[3]
    assert status == 400 and body["error"]["code"] == "unsupported_schema", body
    assert served[0] == 200, served
    # Nothing was built for the refused ones: memory did not grow by a grammar's worth.
    assert psutil.Process().memory_info().rss - rss < 200 * 2**20


async def test_a_divisor_within_the_budget_is_enforced(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        f"{gateway.base_url}/chat/completions",
        json=chat(multiple_of(9_973), max_tokens=24, temperature=0),
    ) as r:
        body = await r.json()
    assert r.status == 200, body


def test_the_grammar_cache_is_bounded_in_bytes_and_keeps_no_abandoned_build() -> None:
    import threading

    from gateway.local.constraint import Grammars
    from gateway.local.model import Model, embedded_model_path
    from gateway.local.structured import schema_grammar

    model = Model(embedded_model_path())
    try:
        grammars = Grammars(model, max_bytes=4 * 2**20)

        def grammar(i: int, width: int = 8) -> Any:
            props = {f"f{i}_{j}": {"type": "string", "maxLength": 40} for j in range(width)}
            return schema_grammar({"type": "object", "properties": props}, "response_format")

        for i in range(200):
            grammars.compile(grammar(i))
            assert grammars.bytes <= grammars.max_bytes
        # Bounded by what they cost, not by a count: 200 distinct grammars, a few dozen kept.
        assert 0 < len(grammars) < 200
        # The most recent is kept; a hit costs nothing more.
        kept, held = len(grammars), grammars.bytes
        grammars.compile(grammar(199))
        assert (len(grammars), grammars.bytes) == (kept, held)

        # A build whose request left meanwhile serves nobody later: it is not kept.
        gone = threading.Event()
        gone.set()
        compiled = grammars.compile(grammar(1000), gone)
        assert compiled.matcher() is not None
        assert (len(grammars), grammars.bytes) == (kept, held)

        # One grammar that alone costs more than the whole cache is used, not kept.
        tiny = Grammars(model, max_bytes=1024)
        tiny.compile(grammar(1))
        assert (len(tiny), tiny.bytes) == (0, 0)
    finally:
        model.close()


@pytest.mark.parametrize("cache_bytes", [0, 64 * 2**20])
async def test_local_grammar_cache_bytes_is_the_bound_served(
    gateway_factory: Any, http: aiohttp.ClientSession, cache_bytes: int
) -> None:
    from gateway.services import LOCAL

    gw: RunningGateway = await gateway_factory(local={"grammar_cache_bytes": cache_bytes})
    async with http.post(f"{gw.base_url}/chat/completions", json=chat(multiple_of(7))) as r:
        assert r.status == 200, await r.text()
    loaded = gw.app[LOCAL].default.current
    assert loaded is not None
    grammars = loaded.backend._grammars
    assert grammars is not None and grammars.max_bytes == cache_bytes
    assert len(grammars) == (0 if cache_bytes == 0 else 1)
