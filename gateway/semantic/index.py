"""The semantic cache's vector index: stored questions per partition, nearest first.

A partition is the caller's hash of all but the last question; a search looks inside one only.
An entry (unit vector, question, answer key in the exact cache) is never returned after `ttl_s`
and a partition keeps its newest `max_entries`. `InProcessIndex`: a matrix per partition,
searched by one product or, once large, by a sign-bit scan then exact cosines for the best rows.
`RedisIndex`: one capped stream per partition shared by the replicas (plain Redis 7, one key per
command), mirrored in each replica, which reads only the entries it has not seen: one round trip
per search when nothing is new.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_QUESTION_BYTES = 4096  # longer questions are not indexed (counted in `skipped`)
MAX_KEY_BYTES = 512
EXACT_ROWS = 4096  # a partition with more rows holds float16 and is scanned by sign bits first
RERANK = 256  # rows whose exact cosines a sign-bit scan asks for (at least 64 per result wanted)
_FIRST_ROWS = 64


@dataclass(frozen=True)
class Candidate:
    similarity: float
    question: str
    answer_key: str
    # The stored question's unit vector (the verifier's pair head reads both vectors).
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)


class SemanticIndex(Protocol):
    async def add(
        self, partition: str, vector: np.ndarray, question: str, answer_key: str
    ) -> None: ...
    async def search(self, partition: str, vector: np.ndarray, k: int = 3) -> list[Candidate]: ...
    def bound(self, max_entries: int) -> int: ...
    def entries(self) -> int: ...
    async def close(self) -> None: ...


class IndexUnavailable(Exception):
    """The shared index's Redis failed or timed out: the operation was not done."""


def _signs(m: np.ndarray) -> np.ndarray:
    """The sign bits of a vector (or of each row), packed into uint64 words (zero padded)."""
    b = np.packbits(m > 0, axis=-1)
    return np.pad(b, [(0, 0)] * (b.ndim - 1) + [(0, -b.shape[-1] % 8)]).view(np.uint64)


def _fewest_flips(bits: np.ndarray, vec: np.ndarray, dead: np.ndarray, keep: int) -> np.ndarray:
    """The `keep` rows whose sign `bits` differ from `vec`'s in the fewest places (dead last)."""
    dist = np.zeros(len(dead), np.uint16)
    for col, q in zip(bits[:, : len(dead)], _signs(vec), strict=True):
        dist += np.bitwise_count(col ^ q)
    dist[dead] = far = 64 * len(bits) + 1
    within = np.cumsum(np.bincount(dist, minlength=far + 1))  # rows at most d bits away
    d = int(np.searchsorted(within, keep))  # the distance reaching `keep` rows
    nearer = np.flatnonzero(dist < d)
    return np.concatenate([nearer, np.flatnonzero(dist == d)[: keep - len(nearer)]])


