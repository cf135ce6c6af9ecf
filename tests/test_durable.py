"""The bounded SQLite log under the label store and the telemetry outbox."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.durable import DurableLog


def test_cap_drops_oldest_first_and_counts(tmp_path: Path) -> None:
    log = DurableLog(tmp_path / "q.sqlite", cap=3)
    assert log.append_sync("a", [{"n": i} for i in range(5)]) == 2
    assert len(log) == 3 and log.dropped == 2
    assert [r.body["n"] for r in log.head_sync(10)] == [2, 3, 4]


def test_survives_reopen_in_order(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    log = DurableLog(path, cap=100)
    log.append_sync("x", [{"n": 1}, {"n": 2}])
    log.append_sync("y", [{"n": 3}])
    log.close_sync()
    again = DurableLog(path, cap=100)
    assert len(again) == 3
    assert [r.body["n"] for r in again.iter_sync(batch=1)] == [1, 2, 3]
    assert [r.body["n"] for r in again.iter_sync(kind="x")] == [1, 2]
    assert again.counts_by_kind_sync() == {"x": 2, "y": 1}


async def test_async_calls_remove_what_was_shipped(tmp_path: Path) -> None:
    log = DurableLog(tmp_path / "q.sqlite", cap=10)
    await log.append("r", [{"n": i} for i in range(4)])
    first = await log.head(2)
    await log.remove([r.id for r in first])
    assert [r.body["n"] for r in await log.head(10)] == [2, 3] and len(log) == 2
    await log.close()


def test_cap_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DurableLog(tmp_path / "q.sqlite", cap=0)
