"""Replicas behind a round-robin balancer answer as one gateway: real `python -m gateway serve`
processes sharing one real state Redis (issue 24).

Every test takes `state_url`, the state Redis the replicas share; each test gets its own key
prefix, so one Redis (or one Cluster, which has no numbered databases) serves them all. More
deployment shapes (Cluster, Sentinel) are more params of `state_url`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from itertools import cycle
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.durable import Record
from gateway.learning.shared_labels import RedisLabelStore
from gateway.settings import StateSettings
from gateway.state.fleet import TrainerLease as FleetState
from gateway.state.state_store import StateStore
from tests.conftest import ROOT, GatewayProcess, RedisServer, until
from tests.fakes.cloud import FakeCloud

pytestmark = pytest.mark.slow

POLICY = """\
version: 1
default: local
{scorer}
rules: []
"""


# The real Cluster and Sentinel servers come with the Redis shapes' fixtures
# (tests/redis_servers.py); where those are in the tree, every test runs on each shape.
SHAPES = {"redis": "redis_server"}
if importlib.util.find_spec("tests.redis_servers") is not None:
    SHAPES |= {"cluster": "redis_cluster", "sentinel": "redis_sentinel"}


@pytest.fixture(params=sorted(SHAPES))
def state_url(request: pytest.FixtureRequest) -> str:
    """The URL of the state Redis the replicas share."""
    return str(request.getfixturevalue(SHAPES[request.param]).url)


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}"


@pytest.fixture
def cloud() -> Iterator[FakeCloud]:
    c = FakeCloud().start_in_thread()
    yield c
    c.stop_thread()


Fleet = Callable[..., list[GatewayProcess]]


@pytest.fixture
def fleet(state_url: str, prefix: str, cloud: FakeCloud, tmp_path: Path) -> Iterator[Fleet]:
    """Start `n` replicas on the same state Redis (extra env per replica by index)."""
    started: list[GatewayProcess] = []

    def start(n: int = 2, **env: str) -> list[GatewayProcess]:
        procs = []
        for i in range(n):
            policy = tmp_path / f"policy-{i}.yaml"
            if not policy.exists():
                policy.write_text(POLICY.format(scorer=""), encoding="utf-8")
            full = {
                "FAKE_CLOUD_KEY": "sk-fake-cloud-secret-123",
                "GATEWAY_CLOUD__MODELS": json.dumps([cloud.model_entry()]),
                "GATEWAY_CLOUD__PROBE_INTERVAL_S": "0.5",
                "GATEWAY_STATE__REDIS_URL": state_url,
                "GATEWAY_STATE__KEY_PREFIX": prefix,
                "GATEWAY_STATE__REPLICAS": str(n),
                "GATEWAY_POLICY__FILE": str(policy),
                "GATEWAY_LEARNING__STORE": str(tmp_path / f"labels-{i}.sqlite3"),
                "GATEWAY_SERVER__LOG_LEVEL": "INFO",
                "GATEWAY_LOCAL__PARALLEL": "1",  # small: several replicas share a small box
                **env,
            }
            procs.append(GatewayProcess(env=full))
        started.extend(procs)
        for p in procs:
            p.wait_ready(timeout=180)
        return procs

    yield start
    for p in started:
        log = p.stop()
        assert "sk-fake-cloud-secret-123" not in log


@contextlib.asynccontextmanager
async def shared(url: str, prefix: str) -> AsyncIterator[StateStore]:
    """The replicas' state store, as they open it, to look at what they wrote."""
    store = StateStore(StateSettings(redis_url=url, key_prefix=prefix))
    try:
        yield store
    finally:
        await store.close()


async def label_rows(url: str, prefix: str) -> list[Record]:
    async with shared(url, prefix) as store:
        return await RedisLabelStore(store, 10**6).rows()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def post(
    s: aiohttp.ClientSession, gp: GatewayProcess, path: str, body: dict[str, Any], key: str
) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
    async with s.post(f"{gp.url}{path}", json=body, headers=auth(key)) as r:
        return r.status, await r.json(), r.headers


