"""The dispatcher on its own, no sockets: the cloud and the local model are in-process
stand-ins (as httpx tests its client through a MockTransport), the cache an in-process LRU
whose look-ups are counted, the policy the shipped default. What it checks: the decision the
router made is the one answered under, the cache is looked up at most once a request and
from one place, and failover goes where the policy's offline order says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.backends.base import BackendUnavailable, Chunk, Completion, Endpoint
from gateway.backends.health import Breaker, State
from gateway.cache import CacheControl, LRUStore, ResponseCache
from gateway.dispatch import Dispatcher
from gateway.routing.complexity import ComplexityScorer
from gateway.routing.features import FeatureExtractor, Features
from gateway.routing.live_policy import PolicyStore
from gateway.routing.policy import Decision, Router
from gateway.schemas import AnyRequest, ChatRequest
from gateway.settings import CacheSettings

POLICY = Path(__file__).resolve().parents[2] / "policies" / "default.yaml"
CLOUD = "cloud-a"


def answer(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


class StandIn:
    """A backend that answers `text`, or raises `fail` before its first byte."""

    def __init__(self, name: str, kind: Any, text: str) -> None:
        self.name, self.kind, self.text = name, kind, text
        self.fail: BackendUnavailable | None = None
        self.calls = 0

    async def complete(self, req: AnyRequest, endpoint: Endpoint) -> Completion:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return Completion(answer(self.text, self.name))

    async def stream(self, req: AnyRequest, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        yield Chunk(obj={"choices": [{"index": 0, "delta": {"content": self.text}}]})

    async def close(self) -> None:
        pass

    async def probe(self, *, deep: bool = False) -> bool | None:
        return None


class LocalPool:
    """What the dispatcher reads of the local model pool."""

    model_name = "local-model"
    names = ["local-model"]
    queue_depth = 0

    def __init__(self) -> None:
        self.backend = StandIn("local-model", "local", "from the local model")

    def has_room(self) -> bool:
        return True

    def route(self, model: str | None) -> StandIn:
        return self.backend


class CountingStore(LRUStore):
    def __init__(self) -> None:
        super().__init__(max_entries=64, max_bytes=1 << 20)
        self.gets = 0

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        return await super().get(key)


class Box:
    def __init__(self) -> None:
        self.store = CountingStore()
        self.cache = ResponseCache(self.store, CacheSettings())
        self.cloud = StandIn(CLOUD, "cloud", "from the cloud")
        self.local = LocalPool()
        self.breaker = Breaker(CLOUD, failures=1, retry_after_s=30)
        self.decisions: list[Decision] = []
        self.dispatcher = Dispatcher(
            local=self.local,  # type: ignore[arg-type]
            clouds={CLOUD: self.cloud},
            breakers={CLOUD: self.breaker},
            extractor=FeatureExtractor(scorer=ComplexityScorer(), local_n_ctx=8192),
            router=Router(cloud_names=[CLOUD], local_names=self.local.names, windows={}),
            policies=PolicyStore(POLICY, cloud_names=[CLOUD], local_models=self.local.names),
            cache=self.cache,
        )

    def heard(self, f: Features, d: Decision) -> None:
        self.decisions.append(d)

    async def ask(self, model: str = CLOUD, **kw: Any) -> Any:
        req = ChatRequest.model_validate(
            {
                "model": model,
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "temperature": 0,
                **kw,
            }
        )
        outcome = await self.dispatcher.handle(
            req, "chat", None, CacheControl(), on_decision=self.heard
        )
        assert outcome.decision is self.decisions[-1]  # the router's decision, not a copy
        return outcome


@pytest.fixture
def box() -> Box:
    return Box()


async def test_a_cloud_answer_is_kept_then_served_with_one_look_up_each(box: Box) -> None:
    first = await box.ask()
    assert (first.route, first.cache, box.store.gets, box.cloud.calls) == ("cloud", "miss", 1, 1)
    await box.cache.drain()
    again = await box.ask()
    assert (again.route, again.cache, box.store.gets, box.cloud.calls) == ("cache", "hit", 2, 1)
    assert not again.degraded and again.reason.endswith("; cache hit")


async def test_a_miss_ahead_of_a_failing_cloud_is_not_looked_up_again(box: Box) -> None:
    box.cloud.fail = BackendUnavailable("down", cause="connect", unreachable=True)
    out = await box.ask()
    # Missed once ahead of the cloud; the offline order's `cache` does not look again.
    assert (out.route, out.degraded, box.store.gets) == ("local", True, 1)
    assert out.failovers and out.failovers[0][0] == CLOUD
    assert "no cached answer" in out.reason and box.breaker.state == State.OPEN


async def test_an_open_breaker_spends_no_look_up_ahead_and_the_fallback_looks_once(
    box: Box,
) -> None:
    await box.ask()
    await box.cache.drain()
    box.breaker.failure("connect", unreachable=True)
    out = await box.ask()
    assert (out.route, out.degraded, out.cache, box.store.gets) == ("cache", True, "hit", 2)
    assert box.cloud.calls == 1  # the open breaker: not called again


async def test_no_cache_skips_the_look_up_and_the_fallback(box: Box) -> None:
    await box.ask()
    await box.cache.drain()
    req = ChatRequest.model_validate(
        {
            "model": CLOUD,
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0,
        }
    )
    box.cloud.fail = BackendUnavailable("down", cause="connect", unreachable=True)
    out = await box.dispatcher.handle(req, "chat", None, CacheControl(no_cache=True))
    assert (out.route, box.store.gets) == ("local", 1)


async def test_a_local_bound_request_never_looks_up(box: Box) -> None:
    out = await box.ask(model="auto")
    assert (out.route, out.cache, box.store.gets, box.cloud.calls) == ("local", "skip", 0, 0)


async def test_streams_look_up_and_fail_over_the_same_way(box: Box) -> None:
    box.cloud.fail = BackendUnavailable("down", cause="connect", unreachable=True)
    out = await box.ask(stream=True)
    assert out.route == "local" and box.store.gets == 1
    assert [c.obj["choices"][0]["delta"]["content"] async for c in out.chunks] == [
        "from the local model"
    ]
