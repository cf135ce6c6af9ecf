"""The semantic cache's vector index, in process and shared through a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from gateway.redis_client import connect
from gateway.semantic import index as index_module
from gateway.semantic.index import (
    Candidate,
    IndexUnavailable,
    InProcessIndex,
    RedisIndex,
    SemanticIndex,
)
from tests.conftest import RedisServer

WIDTH = 384
RNG = np.random.default_rng(7)


def unit(d: int = WIDTH) -> np.ndarray:
    v = RNG.standard_normal(d).astype(np.float32)
    return v / np.linalg.norm(v)


def near(v: np.ndarray, eps: float) -> np.ndarray:
    """A unit vector about `eps` away from `v` (smaller eps, higher similarity)."""
    w = v + eps * unit(v.size)
    return w / np.linalg.norm(w)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["exact", "sign-scan"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on small partitions (float32, one product) and large ones (sign bits first)."""
    if request.param == "sign-scan":
        monkeypatch.setattr(index_module, "EXACT_ROWS", 0)
    return str(request.param)


SHAPES = {"redis": "redis_server", "cluster": "redis_cluster", "sentinel": "redis_sentinel"}
Factory = Callable[..., RedisIndex]


@pytest.fixture
async def make_redis(redis_server: RedisServer) -> AsyncIterator[Factory]:
    """RedisIndex replicas on the session's redis-server (or `url`), a key prefix per test."""
    prefix = f"t{secrets.token_hex(4)}:"
    made: list[RedisIndex] = []

    def make(url: str = redis_server.url, **kw: Any) -> RedisIndex:
        opts: dict[str, Any] = {
            "prefix": prefix,
            "max_entries": 100,
            "max_partitions": 10,
            "ttl_s": 60,
            # Generous: a cluster client's first command discovers the slots, which takes
            # longer than the production bound while the rest of the suite loads the box.
            # The bound itself is tested on its own with a value of its own.
            "timeout_s": 5.0,
        }
        opts.update(kw)
        made.append(RedisIndex(connect(url, timeout_s=opts["timeout_s"]), **opts))
        return made[-1]

    yield make
    for idx in made:
        await idx.close()


async def check_basics(idx: SemanticIndex) -> None:
    a, b, c = unit(), unit(), unit()
    for i, v in enumerate((a, b, c)):
        await idx.add("p", v, f"q{i}", f"k{i}")
    got = await idx.search("p", near(a, 0.3), k=3)
    assert got[0].answer_key == "k0" and len(got) == 3
    assert got[0].similarity > 0.9 and got[0].similarity >= got[1].similarity >= got[2].similarity
    assert got[0].question == "q0"
    assert [x.answer_key for x in await idx.search("p", near(b, 0.1), k=1)] == ["k1"]
    assert await idx.search("p", a, k=0) == []
    assert await idx.search("other", a) == []  # partitions are isolated
    assert await idx.search("P", a) == []
    await idx.add("p", c, "q0 again", "k0")  # a re-add replaces the entry, no duplicate
    got = await idx.search("p", c, k=5)
    assert [x.answer_key for x in got].count("k0") == 1 and got[0].answer_key in {"k0", "k2"}
    assert next(x for x in got if x.answer_key == "k0").question == "q0 again"
    assert idx.entries() == 3


async def test_in_process_ranks_isolates_and_replaces(layout: str) -> None:
    idx = InProcessIndex(100, 10, 60)
    await check_basics(idx)
    got = await idx.search("p", unit(), k=10)
    assert len(got) == 3 and all(isinstance(x, Candidate) for x in got)


async def test_in_process_caps_entries_and_partitions(layout: str) -> None:
    idx = InProcessIndex(max_entries=3, max_partitions=2, ttl_s=60)
    vs = [unit() for _ in range(5)]
    for i, v in enumerate(vs):
        await idx.add("a", v, f"q{i}", f"k{i}")
    keys = {x.answer_key for x in await idx.search("a", vs[0], k=10)}
    assert keys == {"k2", "k3", "k4"}  # the two oldest went
    await idx.add("a", vs[2], "q2", "k2")  # refreshed: now the newest
    await idx.add("a", vs[0], "q0", "k0")
    assert {x.answer_key for x in await idx.search("a", vs[0], k=10)} == {"k4", "k2", "k0"}
    await idx.add("b", vs[1], "q", "kb")
    await idx.search("a", vs[0])  # a is now the most recently used partition
    await idx.add("c", vs[1], "q", "kc")  # b goes whole
    assert await idx.search("b", vs[1]) == []
    assert [x.answer_key for x in await idx.search("c", vs[1])] == ["kc"]
    assert idx.entries() == 4


