"""A bounded, durable first-in-first-out log of JSON records, kept in SQLite.

Both the label store (what the box learns from its own traffic) and the telemetry outbox
(routing records waiting for the uplink) need the same thing: rows that survive a restart or
a power cut, a hard size cap with the oldest rows dropped first and counted, and reads in
insertion order. SQLite from the standard library in WAL mode gives that without a server;
every call runs on one worker thread per log, so the event loop never waits on the disk and
the connection is never used from two threads at once.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypedDict, TypeVar, Unpack

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids never reused, order is total
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS records_kind ON records (kind);
"""
# Added later (a migration: files written before it have no such column and are upgraded in
# place when opened; older code ignores it). A row's optional tag groups rows for a per-tag
# cap: the label store tags each label with its tenant, so one API key's labels push out only
# its own oldest ones.
_TAG_INDEX = "CREATE INDEX IF NOT EXISTS records_tag ON records (tag, id)"


class TagCap(TypedDict, total=False):
    """append's per-tag cap: the oldest rows of `tag` beyond `tag_cap` go first."""

    tag: str | None
    tag_cap: int | None


@dataclass(frozen=True)
class Record:
    id: int
    at: float
    kind: str
    body: dict[str, Any]


class DurableLog:
    """A capped FIFO of JSON objects in one SQLite file.

    The `*_sync` methods are for offline tools (a CLI reading a store); a running gateway
    uses the async ones, which hop to the log's own thread.
    """

    def __init__(self, path: Path, cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be at least 1")
        self.path = path
        self.cap = cap
        self.dropped = 0  # rows evicted by the cap since this process opened the log
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"durable-{path.stem}")
        path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: the connection is made here but used on the pool's one
        # thread (or by a single-threaded CLI), never by two threads at once.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt the file.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(records)")}
        if "tag" not in columns:
            self._db.execute("ALTER TABLE records ADD COLUMN tag TEXT")
        self._db.execute(_TAG_INDEX)
        self._count: int = self._db.execute("SELECT COUNT(*) FROM records").fetchone()[0]

    # -- sync ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def append_sync(
        self,
        kind: str,
        bodies: Sequence[dict[str, Any]],
        *,
        tag: str | None = None,
        tag_cap: int | None = None,
    ) -> int:
        """Add rows; returns how many old rows the caps pushed out.

        With `tag` and `tag_cap`, the oldest rows of that tag beyond `tag_cap` go first, so
        one tag never pushes out another's rows; then the whole log's cap applies.
        """
        now = time.time()
        rows = [(now, kind, json.dumps(b, separators=(",", ":")), tag) for b in bodies]
        evicted = 0
        with self._db:  # one transaction: the rows and the eviction land together
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO records (at, kind, body, tag) VALUES (?, ?, ?, ?)", rows
            )
            self._count += len(rows)
            if tag is not None and tag_cap is not None:
                (mine,) = self._db.execute(
                    "SELECT COUNT(*) FROM records WHERE tag = ?", (tag,)
                ).fetchone()
                if mine > tag_cap:
                    cur = self._db.execute(
                        "DELETE FROM records WHERE id IN "
                        "(SELECT id FROM records WHERE tag = ? ORDER BY id LIMIT ?)",
                        (tag, mine - tag_cap),
                    )
                    evicted += cur.rowcount
                    self._count -= cur.rowcount
            over = self._count - self.cap
            if over > 0:
                self._db.execute(
                    "DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT ?)",
                    (over,),
                )
                self._count -= over
                evicted += over
        self.dropped += evicted
        return evicted

    def tag_untagged_sync(self, field: str, default: str) -> int:
        """Tag the rows without one (written before tags existed) from a top-level JSON field."""
        if not field.isidentifier():
            raise ValueError(f"not a field name: {field!r}")
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "UPDATE records SET tag = COALESCE(json_extract(body, ?), ?) WHERE tag IS NULL",
                (f"$.{field}", default),
            )
        return int(cur.rowcount)

    def counts_by_tag_sync(self) -> dict[str | None, int]:
        cur = self._db.execute("SELECT tag, COUNT(*) FROM records GROUP BY tag")
        return {t: n for t, n in cur.fetchall()}

    def head_sync(self, n: int, kind: str | None = None) -> list[Record]:
        """The `n` oldest rows (of one kind, if given), oldest first."""
        if kind is None:
            cur = self._db.execute(
                "SELECT id, at, kind, body FROM records ORDER BY id LIMIT ?", (n,)
            )
        else:
            cur = self._db.execute(
                "SELECT id, at, kind, body FROM records WHERE kind = ? ORDER BY id LIMIT ?",
                (kind, n),
            )
        return [Record(i, at, k, json.loads(b)) for i, at, k, b in cur.fetchall()]

    def iter_sync(self, kind: str | None = None, batch: int = 1000) -> Iterator[Record]:
        """Every row, oldest first, read in pages so a large store is never loaded whole."""
        after = 0
        while True:
            if kind is None:
                cur = self._db.execute(
                    "SELECT id, at, kind, body FROM records WHERE id > ? ORDER BY id LIMIT ?",
                    (after, batch),
                )
            else:
                cur = self._db.execute(
                    "SELECT id, at, kind, body FROM records WHERE id > ? AND kind = ? "
                    "ORDER BY id LIMIT ?",
                    (after, kind, batch),
                )
            page = cur.fetchall()
            if not page:
                return
            for i, at, k, b in page:
                yield Record(i, at, k, json.loads(b))
            after = page[-1][0]

    def remove_sync(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.executemany("DELETE FROM records WHERE id = ?", [(i,) for i in ids])
            self._count -= cur.rowcount
        self._count = max(self._count, 0)

    def counts_by_kind_sync(self) -> dict[str, int]:
        cur = self._db.execute("SELECT kind, COUNT(*) FROM records GROUP BY kind")
        return {k: n for k, n in cur.fetchall()}

    def close_sync(self) -> None:
        self._db.close()

    # -- async: the same operations on the log's own thread -------------------------------

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, partial(fn, *args))

    async def append(
        self, kind: str, bodies: Sequence[dict[str, Any]], **caps: Unpack[TagCap]
    ) -> int:
        fn = partial(self.append_sync, **caps)
        dropped: int = await self._run(fn, kind, list(bodies))
        return dropped

    async def head(self, n: int, kind: str | None = None) -> list[Record]:
        rows: list[Record] = await self._run(self.head_sync, n, kind)
        return rows

    async def remove(self, ids: Sequence[int]) -> None:
        await self._run(self.remove_sync, list(ids))

    async def counts_by_tag(self) -> dict[str | None, int]:
        counts: dict[str | None, int] = await self._run(self.counts_by_tag_sync)
        return counts

    async def close(self) -> None:
        await self._run(self.close_sync)
        self._pool.shutdown(wait=True)
