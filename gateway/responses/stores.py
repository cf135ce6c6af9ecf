"""Stored Responses as the handlers see them: in this process, or in the state Redis.

`Responses` is what http/responses.py awaits. `LocalResponses` is the in-process store
(responses/in_process.py) called off the event loop, as before. `RedisResponses` keeps the same
rules in the state Redis so that any replica continues, reads or deletes a conversation any
other replica stored: entries expire `responses.store_ttl_s` after they were stored; a tenant
holds at most `store_max_per_tenant` entries and `store_max_bytes_per_tenant` bytes and pays
for more from its own least recently used entries, never another tenant's; another tenant's
id is as unknown as a made-up one. Each operation is one Lua script on the tenant's keys,
which share the hash tag `{r:<tenant>}` (one slot on a Cluster): the bounds hold atomically
however many replicas write at once.

Keys of one tenant T (prefix P): `P:{r:T}:resp:<id>` the entry's JSON, `P:{r:T}:items:<id>` a
hash of its referable items, `P:{r:T}:lru` (zset id -> use sequence), `P:{r:T}:exp` (zset
id -> expiry, ms), `P:{r:T}:size` (hash id -> bytes), `P:{r:T}:bytes` (their sum),
`P:{r:T}:ix:<item id>` (zset of the ids holding that item, by when they were stored: adding
and dropping a holder costs O(log n) however many responses reuse an item id; a JSON list
re-encoded on every put and drop made single commands take 400-810 ms), `P:{r:T}:seq`.
Expired entries are dropped by the next write of the tenant; the entry keys also carry a
Redis TTL an hour past expiry, so a tenant that never writes again leaves nothing behind.

The store as a whole (`store_max_entries`, `store_max_bytes`) is bounded by construction: a
bound over all tenants could not be atomic on a Cluster (each tenant is its own slot), so the
whole is divided between the tenants there can be (the configured client keys; one on a box
without keys) and each tenant's share is the smaller of its own bound and its part of the
whole. However many replicas and tenants write, the sum stays within the overall bounds and
the state Redis never fills from stored responses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Protocol

from ..keyring import KeyRing
from ..settings import ResponsesSettings, Settings
from ..state.state_store import StateStore
from .in_process import ResponseStore, Stored, encode

log = logging.getLogger(__name__)


class Responses(Protocol):
    async def get(self, tenant: str | None, rid: str) -> Stored | None: ...
    async def items(self, tenant: str | None, ids: list[str]) -> dict[str, dict[str, Any]]: ...
    async def put(self, tenant: str | None, rid: str, entry: Stored) -> bool: ...
    async def delete(self, tenant: str | None, rid: str) -> bool: ...


class LocalResponses:
    """The in-process store; its JSON encoding runs off the event loop (it may be long)."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    async def get(self, tenant: str | None, rid: str) -> Stored | None:
        return await asyncio.to_thread(self.store.get, tenant, rid)

    async def items(self, tenant: str | None, ids: list[str]) -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(self.store.items, tenant, ids)

    async def put(self, tenant: str | None, rid: str, entry: Stored) -> bool:
        return await asyncio.to_thread(self.store.put, tenant, rid, entry)

    async def delete(self, tenant: str | None, rid: str) -> bool:
        return await asyncio.to_thread(self.store.delete, tenant, rid)


# Shared by the scripts: KEYS[1] is the tenant's lru zset (it routes the script to the
# tenant's slot); ARGV[1] the tenant's key base `P:{r:T}:`, ARGV[2] now in ms.
_COMMON = """
local base = ARGV[1]
local now = tonumber(ARGV[2])
local function live(rid)
  local e = redis.call('ZSCORE', base .. 'exp', rid)
  return e and tonumber(e) >= now
end
local function drop(rid)
  local size = redis.call('HGET', base .. 'size', rid)
  if not size then return false end
  local iids = redis.call('HKEYS', base .. 'items:' .. rid)
  for _, iid in ipairs(iids) do
    redis.call('ZREM', base .. 'ix:' .. iid, rid)
  end
  redis.call('DEL', base .. 'resp:' .. rid, base .. 'items:' .. rid)
  redis.call('ZREM', base .. 'lru', rid)
  redis.call('ZREM', base .. 'exp', rid)
  redis.call('HDEL', base .. 'size', rid)
  redis.call('DECRBY', base .. 'bytes', size)
  return true
end
local function touch(rid)
  redis.call('ZADD', base .. 'lru', redis.call('INCR', base .. 'seq'), rid)
end
"""

