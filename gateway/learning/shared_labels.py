"""The learning loop's labels in the state Redis: every replica's labels in one store.

The same rules as the SQLite store (learning/labels.py): at most `learning.max_labels` rows,
the oldest dropped first and counted; at most `learning.max_labels_per_key` rows per tenant,
that tenant's own oldest dropped first; each row has a stable id (the retrainer's held-back
share hashes it). One Lua script per label on keys tagged `{fleet}` (one slot), so the caps
hold however many replicas write at once:
- `P:{fleet}:labels:seq`: the last row id;
- `P:{fleet}:labels:rows`: hash id -> `kind TAB at TAB tenant TAB body JSON`;
- `P:{fleet}:labels:order`: zset id -> id (oldest first);
- `P:{fleet}:labels:bykey`: zset of `tenant|<id, 20 digits>` (score 0: ordered by tenant,
  then age, so a tenant's oldest row is one ZRANGEBYLEX away);
- `P:{fleet}:labels:counts`: hash tenant -> rows held;
- `P:{fleet}:labels:stats`: hash `dropped` (rows the caps dropped), `since` (labels since the
  last retrain, which the trainer resets: the fleet's retrain_every).
A label is acknowledged (feedback's 200) only after the script returned.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from ..durable import Record
from ..state.state_store import StateStore
from .labels import NO_KEY, LabelStore, Source

log = logging.getLogger(__name__)

# KEYS[1] the rows hash; ARGV: base, kind, tenant, body, at, cap, per-key cap (0: none).
_ADD = """
local base, tenant = ARGV[1], ARGV[3]
local cap, per_key = tonumber(ARGV[6]), tonumber(ARGV[7])
local rows, order, bykey = KEYS[1], base .. 'order', base .. 'bykey'
local counts, stats = base .. 'counts', base .. 'stats'
local function member(t, id) return t .. '|' .. string.format('%020d', id) end
local id = redis.call('INCR', base .. 'seq')
redis.call('HSET', rows, id, ARGV[2] .. '\\t' .. ARGV[5] .. '\\t' .. tenant .. '\\t' .. ARGV[4])
redis.call('ZADD', order, id, id)
redis.call('ZADD', bykey, 0, member(tenant, id))
redis.call('HINCRBY', counts, tenant, 1)
local dropped = 0
local function drop(rid)
  local row = redis.call('HGET', rows, rid)
  if not row then return false end
  local t = string.match(row, '^[^\\t]*\\t[^\\t]*\\t([^\\t]*)\\t')
  redis.call('HDEL', rows, rid)
  redis.call('ZREM', order, rid)
  redis.call('ZREM', bykey, member(t, tonumber(rid)))
  if redis.call('HINCRBY', counts, t, -1) <= 0 then redis.call('HDEL', counts, t) end
  dropped = dropped + 1
  return true
end
if per_key > 0 then
  while tonumber(redis.call('HGET', counts, tenant) or '0') > per_key do
    local m = redis.call('ZRANGEBYLEX', bykey, '[' .. tenant .. '|', '(' .. tenant .. '}',
      'LIMIT', 0, 1)[1]
    -- the member's id is zero-padded; the rows hash is keyed by the plain number
    if not m or not drop(string.format('%d', tonumber(string.sub(m, #tenant + 2)))) then break end
  end
end
while redis.call('ZCARD', order) > cap do
  local oldest = redis.call('ZRANGE', order, 0, 0)[1]
  if not drop(oldest) then redis.call('ZREM', order, oldest) end
end
local total_dropped = redis.call('HINCRBY', stats, 'dropped', dropped)
local since = redis.call('HINCRBY', stats, 'since', 1)
return {id, dropped, redis.call('ZCARD', order), total_dropped, since}
"""


class RedisLabelStore(LabelStore):
    """LabelStore's rules and interface over the state Redis (see the module's docstring)."""

    def __init__(
        self,
        state: StateStore,
        cap: int,
        *,
        keep_prompts: bool = False,
        per_key: int | None = None,
        on_added: Callable[[str, int], None] | None = None,
    ) -> None:
        self.state = state
        self.cap = cap
        self.keep_prompts = keep_prompts
        self.per_key = per_key
        self._on_added = on_added
        self._add = state.script("labels.add", _ADD)
        self._len = 0  # as of this replica's last write or read: the status page's count
        self._dropped = 0
        self.since = 0

    def __len__(self) -> int:
        return self._len

    @property
    def dropped(self) -> int:
        return self._dropped

    def _k(self, name: str) -> str:
        return self.state.fleet_key("labels", name)

    async def _append(self, source: Source, body: dict[str, Any], tag: str) -> int:
        raw = json.dumps(body, separators=(",", ":"))
        args = [
            self._k(""),
            source,
            tag,
            raw,
            repr(time.time()),
            self.cap,
            self.per_key or 0,
        ]
        got = await self.state.run(
            "store a label", lambda: self._add(keys=[self._k("rows")], args=args), durable=True
        )
        _id, dropped, self._len, self._dropped, self.since = (int(x) for x in got)
        return int(dropped)

    async def counts_by_key(self) -> dict[str, int]:
        got = await self.state.run(
            "count labels per key", lambda: self.state.client.hgetall(self._k("counts"))
        )
        return {k.decode() or NO_KEY: int(v) for k, v in got.items()}

    async def rows(self) -> list[Record]:
        """Every row, oldest first (the whole store: a retrain or the curve reads it all)."""
        got = await self.state.run(
            "read labels", lambda: self.state.client.hgetall(self._k("rows"))
        )
        out = []
        for k, v in got.items():
            kind, at, _tenant, body = v.decode().split("\t", 3)
            out.append(Record(int(k), float(at), kind, json.loads(body)))
        out.sort(key=lambda r: r.id)
        self._len = len(out)
        return out

    async def reset_since(self) -> None:
        """A retrain starts: labels from now on count towards the next one."""
        await self.state.run(
            "reset the retrain count",
            lambda: self.state.client.hset(self._k("stats"), "since", 0),
        )

    async def close(self) -> None:
        return None  # the client belongs to the StateStore
