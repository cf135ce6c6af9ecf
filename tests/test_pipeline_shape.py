"""Chat, Responses and embeddings are adapters over one pipeline: the same opening
(http/opening.py), the same attempt loop (pipeline/attempt.py) and, where streamed, the same
stream writer (http/stream.py). Checked by spying on each shared piece and sending one
request per endpoint through a real gateway (the fake cloud behind it)."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from gateway.http import stream
from gateway.http.opening import Opening
from gateway.pipeline.attempt import CHAT, EMBEDDINGS, Attempt
from gateway.services import SERVICES
from tests.conftest import RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

HELLO = [{"role": "user", "content": "Say hello."}]


def settings(cloud: FakeCloud) -> dict[str, Any]:
    s = cloud_settings(cloud)
    s["cloud"]["embedding_models"] = [
        cloud.model_entry(name="embed-fake", model="openai/text-embedding-3-small")
    ]
    return s


async def test_every_endpoint_opens_and_attempts_through_the_same_code(
    gateway_factory: Any, fake_cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[str] = []
    attempts: list[Any] = []
    encoders: list[str] = []
    admit, run, relay = Opening.admit, Attempt.run, stream._relay

    async def spy_admit(
        cls: type[Opening], request: web.Request, services: Any, req: Any = None
    ) -> Opening:
        opened.append(request.path)
        return await admit(request, services, req)

    async def spy_run(self: Attempt, one: Any) -> Any:
        attempts.append(self.wording)
        return await run(self, one)

    async def spy_relay(resp: Any, chunks: Any, record: Any, encoder: Any) -> None:
        encoders.append(type(encoder).__name__)
        await relay(resp, chunks, record, encoder)

    monkeypatch.setattr(Opening, "admit", classmethod(spy_admit))
    monkeypatch.setattr(Attempt, "run", spy_run)
    monkeypatch.setattr(stream, "_relay", spy_relay)
    gw: RunningGateway = await gateway_factory(**settings(fake_cloud))
    c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)

    await c.chat.completions.create(model="cloud", messages=HELLO, max_tokens=4)
    chunks = await c.chat.completions.create(
        model="cloud", messages=HELLO, max_tokens=4, stream=True
    )
    _ = [ch async for ch in chunks]
    events = await c.responses.create(model="cloud", input="Say hello.", stream=True)
    _ = [e async for e in events]
    await c.embeddings.create(model="embed-fake", input="a sentence to embed")

    assert opened == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/embeddings",
    ]
    assert attempts == [CHAT, CHAT, CHAT, EMBEDDINGS]
    assert encoders == ["ChatFrames", "_Events"]


async def test_embedding_breakers_are_chats_breakers(
    gateway_factory: Any, fake_cloud: FakeCloud
) -> None:
    """Built by the same factory: probed while open, their state in /metrics like chat's."""
    gw: RunningGateway = await gateway_factory(**settings(fake_cloud))
    services = gw.app[SERVICES]
    assert services.embeddings is not None
    chat, embed = (
        services.dispatcher.breakers["gpt-fake"],
        services.embeddings.breakers["embed-fake"],
    )
    assert type(chat) is type(embed)
    assert embed.probe_interval_s == chat.probe_interval_s is not None
    async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/metrics") as r:
        text = await r.text()
    assert 'edge_gateway_breaker_state{target="gpt-fake"} 0.0' in text
    assert 'edge_gateway_breaker_state{target="embed-fake"} 0.0' in text


async def test_the_decision_the_router_returns_is_the_one_every_step_runs(
    gateway_factory: Any, fake_cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """The decision is final when `Router.decide` returns it: the attempt loop runs that very
    object, and the answer (an escalated cascade's cloud answer included) reports it."""
    from gateway.dispatch import Dispatcher
    from gateway.routing.policy import Router
    from tests.test_cascade import ALWAYS, policy_file

    decided: list[Any] = []
    ran: list[Any] = []
    answered: list[Any] = []
    escalated: list[bool] = []
    decide, init, handle = Router.decide, Attempt.__init__, Dispatcher.handle

    def spy_decide(self: Router, *a: Any, **kw: Any) -> Any:
        d = decide(self, *a, **kw)
        decided.append(d)
        return d

    def spy_init(self: Attempt, decision: Any, *a: Any, **kw: Any) -> None:
        ran.append(decision)
        init(self, decision, *a, **kw)

    async def spy_handle(self: Dispatcher, *a: Any, **kw: Any) -> Any:
        outcome = await handle(self, *a, **kw)
        answered.append(outcome.decision)
        escalated.append(outcome.cascade is not None and outcome.cascade.escalated)
        return outcome

    monkeypatch.setattr(Router, "decide", spy_decide)
    monkeypatch.setattr(Attempt, "__init__", spy_init)
    monkeypatch.setattr(Dispatcher, "handle", spy_handle)
    for policy in (None, policy_file(tmp_path, ALWAYS)):  # the default, a cascade
        extra = {} if policy is None else {"policy": {"file": str(policy)}}
        gw: RunningGateway = await gateway_factory(**settings(fake_cloud), **extra)
        c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0)
        for model in ("auto", "cloud", "local"):
            await c.chat.completions.create(model=model, messages=HELLO, max_tokens=4)
    assert len(decided) == len(ran) == len(answered) == 6
    for d, r, a in zip(decided, ran, answered, strict=True):
        assert d is r is a
    assert any(escalated), escalated  # an escalated cascade was among them