async def get(
    s: aiohttp.ClientSession, gp: GatewayProcess, path: str, key: str, method: str = "GET"
) -> tuple[int, dict[str, Any]]:
    async with s.request(method, f"{gp.url}{path}", headers=auth(key)) as r:
        return r.status, await r.json()


# -- stored Responses ---------------------------------------------------------------------


async def test_a_responses_conversation_continues_reads_and_deletes_on_every_replica(
    fleet: Fleet, cloud: FakeCloud
) -> None:
    a, b, c = fleet(3)
    rr = cycle([a, b, c])
    key, other = "sk-tenant-one", "sk-tenant-two"
    async with aiohttp.ClientSession() as s:
        status, first, _ = await post(
            s, next(rr), "/v1/responses", {"model": "gpt-fake", "input": "Hello there"}, key
        )
        assert status == 200, first
        rid = first["id"]
        # A follow-up on the next replica continues the conversation it never saw.
        status, second, _ = await post(
            s,
            next(rr),
            "/v1/responses",
            {"model": "gpt-fake", "input": "And then?", "previous_response_id": rid},
            key,
        )
        assert status == 200, second
        sent = cloud.requests[-1]["messages"]
        assert [m["role"] for m in sent] == ["user", "assistant", "user"]
        assert sent[0]["content"] == "Hello there"
        # An item_reference to the first answer's output item, resolved on the third replica.
        item = first["output"][0]["id"]
        status, third, _ = await post(
            s,
            next(rr),
            "/v1/responses",
            {
                "model": "gpt-fake",
                "input": [
                    {"type": "item_reference", "id": item},
                    {"role": "user", "content": "Once more"},
                ],
            },
            key,
        )
        assert status == 200, third
        assert cloud.requests[-1]["messages"][0]["role"] == "assistant"
        # Every replica reads it; another key's GET (or DELETE) is a 404 everywhere.
        for gp in (a, b, c):
            status, got = await get(s, gp, f"/v1/responses/{rid}", key)
            assert status == 200 and got["id"] == rid
            status, err = await get(s, gp, f"/v1/responses/{rid}", other)
            assert status == 404, err
            status, err = await get(s, gp, f"/v1/responses/{rid}", other, "DELETE")
            assert status == 404
        # Deleted on one replica, gone on all.
        status, gone = await get(s, b, f"/v1/responses/{rid}", key, "DELETE")
        assert status == 200 and gone["deleted"] is True
        for gp in (a, b, c):
            status, err = await get(s, gp, f"/v1/responses/{rid}", key)
            assert status == 404
        status, err, _ = await post(
            s,
            a,
            "/v1/responses",
            {"model": "gpt-fake", "input": "x", "previous_response_id": rid},
            key,
        )
        assert status == 404 and err["error"]["code"] == "previous_response_not_found"
        # The second response is untouched by the delete.
        status, got = await get(s, c, f"/v1/responses/{second['id']}", key)
        assert status == 200


async def test_per_tenant_bounds_hold_for_the_fleet(fleet: Fleet, state_url: str) -> None:
    """Concurrent stores from two replicas: the tenant keeps its newest `max_per_tenant`.
    With client keys: on a box without them all callers share one tenant's bounds."""
    a, b = fleet(
        2,
        GATEWAY_RESPONSES__STORE_MAX_PER_TENANT="3",
        GATEWAY_SERVER__API_KEYS='["sk-bounded", "sk-other"]',
    )
    key = "sk-bounded"
    async with aiohttp.ClientSession() as s:
        results = await asyncio.gather(
            *(
                post(s, gp, "/v1/responses", {"model": "gpt-fake", "input": f"n{i}"}, key)
                for i, gp in zip(range(10), cycle([a, b]), strict=False)
            )
        )
        ids = [body["id"] for status, body, _ in results if status == 200]
        assert len(ids) == 10
        found = [rid for rid in ids if (await get(s, a, f"/v1/responses/{rid}", key))[0] == 200]
        assert len(found) == 3
        # Another tenant's store pushed out nothing of this one.
        await post(s, b, "/v1/responses", {"model": "gpt-fake", "input": "other"}, "sk-other")
        still = [rid for rid in found if (await get(s, b, f"/v1/responses/{rid}", key))[0] == 200]
        assert still == found