class _Partition:
    """One partition's entries: rows of a matrix, oldest first in `slots`, freed rows reused."""

    def __init__(self, width: int, max_entries: int) -> None:
        self.max_entries = max_entries
        self.m, self.t = np.zeros((0, width), np.float32), np.zeros(0)  # t: -inf for a free row
        self.seq = np.zeros(0, np.int64)  # when each row was written: the newer of equals first
        self.writes = 0
        self.bits: np.ndarray | None = None  # (words, rows) sign bits, and m float16, once large
        self.qk: list[tuple[str, str]] = []  # (question, answer_key) per row
        self.slots: OrderedDict[str, int] = OrderedDict()  # answer_key -> row
        self.free: list[int] = []
        self.seen = (0, 0)  # the last stream id read into this partition (RedisIndex)
        self._grow(min(_FIRST_ROWS, max_entries))

    def _grow(self, more: int) -> None:
        m = np.concatenate([self.m, np.zeros((more, self.m.shape[1]), self.m.dtype)])
        self.t = np.concatenate([self.t, np.full(more, -np.inf)])
        self.seq = np.concatenate([self.seq, np.zeros(more, np.int64)])
        if self.bits is None and len(m) > EXACT_ROWS:  # large from now on
            m, self.bits = m.astype(np.float16), _signs(m).T.copy()
        elif self.bits is not None:
            self.bits = np.concatenate([self.bits, np.zeros((len(self.bits), more), np.uint64)], 1)
        self.m = m

    def put(self, vec: np.ndarray, question: str, key: str, t: float) -> None:
        row = self.slots.pop(key, None)  # a re-add replaces, and becomes the newest
        if row is None:
            if len(self.slots) >= self.max_entries:
                _, row = self.slots.popitem(last=False)
            elif self.free:
                row = self.free.pop()
            else:
                row = len(self.qk)
                self.qk.append(("", ""))
                if row == len(self.m):  # grown by doubling, up to max_entries
                    self._grow(min(self.max_entries, 2 * row) - row)
        self.m[row], self.t[row], self.qk[row] = vec, t, (question, key)
        self.writes += 1
        self.seq[row] = self.writes
        if self.bits is not None:
            self.bits[:, row] = _signs(vec)
        self.slots[key] = row

    def shrink(self, max_entries: int) -> None:
        """Keep the newest `max_entries` from now on: the oldest beyond them are freed."""
        self.max_entries = max_entries
        while len(self.slots) > max_entries:
            _, row = self.slots.popitem(last=False)
            self.t[row], self.qk[row] = -np.inf, ("", "")
            self.free.append(row)

    def expire(self, cutoff: float) -> None:
        """Free the rows written at or before `cutoff`, oldest first (each entry once)."""
        while self.slots:
            key, row = next(iter(self.slots.items()))
            if self.t[row] > cutoff:
                return
            del self.slots[key]
            self.t[row], self.qk[row] = -np.inf, ("", "")
            self.free.append(row)

    def nearest(self, vec: np.ndarray, k: int, cutoff: float) -> list[Candidate]:
        return self.confirm(self.pick(vec, k, cutoff), vec, k, cutoff)

    def pick(self, vec: np.ndarray, k: int, cutoff: float) -> np.ndarray:
        """Rows of the (up to) 2k live entries nearest `vec`, nearest first. Safe to run off
        the loop while the loop writes: it reads the arrays as they were when it started, and
        `confirm` checks every row it returns against what the row holds by then."""
        m, t, bits = self.m, self.t, self.bits
        n = min(len(self.qk), len(m), len(t), bits.shape[1] if bits is not None else len(m))
        if (want := min(2 * k, n)) <= 0:
            return np.zeros(0, np.intp)
        dead = t[:n] <= cutoff  # free and expired rows
        if bits is None:
            rows, sims = np.arange(n), m[:n] @ vec
        else:  # exact cosines (float32) for the rows nearest by sign bits
            rows = _fewest_flips(bits, vec, dead, min(n, max(RERANK, 64 * k)))
            sims = m[rows].astype(np.float32) @ vec
        sims[dead[rows]] = -np.inf
        want = min(want, len(sims))
        top = np.argpartition(sims, len(sims) - want)[len(sims) - want :]
        top = top[np.argsort(-sims[top])]
        return rows[top[sims[top] > -np.inf]]

    def confirm(self, rows: np.ndarray, vec: np.ndarray, k: int, cutoff: float) -> list[Candidate]:
        """The `k` best of `rows` as they are now (on the loop): a row freed, expired or
        rewritten since `pick` read it is dropped or scored by what it now holds, so a
        candidate's cosine is always its own question's."""
        found = []
        for r in rows:
            if r >= len(self.qk) or self.t[r] <= cutoff:
                continue
            question, key = self.qk[r]
            row = self.m[r].astype(np.float32)
            found.append((int(self.seq[r]), Candidate(float(row @ vec), question, key, row)))
        found.sort(key=lambda x: (-x[1].similarity, -x[0]))  # the newer of equals first
        return [c for _, c in found[:k]]