async def test_a_new_bound_applies_to_the_partitions_there_are(
    layout: str, make_redis: Factory
) -> None:
    """The policy's max_entries, hot-reloaded: a lower bound frees the oldest entries of every
    partition at once (not only of partitions made later), and adds keep to it; never above
    the whole index's bound. On Redis each replica's mirror is cut at once and the stream
    trimmed (approximately, as Redis trims) by the next add."""
    for idx in (
        InProcessIndex(max_entries=10, max_partitions=4, ttl_s=60, max_total=20),
        make_redis(max_entries=10, max_total=20),
    ):
        vs = [unit() for _ in range(6)]
        for p in "ab":
            for i, v in enumerate(vs):
                await idx.add(p, v, f"q{i}", f"{p}{i}")
            await idx.search(p, vs[0])  # a replica's mirror reads its partition's stream
        assert idx.entries() == 12
        assert idx.bound(2) == 2
        assert idx.entries() == 4
        assert {x.answer_key for x in await idx.search("a", vs[0], k=10)} == {"a4", "a5"}
        await idx.add("a", vs[0], "q0", "a0")
        assert {x.answer_key for x in await idx.search("a", vs[0], k=10)} == {"a5", "a0"}
        assert idx.bound(1000) == 20  # never above the whole index's bound
        await idx.close()


async def test_in_process_caps_entries_of_all_partitions_together() -> None:
    """Many small partitions add up to no more than `max_total` entries: the least recently
    used partitions go whole, never the one just written."""
    idx = InProcessIndex(max_entries=10, max_partitions=100, ttl_s=60, max_total=5)
    v = unit()
    for p in "abcdef":
        await idx.add(p, v, "q", f"k{p}")
    assert idx.entries() == 5 and await idx.search("a", v) == []
    await idx.search("b", v)  # b is now the most recently used
    for i in range(4):
        await idx.add("g", unit(), f"q{i}", f"g{i}")
    assert idx.entries() <= 5
    assert [c.answer_key for c in await idx.search("g", v, k=10)] != []
    for i in range(10):  # one partition alone keeps its own cap, above the total
        await idx.add("g", unit(), f"r{i}", f"r{i}")
    assert idx.entries() == 10 and list(idx._parts) == ["g"]


async def test_in_process_ttl_and_row_reuse(layout: str) -> None:
    clock = Clock()
    idx = InProcessIndex(10, 10, ttl_s=30, clock=clock)
    v, w = unit(), unit()
    await idx.add("p", v, "old", "k0")
    clock.now += 20
    await idx.add("p", w, "new", "k1")
    clock.now += 11  # k0 is 31 s old, k1 11 s
    assert [x.answer_key for x in await idx.search("p", v, k=5)] == ["k1"]
    assert idx.entries() == 1  # dropped on the way
    await idx.add("p", v, "again", "k2")  # the freed row is reused
    assert len(idx._parts["p"].qk) == 2
    clock.now += 31
    assert await idx.search("p", v) == []


async def test_vectors_are_checked() -> None:
    idx = InProcessIndex(10, 10, 60)
    await idx.add("p", unit(), "q", "k")
    with pytest.raises(ValueError, match="width"):
        await idx.add("p", unit(128), "q", "k")
    with pytest.raises(ValueError, match="width"):
        await idx.search("p", unit(128))
    for bad in (np.ones((2, WIDTH), np.float32), np.arange(WIDTH), np.array([])):
        with pytest.raises(ValueError):
            await idx.search("p", bad)
    with pytest.raises(ValueError, match="finite"):
        await idx.add("p", np.full(WIDTH, np.nan), "q", "k")
    v = unit().astype(np.float64) * 5  # any float dtype, any length: normalised
    await idx.add("p", v, "q2", "k2")
    assert (await idx.search("p", v, k=1))[0].similarity == pytest.approx(1.0, abs=1e-5)
    await idx.add("p", unit(), "x" * 5000, "k3")  # too long: skipped, counted
    assert idx.skipped == 1 and idx.entries() == 2


