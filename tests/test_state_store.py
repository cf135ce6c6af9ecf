"""The state store's scripts against a real redis-server: the bounds the replicas rely on.

Each test takes `state_store` (parametrisable over deployment shapes, as test_replicas.py's
`state_url`) with a key prefix of its own.
"""

from __future__ import annotations

import importlib.util
import secrets
from array import array
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.learning.recent import Issued
from gateway.learning.shared_feedback import PENDING, FeedbackRegistry
from gateway.learning.shared_labels import RedisLabelStore
from gateway.responses.in_process import Stored
from gateway.responses.stores import RedisResponses
from gateway.settings import ResponsesSettings, StateSettings
from gateway.state.fleet import ShadowCap
from gateway.state.state_store import StateStore, StateUnavailable

SHAPES = {"redis": "redis_server"}
if importlib.util.find_spec("tests.redis_servers") is not None:  # Cluster and Sentinel servers
    SHAPES |= {"cluster": "redis_cluster", "sentinel": "redis_sentinel"}


@pytest.fixture(params=sorted(SHAPES))
def state_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(SHAPES[request.param]).url)


@pytest.fixture
async def state_store(state_url: str) -> AsyncIterator[StateStore]:
    store = StateStore(StateSettings(redis_url=state_url, key_prefix=secrets.token_hex(4)))
    yield store
    await store.close()


def entry(n: int, pad: int = 0) -> Stored:
    return Stored({"id": f"r{n}", "pad": "x" * pad}, [], {f"item{n}": {"n": n}, "shared": {"n": n}})


async def test_responses_keep_each_tenants_bounds_and_lru(state_store: StateStore) -> None:
    r = RedisResponses(
        state_store, ResponsesSettings(store_max_per_tenant=2, store_max_bytes_per_tenant=2000)
    )
    for n in range(3):
        assert await r.put("a", f"r{n}", entry(n))
    await r.put("b", "r9", entry(9))  # another tenant pushes out nothing of a's
    assert await r.get("a", "r0") is None
    assert await r.get("a", "r1") is not None  # now the most recently used
    await r.put("a", "r3", entry(3))
    assert await r.get("a", "r2") is None and await r.get("a", "r1") is not None
    assert await r.get("b", "r1") is None  # a's id is unknown to b
    assert await r.get("b", "r9") is not None
    # The latest live holder of an item wins; another tenant's item is unknown.
    assert await r.items("a", ["shared", "item1", "item9"]) == {
        "shared": {"n": 3},
        "item1": {"n": 1},
    }
    assert not await r.put("a", "big", entry(4, pad=5000))  # alone over the tenant's bytes
    assert await r.get("a", "r3") is not None  # and it pushed nothing out
    await r.put("a", "r5", entry(5, pad=1200))
    await r.put("a", "r6", entry(6, pad=1200))  # over the bytes: r5 goes
    assert await r.get("a", "r5") is None and await r.get("a", "r6") is not None
    assert await r.delete("a", "r6") and not await r.delete("a", "r6")
    assert await r.items("a", ["item6"]) == {}


async def test_labels_keep_the_caps_and_stable_ids(state_store: StateStore) -> None:
    labels = RedisLabelStore(state_store, 4, per_key=2)
    for t in ["k1", "k2", "k1", "k1", None, "k2", "k3"]:
        await labels.add("feedback", label=1.0, tenant=t, route="local", prompt="hi")
    rows = await labels.rows()
    assert [r.id for r in rows] == [4, 5, 6, 7]  # k1's oldest went for its own cap, then age
    assert await labels.counts_by_key() == {"k1": 1, "": 1, "k2": 1, "k3": 1}
    assert labels.dropped == 3 and len(labels) == 4 and labels.since == 7
    assert rows[0].kind == "feedback" and rows[0].body["tenant"] == "k1"
    await labels.reset_since()
    await labels.add("shadow", label=0.0, tenant="k3", route="local", prompt="x")
    assert labels.since == 1


async def test_feedback_registry_claims_once(state_store: StateStore) -> None:
    reg = FeedbackRegistry(state_store, window=2, ttl_s=60)
    await reg.pending("t", "q1")
    assert await reg.get("t", "q1") == PENDING
    await reg.put("t", "q1", Issued({"len": 1.0}, array("I", [7]), "local", False, None, 0.0))
    got = await reg.get("t", "q1")
    assert isinstance(got, Issued) and list(got.terms) == [7]
    assert await reg.get("other", "q1") is None
    assert await reg.claim("t", "q1") and not await reg.claim("t", "q1")
    await reg.release("t", "q1")
    assert await reg.claim("t", "q1")
    for q in ("q2", "q3"):  # the tenant's window is 2 ids: q1 is forgotten
        await reg.put("t", q, Issued({}, array("I"), "cloud", False, None, 0.0))
    assert await reg.get("t", "q1") is None and await reg.get("t", "q3") is not None


async def test_the_shadow_cap_is_one_count_for_all(state_store: StateStore) -> None:
    one, two = ShadowCap(state_store, 3), ShadowCap(state_store, 3)
    taken = [await cap.take() for cap in (one, two, one, two, one)]
    assert taken == [True, True, True, False, False]


async def test_an_unreachable_state_redis_is_state_unavailable() -> None:
    store = StateStore(
        StateSettings(redis_url="redis://127.0.0.1:1/0", timeout_ms=200, key_prefix="x")
    )
    try:
        with pytest.raises(StateUnavailable) as info:
            await RedisResponses(store, ResponsesSettings()).get("a", "r1")
        assert info.value.status == 503 and info.value.code == "state_store_unavailable"
    finally:
        await store.close()


def test_wait_replicas_is_refused_for_a_cluster() -> None:
    from gateway.settings import Settings

    with pytest.raises(ValueError, match="wait_replicas"):
        Settings(state=StateSettings(redis_url="redis+cluster://127.0.0.1:7000", wait_replicas=1))


async def test_a_write_no_replica_holds_is_not_acknowledged(redis_server: Any) -> None:
    """state.wait_replicas 1 on a lone server: the write is done, yet the client is told 503
    (no replica has it), never 200 for what a failover could lose; 0 acknowledges it."""
    settings = StateSettings(
        redis_url=redis_server.url, key_prefix=secrets.token_hex(4), wait_replicas=1, timeout_ms=200
    )
    store = StateStore(settings)
    try:
        r = RedisResponses(store, ResponsesSettings())
        with pytest.raises(StateUnavailable, match="on 0 of the 1"):
            await r.put("a", "r1", entry(1))
        store.settings = settings.model_copy(update={"wait_replicas": 0})
        assert await r.put("a", "r2", entry(2))
    finally:
        await store.close()