class InProcessIndex:
    """Entries of this process only, bounded per partition and in partitions (LRU)."""

    def __init__(
        self,
        max_entries: int,
        max_partitions: int,
        ttl_s: int,
        *,
        max_question_bytes: int = MAX_QUESTION_BYTES,
        clock: Callable[[], float] = time.time,
        max_total: int | None = None,
    ) -> None:
        if min(max_entries, max_partitions, ttl_s) <= 0:
            raise ValueError("max_entries, max_partitions and ttl_s must be positive")
        self.max_entries, self.max_partitions, self.ttl_s = max_entries, max_partitions, ttl_s
        # Entries of all partitions together: many small partitions must not add up to more
        # memory than one full one may take (least recently used partitions go first).
        self.max_total = max_total if max_total is not None else max_entries * max_partitions
        self.max_question_bytes = max_question_bytes
        self.width: int | None = None
        self.skipped = 0  # adds refused for size
        self._clock = clock
        self._parts: OrderedDict[str, _Partition] = OrderedDict()

    def vector(self, vector: np.ndarray) -> np.ndarray:
        """`vector` as a unit float32 row of this index's width (fixed by the first one seen)."""
        v = np.asarray(vector)
        if v.ndim != 1 or v.size == 0 or not np.issubdtype(v.dtype, np.floating):
            raise ValueError(f"a vector is a non-empty 1-d float array, not {v.dtype}{v.shape}")
        if self.width is None:
            self.width = v.size
        elif v.size != self.width:
            raise ValueError(f"vector width {v.size}, the index holds width {self.width}")
        v = v.astype(np.float32)
        norm = float(np.linalg.norm(v))
        if not np.isfinite(norm):
            raise ValueError("vector has non-finite values")
        return v / norm if norm > 0 else v

    def fits(self, question: str, answer_key: str) -> bool:
        ok = len(question.encode()) <= self.max_question_bytes
        ok = ok and len(answer_key.encode()) <= MAX_KEY_BYTES
        self.skipped += not ok
        return ok

    def partition(self, name: str, width: int) -> _Partition:
        part = self._parts.get(name)
        if part is None:
            part = self._parts[name] = _Partition(width, self.max_entries)
            while len(self._parts) > self.max_partitions:
                self._parts.popitem(last=False)
        else:
            self._parts.move_to_end(name)
        return part

    def cutoff(self) -> float:
        return self._clock() - self.ttl_s

    def bound(self, max_entries: int) -> int:
        """The newest `max_entries` per partition (never more than the whole index holds),
        applied to the partitions there are as well as to new ones; the bound now in force."""
        want = max(1, min(max_entries, self.max_total))
        if want != self.max_entries:
            self.max_entries = want
            for part in self._parts.values():
                part.shrink(want)
        return want

    async def add(self, partition: str, vector: np.ndarray, question: str, answer_key: str) -> None:
        vec = self.vector(vector)
        if self.fits(question, answer_key):
            self.partition(partition, vec.size).put(vec, question, answer_key, self._clock())
            self._bound_total()

    def _bound_total(self) -> None:
        total = self.entries()
        while total > self.max_total and len(self._parts) > 1:
            _, oldest = self._parts.popitem(last=False)  # never the one just used (the last)
            total -= len(oldest.slots)

    async def search(self, partition: str, vector: np.ndarray, k: int = 3) -> list[Candidate]:
        vec, part = self.vector(vector), self._parts.get(partition)
        if part is None:
            return []
        self._parts.move_to_end(partition)
        cutoff = self.cutoff()
        part.expire(cutoff)
        if part.bits is None:  # small (at most EXACT_ROWS): a fraction of a millisecond
            return part.nearest(vec, k, cutoff)
        # Large: the scan takes a millisecond or more (100,000 rows), off the event loop.
        rows = await asyncio.to_thread(part.pick, vec, k, cutoff)
        return part.confirm(rows, vec, k, cutoff)

    def entries(self) -> int:
        return sum(len(p.slots) for p in self._parts.values())

    async def close(self) -> None:
        self._parts.clear()


def _stream_id(raw: bytes | str) -> tuple[int, int]:
    ms, _, seq = (raw.decode() if isinstance(raw, bytes) else raw).partition("-")
    return int(ms), int(seq or 0)