async def test_large_partition_scans_signs_then_ranks_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(index_module, "EXACT_ROWS", 128)
    monkeypatch.setattr(index_module, "RERANK", 16)
    clock = Clock()
    idx = InProcessIndex(1000, 1, 60, clock=clock)
    vs = np.stack([unit() for _ in range(600)])
    for i, v in enumerate(vs[:128]):
        await idx.add("p", v, f"q{i}", f"k{i}")
    part = idx._parts["p"]
    assert part.bits is None and part.m.dtype == np.float32  # 128 rows: exact, float32
    for i, v in enumerate(vs[128:], 128):
        await idx.add("p", v, f"q{i}", f"k{i}")
    assert part.bits is not None and part.m.dtype == np.float16 and part.bits.shape[0] == 6
    stored = part.m[:600].astype(np.float32)
    for j in (3, 127, 128, 420):  # rows written before and after the switch
        q = near(vs[j], 0.3)
        got = await idx.search("p", q, k=3)  # 192 of 600 rows ranked exactly
        assert got[0].answer_key == f"k{j}" and len(got) == 3
        assert got[0].similarity >= got[1].similarity >= got[2].similarity
        for x in got:  # exact cosines of the stored (float16) rows
            assert x.similarity == pytest.approx(float(stored[int(x.answer_key[1:])] @ q), abs=1e-5)
    await idx.add("p", vs[7], "moved", "k420")  # a re-add rewrites the row's sign bits too
    assert [(x.question, x.answer_key) for x in await idx.search("p", vs[7], k=1)] == [
        ("moved", "k420")
    ]
    clock.now += 30
    await idx.add("p", vs[500], "fresh", "new")
    clock.now += 31  # all but "new" expired: k3's row is nearest by signs, not returned
    got = await idx.search("p", vs[3], k=3)
    assert [x.answer_key for x in got] == ["new"] and idx.entries() == 1


