"""Stored responses (`store`), so `previous_response_id` continues a conversation on the box.

In process memory: bounded in entries and bytes, in all and per tenant, each entry expiring
`responses.store_ttl_s` after it was stored. A tenant over its own bound loses its own least
recently used entries, never another tenant's: one API key filling its share (say with long
conversations) pushes out nothing of anyone else. Only when the store as a whole is over its
bound does the least recently used entry overall go. A tenant sees only its own entries:
another tenant's id is as unknown as a made-up one. Several gateway processes do not share entries
(a follow-up must reach the process that answered; README says so).

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
from dataclasses import dataclass
from typing import Any

from ..settings import ResponsesSettings

_Key = tuple[str, str]  # (tenant, response id)


@dataclass(frozen=True, slots=True)
class Stored:
    response: dict[str, Any]  # the Response object as the client got it
    history: list[dict[str, Any]]  # the conversation as chat messages, the answer included


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
        # Least recently used first; the value is (expiry, JSON bytes).
        self._data: OrderedDict[_Key, tuple[float, bytes]] = OrderedDict()
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
        raw = json.dumps(
            {"response": entry.response, "history": entry.history}, separators=(",", ":")
        ).encode()
        if len(raw) > self.max_bytes_per_tenant:  # <= max_bytes (settings check it)
            return False
        key = (tenant or "", rid)
        with self._lock:
            self._put(key, raw)
        return True

    def _put(self, key: _Key, raw: bytes) -> None:
        tenant, rid = key
        self._drop(key)
        self._data[key] = (self._clock() + self.ttl_s, raw)
        self.bytes += len(raw)
        mine = self._per_tenant.setdefault(tenant, OrderedDict())
        mine[rid] = None
        self._tenant_bytes[tenant] = self._tenant_bytes.get(tenant, 0) + len(raw)
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
            raw = self._live((tenant or "", rid))
        if raw is None:
            return None
        obj = json.loads(raw)
        return Stored(obj["response"], obj["history"])

    def delete(self, tenant: str | None, rid: str) -> bool:
        key = (tenant or "", rid)
        with self._lock:
            return self._live(key) is not None and self._drop(key)

    def _live(self, key: _Key) -> bytes | None:
        """The entry's bytes, now the most recently used; None when absent or expired."""
        item = self._data.get(key)
        if item is None:
            return None
        expires, raw = item
        if expires < self._clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        self._per_tenant[key[0]].move_to_end(key[1])
        return raw

    def _drop(self, key: _Key) -> bool:
        item = self._data.pop(key, None)
        if item is None:
            return False
        self.bytes -= len(item[1])
        tenant = key[0]
        self._tenant_bytes[tenant] -= len(item[1])
        mine = self._per_tenant[tenant]
        del mine[key[1]]
        if not mine:
            del self._per_tenant[tenant]
            del self._tenant_bytes[tenant]
        return True