class RedisIndex(InProcessIndex):
    """Entries shared by every replica: a capped Redis stream per partition, mirrored here.

    `client` is `gateway.redis_client.connect(...)`'s (bytes replies), owned by the index. Each
    Redis call is bounded by `timeout_s`; a failure raises `IndexUnavailable` (logged once per
    burst). A search reads at most `max_pages` pages of `page` new entries, the rest later.
    """

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        max_entries: int,
        max_partitions: int,
        ttl_s: int,
        timeout_s: float,
        page: int = 500,
        max_pages: int = 8,
        max_question_bytes: int = MAX_QUESTION_BYTES,
        clock: Callable[[], float] = time.time,
        max_total: int | None = None,
    ) -> None:
        self.client, self.prefix, self.timeout_s = client, prefix, timeout_s
        super().__init__(
            max_entries,
            max_partitions,
            ttl_s,
            max_question_bytes=max_question_bytes,
            clock=clock,
            max_total=max_total,
        )
        self.page, self.max_pages = page, max_pages
        self.foreign = 0  # stream entries of another width or shape, not mirrored
        self.errors, self._failing = 0, False

    def key(self, partition: str) -> str:
        return f"{self.prefix}sem:{{{partition}}}"

    async def add(self, partition: str, vector: np.ndarray, question: str, answer_key: str) -> None:
        vec = self.vector(vector)
        if not self.fits(question, answer_key):
            return
        key = self.key(partition)
        fields = {b"v": vec.astype("<f2").tobytes(), b"q": question.encode(), b"k": answer_key}
        min_id = max(0, int(self.cutoff() * 1000))

        async def write() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.xadd(key, fields, maxlen=self.max_entries, approximate=True)
                pipe.xtrim(key, minid=f"{min_id}-0", approximate=True)
                pipe.expire(key, self.ttl_s)
                await pipe.execute()

        await self._io("add", write())

    async def search(self, partition: str, vector: np.ndarray, k: int = 3) -> list[Candidate]:
        await self._sync(partition, self.vector(vector).size)
        return await super().search(partition, vector, k)

    async def _sync(self, partition: str, width: int) -> None:
        """Read the partition's stream entries this replica has not seen (and are not expired)."""
        key = self.key(partition)
        part = self._parts.get(partition)
        floor = (max(0, int(self.cutoff() * 1000)), 0)
        seen = part.seen if part is not None else (0, 0)
        start = f"({seen[0]}-{seen[1]}" if seen >= floor else f"{floor[0]}-0"
        for _ in range(self.max_pages):
            rows = await self._io("search", self.client.xrange(key, start, "+", self.page))
            if rows:
                self._ingest(partition, rows, width)
            if len(rows or ()) < self.page:
                return
            last = _stream_id(rows[-1][0])
            start = f"({last[0]}-{last[1]}"

    def _ingest(self, partition: str, rows: list[Any], width: int) -> None:
        part = self.partition(partition, width)
        seen, vecs, meta = part.seen, [], []
        for raw_id, fields in rows:
            sid = _stream_id(raw_id)
            if sid <= seen:  # read by a concurrent search already
                continue
            part.seen = sid
            v, q, k = fields.get(b"v"), fields.get(b"q"), fields.get(b"k")
            if not isinstance(v, bytes) or len(v) != 2 * width or q is None or k is None:
                self.foreign += 1
                continue
            vecs.append(v)
            meta.append((q.decode(errors="replace"), k.decode(errors="replace"), sid[0] / 1000))
        if vecs:  # one conversion for the page, then one row copy per entry
            mat = np.frombuffer(b"".join(vecs), "<f2").reshape(-1, width).astype(np.float32)
            for vec, (question, key, t) in zip(mat, meta, strict=True):
                part.put(vec, question, key, t)
            self._bound_total()

    async def _io(self, op: str, call: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await call
        except Exception as exc:
            self.errors, error = self.errors + 1, type(exc).__name__
            if not self._failing:
                self._failing = True
                log.warning("semantic index redis unavailable", extra={"op": op, "error": error})
            raise IndexUnavailable(f"semantic index {op}: {error}") from exc
        if self._failing:
            self._failing = False
            log.info("semantic index redis available again")
        return result

    async def close(self) -> None:
        await super().close()
        try:
            await asyncio.wait_for(self.client.aclose(), max(1.0, self.timeout_s))
        except (TimeoutError, OSError):
            log.warning("semantic index redis connections not closed in time")