async def test_sign_scan_finds_planted_near_duplicates() -> None:
    """Random unit rows plus one near-duplicate per query at cosine 0.80-0.99: the true best."""
    rng = np.random.default_rng(11)
    n, nq = 50_000, 500
    rows = rng.standard_normal((n, WIDTH), np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    qs = rows[:nq].copy()  # the queries; rows[:nq] are replaced by their near-duplicates
    cos = rng.uniform(0.80, 0.99, nq).astype(np.float32)
    other = rng.standard_normal((nq, WIDTH), np.float32)
    other -= (other * qs).sum(1, keepdims=True) * qs
    other /= np.linalg.norm(other, axis=1, keepdims=True)
    rows[:nq] = cos[:, None] * qs + np.sqrt(1 - cos**2)[:, None] * other
    idx = InProcessIndex(n, 1, 60)
    for i, v in enumerate(rows):
        await idx.add("p", v, "", f"k{i}")
    assert idx._parts["p"].bits is not None  # large: the sign-bit scan picks the rows
    truth = np.argmax(rows @ qs.T, axis=0)
    found = np.zeros(nq, bool)
    for j, (q, t) in enumerate(zip(qs, truth, strict=True)):
        found[j] = (await idx.search("p", q, k=1))[0].answer_key == f"k{t}"
    high = cos >= 0.85
    assert found[high].mean() >= 0.999 and found.mean() >= 0.99, (found[high].mean(), found.mean())


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_replicas_share_entries(
    shape: str, request: pytest.FixtureRequest, make_redis: Factory
) -> None:
    url = request.getfixturevalue(SHAPES[shape]).url
    r1, r2 = make_redis(url), make_redis(url)
    await check_basics(r1)
    v = unit()
    await r1.add("shared", v, "how tall is it", "ans1")
    reads: list[int] = []
    xrange = r2.client.xrange

    async def spy(*args: Any, **kwargs: Any) -> Any:
        rows = await xrange(*args, **kwargs)
        reads.append(len(rows))
        return rows

    r2.client.xrange = spy
    got = await r2.search("shared", near(v, 0.2))
    assert [(x.question, x.answer_key) for x in got] == [("how tall is it", "ans1")]
    assert await r2.search("shared", v) and reads == [1, 0]  # the second read nothing new
    assert (await r2.search("shared", v))[0].similarity == pytest.approx(1.0, abs=2e-3)
    await r2.add("shared", unit(), "another", "ans2")  # and the other way round
    assert len(await r1.search("shared", v, k=5)) == 2
    assert await r2.search("elsewhere", v) == []


async def test_redis_stream_layout_caps_and_sizes(
    redis_server: RedisServer, make_redis: Factory, layout: str
) -> None:
    r1 = make_redis(max_entries=3, ttl_s=100)
    vs = [unit() for _ in range(5)]
    for i, v in enumerate(vs):
        await r1.add("p", v, f"q{i}", f"k{i}")
    await r1.add("p", vs[0], "x" * 5000, "big")  # refused: never reaches Redis
    sync = redis_server.client()
    key = f"{r1.prefix}sem:{{p}}"
    assert sync.xlen(key) == 5 and 0 < sync.ttl(key) <= 100 and r1.skipped == 1
    _id, fields = sync.xrange(key, count=1)[0]
    assert set(fields) == {b"v", b"q", b"k"} and len(fields[b"v"]) == 2 * WIDTH
    r2 = make_redis(max_entries=3, page=2, max_pages=2)  # bounded pages: 4 now, 1 next time
    assert {x.answer_key for x in await r2.search("p", vs[0], k=10)} == {"k1", "k2", "k3"}
    assert {x.answer_key for x in await r2.search("p", vs[0], k=10)} == {"k2", "k3", "k4"}
    other = make_redis()
    await other.add("p", unit(16), "another width", "w")  # mirrored by no one of width 384
    assert len(await r2.search("p", vs[0], k=10)) == 3 and r2.foreign == 1


async def test_redis_entries_expire(make_redis: Factory, layout: str) -> None:
    clock = Clock()
    r1 = make_redis(ttl_s=30, clock=clock)
    v = unit()
    await r1.add("p", v, "q", "k")
    assert await r1.search("p", v)
    clock.now += 31
    assert await r1.search("p", v) == []  # the mirror stops returning it
    late = make_redis(ttl_s=30, clock=clock)
    reads: list[Any] = []
    xrange = late.client.xrange

    async def spy(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return await xrange(*args, **kwargs)

    late.client.xrange = spy
    assert await late.search("p", v) == [] and late.entries() == 0
    assert reads[0][1] != "-" and int(str(reads[0][1]).split("-")[0]) > (clock.now - 31) * 1000


async def test_redis_down_raises_within_the_bound(
    own_redis: RedisServer, make_redis: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    idx = make_redis(own_redis.url, timeout_s=0.3)
    v = unit()
    await idx.add("p", v, "q", "k")
    assert own_redis.proc is not None
    os.kill(own_redis.proc.pid, signal.SIGSTOP)  # accepts, never answers
    try:
        with caplog.at_level(logging.INFO, logger="gateway.semantic.index"):
            for call in (idx.search("p", v), idx.add("p", v, "q", "k2"), idx.search("p", v)):
                started = time.monotonic()
                with pytest.raises(IndexUnavailable):
                    await call
                assert time.monotonic() - started < 0.3 + 0.25
    finally:
        os.kill(own_redis.proc.pid, signal.SIGCONT)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and idx.errors == 3  # one line per burst
    await asyncio.sleep(0.1)
    with caplog.at_level(logging.INFO, logger="gateway.semantic.index"):
        assert [x.answer_key for x in await idx.search("p", v)] == ["k"]
    assert any("available again" in r.getMessage() for r in caplog.records)
    own_redis.kill()
    started = time.monotonic()
    with pytest.raises(IndexUnavailable):
        await idx.search("p", v)
    assert time.monotonic() - started < 0.3 + 0.25


async def test_a_large_scan_runs_off_the_loop_and_is_checked_against_the_rows_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past EXACT_ROWS the sign-bit scan runs on a worker thread while the loop goes on
    writing; what it picked is scored again on the loop, so a row freed or rewritten
    meanwhile never lends its old cosine to another question."""
    monkeypatch.setattr(index_module, "EXACT_ROWS", 64)
    threads: list[int] = []
    scan = index_module._fewest_flips

    def spy(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return scan(*args)

    monkeypatch.setattr(index_module, "_fewest_flips", spy)
    clock = Clock()
    idx = InProcessIndex(1000, 1, 60, clock=clock)
    vs = [unit() for _ in range(200)]
    for i, v in enumerate(vs):
        await idx.add("p", v, f"q{i}", f"k{i}")
    part = idx._parts["p"]
    assert part.bits is not None
    assert (await idx.search("p", vs[5], k=1))[0].answer_key == "k5"
    assert threads and threading.get_ident() not in threads
    # What the scan picked for vs[5], then the loop rewrote that row with another question.
    rows = part.pick(vs[5], 3, idx.cutoff())
    other = unit()
    await idx.add("p", other, "rewritten", "k5")  # the same key: the same row, new content
    got = part.confirm(rows, vs[5], 3, idx.cutoff())
    for c in got:  # every cosine is its own question's, as the row holds it now
        assert c.similarity == pytest.approx(float(c.vector @ vs[5]), abs=1e-6)
    assert [c.question for c in got if c.answer_key == "k5"] in ([], ["rewritten"])
    assert all(c.similarity < 0.9 for c in got)
    # Equal cosines: the newer entry first.
    await idx.add("p", vs[9], "newer twin", "twin")
    assert [c.answer_key for c in await idx.search("p", vs[9], k=2)] == ["twin", "k9"]