# -- feedback -----------------------------------------------------------------------------

LEARNING = {"GATEWAY_LEARNING__ENABLED": "true"}


async def test_feedback_is_taken_once_across_replicas(
    fleet: Fleet, state_url: str, prefix: str
) -> None:
    a, b = fleet(2, **LEARNING)
    key = "sk-feedback"
    chat = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as s:
        status, _, headers = await post(s, a, "/v1/chat/completions", chat, key)
        assert status == 200
        rid = headers["x-request-id"]
        # Answered by a, scored on b at once; then a second score anywhere is a 409.
        status, body, _ = await post(s, b, "/v1/feedback", {"request_id": rid, "good": True}, key)
        assert status == 200, body
        for gp in (a, b):
            status, err, _ = await post(
                s, gp, "/v1/feedback", {"request_id": rid, "good": False}, key
            )
            assert status == 409 and err["error"]["code"] == "already_labelled", err
        # Another key cannot score it.
        status, err, _ = await post(
            s, a, "/v1/feedback", {"request_id": rid, "good": True}, "sk-someone-else"
        )
        assert status == 404 and err["error"]["code"] == "request_not_found"
        # Racing scores of one request on both replicas: exactly one is taken.
        for _ in range(5):
            status, _, headers = await post(s, b, "/v1/chat/completions", chat, key)
            rid = headers["x-request-id"]
            got = await asyncio.gather(
                *(
                    post(s, gp, "/v1/feedback", {"request_id": rid, "score": 0.5}, key)
                    for gp in (a, b, a, b)
                )
            )
            assert sorted(status for status, _, _ in got) == [200, 409, 409, 409]
    # Labels written by both replicas are in the one store.
    rows = await label_rows(state_url, prefix)
    assert len({r.body["request_id"] for r in rows}) == len(rows) == 6


# -- the shadow cap -----------------------------------------------------------------------


async def test_the_shadow_cap_holds_for_the_fleet(
    fleet: Fleet, cloud: FakeCloud, state_url: str, prefix: str
) -> None:
    cloud.mode = "judge"
    a, b = fleet(
        2,
        **LEARNING,
        GATEWAY_LEARNING__SHADOW_RATE="1.0",
        GATEWAY_LEARNING__SHADOW_MAX_PER_HOUR="3",
        GATEWAY_LEARNING__SHADOW_CONCURRENCY="8",
    )
    rr = cycle([a, b])
    async with aiohttp.ClientSession() as s:
        for i in range(8):
            body = {
                "model": "auto",
                "messages": [{"role": "user", "content": f"Say hi number {i}."}],
                "max_tokens": 4,
                "temperature": 0,
            }
            status, _, headers = await post(s, next(rr), "/v1/chat/completions", body, "sk-s")
            assert status == 200 and headers["x-gateway-route"] == "local"
    await until(lambda: cloud.judge_calls >= 3)
    await asyncio.sleep(1.0)  # anything over the cap would have been judged by now
    assert cloud.judge_calls == 3  # the fleet's hourly bill, not 3 per replica
    async with shared(state_url, prefix) as store:
        assert await store.client.zcard(store.fleet_key("shadow")) == 3
    async with asyncio.timeout(30):  # each judgement's label lands after its judge call
        while True:
            if len(await label_rows(state_url, prefix)) == 3:
                break
            await asyncio.sleep(0.1)


# -- one trainer, weights by version --------------------------------------------------------


def weights_doc(seed: int) -> bytes:
    """A valid weights file, as train-router writes it (different per seed)."""
    code = (
        "import sys, json\n"
        "from gateway.routing.training import Example, train, dumps\n"
        "from pathlib import Path\n"
        f"seed = {seed}\n"
        "ex = [Example(f'tax question {i} {seed}', 1.0, 1.0) for i in range(8)]\n"
        "ex += [Example(f'hello friend {i}', 0.0, 0.0) for i in range(8)]\n"
        "sys.stdout.buffer.write(dumps(train(ex, seed=seed, hashed=True), Path('w.json')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=120, check=True
    )
    return out.stdout