# ARGV[3] id, [4] entry JSON, [5] size, [6] ttl ms, [7] max entries, [8] max bytes, then
# item id / item JSON pairs. Returns 1.
_PUT = (
    _COMMON
    + """
local rid, size, ttl = ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[6])
local max_n, max_b = tonumber(ARGV[7]), tonumber(ARGV[8])
for _, old in ipairs(redis.call('ZRANGEBYSCORE', base .. 'exp', '-inf', '(' .. now)) do
  drop(old)
end
drop(rid)
local keep = ttl + 3600000
redis.call('SET', base .. 'resp:' .. rid, ARGV[4], 'PX', keep)
if #ARGV > 8 then
  local pairs_ = {}
  local stored_at = redis.call('INCR', base .. 'seq')
  for i = 9, #ARGV, 2 do
    pairs_[#pairs_ + 1] = ARGV[i]
    pairs_[#pairs_ + 1] = ARGV[i + 1]
    local ix = base .. 'ix:' .. ARGV[i]
    redis.call('ZADD', ix, stored_at, rid)
    redis.call('PEXPIRE', ix, keep)
  end
  redis.call('HSET', base .. 'items:' .. rid, unpack(pairs_))
  redis.call('PEXPIRE', base .. 'items:' .. rid, keep)
end
touch(rid)
redis.call('ZADD', base .. 'exp', now + ttl, rid)
redis.call('HSET', base .. 'size', rid, size)
local total = redis.call('INCRBY', base .. 'bytes', size)
while redis.call('ZCARD', base .. 'lru') > max_n or total > max_b do
  local oldest = redis.call('ZRANGE', base .. 'lru', 0, 0)[1]
  if oldest == nil or oldest == rid then break end
  if not drop(oldest) then redis.call('ZREM', base .. 'lru', oldest) end
  total = tonumber(redis.call('GET', base .. 'bytes') or '0')
end
return 1
"""
)

# ARGV[3] id. Returns {entry JSON, item id, item JSON, ...} or false.
_GET = (
    _COMMON
    + """
local rid = ARGV[3]
if not live(rid) then return false end
local raw = redis.call('GET', base .. 'resp:' .. rid)
if not raw then return false end
touch(rid)
local out = {raw}
local items = redis.call('HGETALL', base .. 'items:' .. rid)
for i = 1, #items do out[#out + 1] = items[i] end
return out
"""
)

# ARGV[3..] item ids. Returns {item id, item JSON, ...} for those found.
_ITEMS = (
    _COMMON
    + """
local out = {}
for i = 3, #ARGV do
  local iid = ARGV[i]
  local holders = redis.call('ZREVRANGE', base .. 'ix:' .. iid, 0, -1)
  if #holders > 0 then
    for j = 1, #holders do
      local rid = holders[j]
      if live(rid) then
        local item = redis.call('HGET', base .. 'items:' .. rid, iid)
        if item then
          touch(rid)
          out[#out + 1] = iid
          out[#out + 1] = item
          break
        end
      end
    end
  end
end
return out
"""
)

_DELETE = (
    _COMMON
    + """
local rid = ARGV[3]
if not live(rid) then drop(rid); return 0 end
drop(rid)
return 1
"""
)


# On a box without client keys every made-up Bearer token would be a tenant with its own
# share: there, all callers share one, each still reading only what its token stored.
_OPEN = "open"
_SEP = "\x1f"


