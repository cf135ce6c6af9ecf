"""Stored responses (`store`), so `previous_response_id` continues a conversation on the box.

In process memory: bounded in entries and bytes, in all and per tenant, each entry expiring
`responses.store_ttl_s` after it was stored. A tenant over its own bound loses its own least
recently used entries, never another tenant's: one API key filling its share (say with long
conversations) pushes out nothing of anyone else. Only when the store as a whole is over its
bound does the least recently used entry overall go. A tenant sees only its own entries:
another tenant's id is as unknown as a made-up one. This is one process's store: replicas share
stored responses through the state Redis instead (`state.redis_url`, gateway/responses/stores.py).

Each entry also keeps its items by id (the response's output items and the input items that
carry an id), so that an `item_reference` input item finds the item it names without decoding
a whole conversation: an index per tenant maps an item id to the entries holding it (a
referenced item is an input item of the response that referenced it too, as on OpenAI), and
an item lives as long as one of them does. The item bytes count towards the entry's size.

Entries are JSON bytes: their size is known exactly, and what comes back is a copy nobody
else holds. Encoding a long conversation takes milliseconds, so the handler calls the store
off the event loop; a lock keeps the calls of several threads apart.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..settings import ResponsesSettings

_Key = tuple[str, str]  # (tenant, response id)


@dataclass(frozen=True, slots=True)
class Stored:
    response: dict[str, Any]  # the Response object as the client got it
    history: list[dict[str, Any]]  # the conversation as chat messages, the answer included
    # Items an `item_reference` may name, by id: output items and input items with an id.
    items: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class _Entry:
    expires: float
    raw: bytes  # {"response", "history"} as JSON
    items: dict[str, bytes]  # item id -> the item as JSON
    size: int  # raw and items together: what the entry costs its tenant


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def encode(entry: Stored) -> tuple[bytes, dict[str, bytes], int]:
    """An entry as both stores keep and size it (this one and the state Redis's): its JSON,
    its items' JSON by id, and what it costs its tenant (items counted with their ids)."""
    raw = _dump({"response": entry.response, "history": entry.history})
    items = {iid: _dump(item) for iid, item in entry.items.items()}
    return raw, items, len(raw) + sum(len(iid) + len(b) for iid, b in items.items())


class ResponseStore:
    def __init__(
        self, settings: ResponsesSettings, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = settings.store_ttl_s
        self.max_entries = settings.store_max_entries
        self.max_per_tenant = settings.store_max_per_tenant
        self.max_bytes = settings.store_max_bytes
        self.max_bytes_per_tenant = settings.store_max_bytes_per_tenant
        self.bytes = 0
        self._clock = clock
        # Least recently used first.
        self._data: OrderedDict[_Key, _Entry] = OrderedDict()
        # (tenant, item id) -> ids of the responses holding that item, the latest last.
        self._items: dict[_Key, list[str]] = {}
        # Per tenant: its ids, least recently used first, and the bytes they hold.
        self._per_tenant: dict[str, OrderedDict[str, None]] = {}
        self._tenant_bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def tenant_bytes(self, tenant: str | None) -> int:
        return self._tenant_bytes.get(tenant or "", 0)

    def put(self, tenant: str | None, rid: str, entry: Stored) -> bool:
        """Keep an entry; False (nothing kept, nothing dropped) when it alone is larger than one
        tenant may hold: storing it would push out all of the tenant's other entries."""
        raw, items, size = encode(entry)
        if size > self.max_bytes_per_tenant:  # <= max_bytes (settings check it)
            return False
        key = (tenant or "", rid)
        with self._lock:
            self._put(key, _Entry(0.0, raw, items, size))
        return True

    def _put(self, key: _Key, entry: _Entry) -> None:
        tenant, rid = key
        self._drop(key)
        entry.expires = self._clock() + self.ttl_s
        self._data[key] = entry
        for iid in entry.items:
            self._items.setdefault((tenant, iid), []).append(rid)
        self.bytes += entry.size
        mine = self._per_tenant.setdefault(tenant, OrderedDict())
        mine[rid] = None
        self._tenant_bytes[tenant] = self._tenant_bytes.get(tenant, 0) + entry.size
        # Over its own bounds, the tenant pays from its own least recently used entries (never
        # the new one: it fits alone, put() made sure).
        while len(mine) > self.max_per_tenant or (
            self._tenant_bytes[tenant] > self.max_bytes_per_tenant
        ):
            self._drop((tenant, next(iter(mine))))
        # The store as a whole stays bounded too (every tenant within its share, and yet too
        # many of them): then the least recently used overall goes.
        while len(self._data) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._data)))

    def get(self, tenant: str | None, rid: str) -> Stored | None:
        with self._lock:
            entry = self._live((tenant or "", rid))
        if entry is None:
            return None
        obj = json.loads(entry.raw)
        items = {iid: json.loads(b) for iid, b in entry.items.items()}
        return Stored(obj["response"], obj["history"], items)

    def items(self, tenant: str | None, ids: list[str]) -> dict[str, dict[str, Any]]:
        """The items with these ids among the tenant's live responses (the ids found only):
        another tenant's item is as unknown as a made-up id."""
        t = tenant or ""
        found: dict[str, bytes] = {}
        with self._lock:
            for iid in ids:
                if iid in found:
                    continue
                for rid in reversed(list(self._items.get((t, iid), ()))):
                    entry = self._live((t, rid))  # may drop an expired holder: a copy of the list
                    if entry is not None:
                        found[iid] = entry.items[iid]
                        break
        return {iid: json.loads(b) for iid, b in found.items()}

    def delete(self, tenant: str | None, rid: str) -> bool:
        key = (tenant or "", rid)
        with self._lock:
            return self._live(key) is not None and self._drop(key)

    def _live(self, key: _Key) -> _Entry | None:
        """The entry, now the most recently used; None when absent or expired."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires < self._clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        self._per_tenant[key[0]].move_to_end(key[1])
        return entry

    def _drop(self, key: _Key) -> bool:
        entry = self._data.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        tenant = key[0]
        self._tenant_bytes[tenant] -= entry.size
        for iid in entry.items:
            holders = self._items[(tenant, iid)]
            holders.remove(key[1])
            if not holders:
                del self._items[(tenant, iid)]
        mine = self._per_tenant[tenant]
        del mine[key[1]]
        if not mine:
            del self._per_tenant[tenant]
            del self._tenant_bytes[tenant]
        return True
