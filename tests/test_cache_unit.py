"""Cache keys, cacheability, the LRU bounds and stream assembly, without servers."""

from __future__ import annotations

from gateway.cache import (
    LRUStore,
    ResponseCache,
    StreamAssembler,
    cache_key,
    cacheable,
    replay,
)
from gateway.schemas import ChatRequest
from gateway.settings import CacheSettings


def req(**kw: object) -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **kw}
    )


def key(r: ChatRequest, tenant: str | None = "t1", target: str = "gpt") -> str:
    return cache_key(r, target=target, endpoint="chat", tenant=tenant, prefix="p:")


def test_key_depends_on_what_changes_the_answer() -> None:
    base = key(req())
    assert key(req(stream=True)) == base  # delivery only
    assert key(req(model="cloud")) == base  # the resolved target counts, not the alias
    assert key(req(temperature=0.5)) != base
    assert key(req(max_tokens=5)) != base
    assert key(req(seed=1)) != base
    assert key(req(custom_field=1)) != base
    assert key(req(), tenant="t2") != base
    assert key(req(), tenant=None) != base
    assert key(req(), target="claude") != base


def test_cacheable_modes() -> None:
    assert not cacheable(req(), "deterministic")  # OpenAI's default temperature is 1
    assert cacheable(req(temperature=0), "deterministic")
    assert not cacheable(req(temperature=0.7), "deterministic")
    assert not cacheable(req(n=2), "deterministic")
    assert not cacheable(req(tools=[{"type": "function"}]), "deterministic")
    assert cacheable(req(temperature=0.7), "always")
    assert not cacheable(req(), "never")


async def test_lru_bounds_entries_bytes_and_expiry() -> None:
    now = [0.0]
    lru = LRUStore(max_entries=3, max_bytes=100, clock=lambda: now[0])
    for i in range(5):
        await lru.set(f"k{i}", b"x" * 10, ttl_s=10)
    assert len(lru) == 3 and await lru.get("k0") is None and await lru.get("k4") == b"x" * 10
    await lru.set("big", b"y" * 90, ttl_s=10)
    assert lru.bytes <= 100
    await lru.set("huge", b"z" * 101, ttl_s=10)
    assert await lru.get("huge") is None
    now[0] = 11
    assert await lru.get("big") is None


async def test_assembled_stream_replays_identically() -> None:
    asm = StreamAssembler()
    pieces = ["Hello", " there", ", friend"]
    asm.add(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
        }
    )
    for p in pieces:
        asm.add(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": p}}],
            }
        )
    asm.add(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
    )
    asm.add(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }
    )
    obj = asm.result()
    assert obj["choices"][0]["message"]["content"] == "".join(pieces)
    assert obj["usage"]["total_tokens"] == 7
    chunks = [c.obj async for c in replay(obj)]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "".join(pieces)
    assert chunks[-1]["usage"]["total_tokens"] == 7


async def test_answers_above_the_size_limit_are_not_stored() -> None:
    store = LRUStore(max_entries=10, max_bytes=10**6)
    cache = ResponseCache(store, CacheSettings(max_entry_bytes=200))
    cache.put("small", {"choices": [{"message": {"content": "ok"}}]})
    cache.put("big", {"choices": [{"message": {"content": "x" * 500}}]})
    await cache.drain()
    assert await cache.get("small") is not None
    assert await cache.get("big") is None