class RedisResponses:
    """Stored Responses in the state Redis (see the module's docstring).

    `shared` (a box without client keys, where tokens are not identities): every caller's
    entries count against one tenant's bounds, so seventeen made-up tokens cannot each store
    their share until the `noeviction` Redis is full; ids are kept under the caller's token,
    so one still cannot read what another stored. `tenants`: how many keys may store (the
    overall bounds are divided between them).
    """

    def __init__(
        self,
        state: StateStore,
        settings: ResponsesSettings,
        *,
        shared: bool = False,
        tenants: int = 1,
    ) -> None:
        self.shared = shared
        self.state = state
        self.ttl_ms = settings.store_ttl_s * 1000
        # Each tenant's part of the overall bounds (see the module's docstring).
        parts = 1 if shared else max(1, tenants)
        self.max_per_tenant = max(
            1, min(settings.store_max_per_tenant, settings.store_max_entries // parts)
        )
        self.max_bytes_per_tenant = max(
            1, min(settings.store_max_bytes_per_tenant, settings.store_max_bytes // parts)
        )
        self._put = state.script("responses.put", _PUT)
        self._get = state.script("responses.get", _GET)
        self._items = state.script("responses.items", _ITEMS)
        self._delete = state.script("responses.delete", _DELETE)

    def _args(self, tenant: str | None) -> tuple[list[str], list[Any]]:
        base = self.state.responses_key(_OPEN if self.shared else tenant, "")
        return [base + "lru"], [base, int(time.time() * 1000)]

    def _id(self, tenant: str | None, rid: str) -> str:
        """An id as stored: the caller's own on a shared box, as it is otherwise."""
        return f"{tenant or ''}{_SEP}{rid}" if self.shared else rid

    def _own(self, tenant: str | None, stored: str) -> str:
        return stored[len(tenant or "") + 1 :] if self.shared else stored

    async def get(self, tenant: str | None, rid: str) -> Stored | None:
        keys, args = self._args(tenant)
        sid = self._id(tenant, rid)
        got = await self.state.run(
            "get a stored response", lambda: self._get(keys=keys, args=[*args, sid])
        )
        if not got:
            return None
        obj = json.loads(got[0])
        pairs = got[1:]
        items = {
            self._own(tenant, pairs[i].decode()): json.loads(pairs[i + 1])
            for i in range(0, len(pairs) - 1, 2)
        }
        return Stored(obj["response"], obj["history"], items)

    async def items(self, tenant: str | None, ids: list[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        keys, args = self._args(tenant)
        sids = [self._id(tenant, i) for i in ids]
        got = await self.state.run(
            "find referenced items", lambda: self._items(keys=keys, args=[*args, *sids])
        )
        return {
            self._own(tenant, got[i].decode()): json.loads(got[i + 1])
            for i in range(0, len(got) - 1, 2)
        }

    async def put(self, tenant: str | None, rid: str, entry: Stored) -> bool:
        """False (nothing kept, nothing dropped) when the entry alone is larger than one
        tenant may hold, as in the in-process store."""
        raw, items, size = await asyncio.to_thread(encode, entry)
        if size > self.max_bytes_per_tenant:
            return False
        keys, args = self._args(tenant)
        flat: list[Any] = [
            *args,
            self._id(tenant, rid),
            raw,
            size,
            self.ttl_ms,
            self.max_per_tenant,
            self.max_bytes_per_tenant,
        ]
        for iid, b in items.items():
            flat += [self._id(tenant, iid), b]
        await self.state.run(
            "store a response", lambda: self._put(keys=keys, args=flat), durable=True
        )
        return True

    async def delete(self, tenant: str | None, rid: str) -> bool:
        keys, args = self._args(tenant)
        sid = self._id(tenant, rid)
        n = await self.state.run(
            "delete a stored response", lambda: self._delete(keys=keys, args=[*args, sid])
        )
        return bool(n)


def build_responses(settings: Settings, state: StateStore | None) -> Responses:
    """The in-process store, or the state Redis's when `state.redis_url` is set."""
    if state is None:
        return LocalResponses(ResponseStore(settings.responses))
    keys = len(set(KeyRing(settings.server).client_digests))
    responses = RedisResponses(state, settings.responses, shared=not keys, tenants=keys)
    r = settings.responses
    if responses.max_bytes_per_tenant < r.store_max_bytes_per_tenant:
        log.info(
            "each key's share of stored responses is its part of responses.store_max_bytes",
            extra={"keys": keys, "bytes_per_key": responses.max_bytes_per_tenant},
        )
    return responses