async def test_weights_published_once_are_loaded_by_every_replica(
    fleet: Fleet, state_url: str, prefix: str, tmp_path: Path
) -> None:
    first, second = weights_doc(1), weights_doc(2)
    assert first != second
    for i in range(2):
        (tmp_path / f"w-{i}.json").write_bytes(first)
        (tmp_path / f"policy-{i}.yaml").write_text(
            POLICY.format(scorer=f"scorer: {{weights: {tmp_path / f'w-{i}.json'}}}"),
            encoding="utf-8",
        )
    a, b = fleet(2, **LEARNING)
    # What the lease holder does after its canary accepted new weights.
    async with shared(state_url, prefix) as store:
        assert await FleetState(store).publish(second) == 1
    await until(lambda: all((tmp_path / f"w-{i}.json").read_bytes() == second for i in range(2)))
    async with aiohttp.ClientSession() as s:
        for gp in (a, b):
            async with s.get(f"{gp.url}/readyz") as resp:
                assert resp.status == 200
    # Each says so in its log (written just after the file it reads).
    await until(
        lambda: all("router weights loaded from the fleet" in gp.output() for gp in (a, b)),
        "both replicas to log the fleet's weights",
    )


async def test_only_one_replica_trains_at_a_time(state_url: str, prefix: str) -> None:
    """Two trainers on one state Redis: the lease admits one; it is free again after."""
    conf = StateSettings(redis_url=state_url, key_prefix=prefix, lease_ttl_s=0.6)
    one, two = StateStore(conf), StateStore(conf)
    try:
        f1, f2 = FleetState(one), FleetState(two)
        async with f1.lease() as mine:
            assert mine
            await asyncio.sleep(1.0)  # past the ttl: renewal keeps it
            async with f2.lease() as theirs:
                assert not theirs
        async with f2.lease() as theirs:
            assert theirs  # released on finish
        assert await f1.publish(b"w1") == 1 and await f2.publish(b"w2") == 2
        assert await f1.version() == 2 and await f1.weights(2) == b"w2"
    finally:
        await one.close()
        await two.close()


# -- failover --------------------------------------------------------------------------------


@pytest.mark.skipif("sentinel" not in SHAPES, reason="needs tests/redis_servers.py's Sentinel")
async def test_nothing_acknowledged_is_lost_across_a_sentinel_failover(
    own_redis_sentinel: Any, prefix: str, cloud: FakeCloud, tmp_path: Path
) -> None:
    """Responses stored and labels taken before the master fails over are all there after,
    on every replica; the conversation continues (a 503 while the replicas reconnect is
    allowed: it is an answer that says so, never a silent loss)."""
    group = own_redis_sentinel
    procs = []
    for i in range(2):
        policy = tmp_path / f"policy-{i}.yaml"
        policy.write_text(POLICY.format(scorer=""), encoding="utf-8")
        procs.append(
            GatewayProcess(
                env={
                    "FAKE_CLOUD_KEY": "sk-fake-cloud-secret-123",
                    "GATEWAY_CLOUD__MODELS": json.dumps([cloud.model_entry()]),
                    "GATEWAY_STATE__REDIS_URL": group.url,
                    "GATEWAY_STATE__KEY_PREFIX": prefix,
                    "GATEWAY_STATE__REPLICAS": "2",
                    # Acknowledged only once the replica has it (Redis WAIT): the promise.
                    "GATEWAY_STATE__WAIT_REPLICAS": "1",
                    "GATEWAY_POLICY__FILE": str(policy),
                    "GATEWAY_LEARNING__STORE": str(tmp_path / f"labels-{i}.sqlite3"),
                    "GATEWAY_LOCAL__PARALLEL": "1",
                    **LEARNING,
                }
            )
        )
    try:
        for p in procs:
            p.wait_ready(timeout=180)
        rr = cycle(procs)
        key = "sk-failover"
        chat = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}]}
        stored, labelled = [], []
        async with aiohttp.ClientSession() as s:
            for i in range(4):
                body = {"model": "gpt-fake", "input": f"turn {i}"}
                status, resp, _ = await post(s, next(rr), "/v1/responses", body, key)
                assert status == 200
                stored.append(resp["id"])
                status, _, headers = await post(s, next(rr), "/v1/chat/completions", chat, key)
                rid = headers["x-request-id"]
                fb = {"request_id": rid, "good": True}
                status, _, _ = await post(s, next(rr), "/v1/feedback", fb, key)
                assert status == 200
                labelled.append(rid)
            await asyncio.to_thread(group.failover)

            async def settled(gp: GatewayProcess, rid: str) -> int:
                async with asyncio.timeout(60):
                    while True:
                        status, _ = await get(s, gp, f"/v1/responses/{rid}", key)
                        if status != 503:
                            return status
                        await asyncio.sleep(0.2)

            for gp in procs:
                for rid in stored:
                    assert await settled(gp, rid) == 200
            body = {"model": "gpt-fake", "input": "after", "previous_response_id": stored[-1]}
            async with asyncio.timeout(60):
                while True:
                    status, resp, _ = await post(s, next(rr), "/v1/responses", body, key)
                    if status != 503:
                        break
                    await asyncio.sleep(0.2)
            assert status == 200, resp
        rows = await label_rows(group.url, prefix)
        assert sorted(r.body["request_id"] for r in rows) == sorted(labelled)
    finally:
        for p in procs:
            p.stop()


# -- outage -------------------------------------------------------------------------------


async def test_a_state_redis_outage_is_a_clear_503(
    own_redis: RedisServer, prefix: str, cloud: FakeCloud, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(scorer=""), encoding="utf-8")
    gp = GatewayProcess(
        env={
            "FAKE_CLOUD_KEY": "sk-fake-cloud-secret-123",
            "GATEWAY_CLOUD__MODELS": json.dumps([cloud.model_entry()]),
            "GATEWAY_STATE__REDIS_URL": own_redis.url,
            "GATEWAY_STATE__KEY_PREFIX": prefix,
            "GATEWAY_STATE__TIMEOUT_MS": "300",
            "GATEWAY_POLICY__FILE": str(policy),
            **LEARNING,
        }
    )
    try:
        gp.wait_ready()
        key = "sk-outage"
        async with aiohttp.ClientSession() as s:
            status, stored, _ = await post(
                s, gp, "/v1/responses", {"model": "gpt-fake", "input": "keep me"}, key
            )
            assert status == 200
            own_redis.kill()
            checks = [
                await post(
                    s,
                    gp,
                    "/v1/responses",
                    {"model": "gpt-fake", "input": "x", "previous_response_id": stored["id"]},
                    key,
                ),
                await post(s, gp, "/v1/responses", {"model": "gpt-fake", "input": "new"}, key),
            ]
            for status, err, _ in checks:
                assert status == 503, err
                assert err["error"]["code"] == "state_store_unavailable"
                assert set(err["error"]) == {"message", "type", "param", "code"}
            status, err = await get(s, gp, f"/v1/responses/{stored['id']}", key)
            assert status == 503 and err["error"]["code"] == "state_store_unavailable"
            status, err, _ = await post(
                s, gp, "/v1/feedback", {"request_id": "whatever", "good": True}, key
            )
            assert status == 503 and err["error"]["code"] == "state_store_unavailable"
            # What needs no shared state still answers.
            chat = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}]}
            status, _, _ = await post(s, gp, "/v1/chat/completions", chat, key)
            assert status == 200
    finally:
        log = gp.stop()
    assert "state redis unavailable" in log


# -- start-up -------------------------------------------------------------------------------


def test_replicas_without_a_state_redis_refuse_to_start() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "0"],
        cwd=ROOT,
        env={**__import__("os").environ, "GATEWAY_STATE__REPLICAS": "2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "state.redis_url" in out.stdout + out.stderr
