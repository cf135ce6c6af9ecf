"""Named local models: each its own engine, an LRU of resident ones, leases on their files.

The model pool is what the dispatcher calls "local" (its swaps are swap.py). Every request leases
the file now serving its model name for as long as it runs; a swap only moves the name to a
new, already loaded and smoke-tested file, so requests running on the old one finish there
and the old engine is closed when its last lease ends. Loads, unloads and swaps go one at a
time (one lock), which also keeps the memory check honest: nothing else allocates while it
measures. Waiting for a busy model to go idle happens without the lock, so admin calls and
the reaper never queue behind a request that cannot be served yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any, ClassVar

from ..errors import NotReady
from ..schemas import ChatRequest
from ..settings import LocalSettings
from ..trusted_keys import load_public_key
from . import memory
from .backend import LocalBackend
from .engine import Engine
from .entry import Entry, Loaded, unavailable
from .memory import InsufficientMemory, ModelFileError
from .model import embedded_model_path
from .route import ModelRoute
from .swap import Swaps
from .verify import file_sha256

log = logging.getLogger(__name__)

# After a load fails, requests for that model get the same 503 for this long instead of each
# one re-parsing the GGUF (under the pool's lock) only to fail again. Short, and no setting:
# a file fixed on disk is picked up within half a minute, an admin swap at once.
FAILED_RETRY_S = 30.0


class ModelPool(Swaps):
    """The local backend the dispatcher sees: the default model plus `local.models`; its
    swaps, canaries and rollbacks are swap.Swaps."""

    SMOKE_PROMPT: ClassVar[str] = "Say OK."

    def __init__(self, settings: LocalSettings, *, metrics: Any = None) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        self._metrics = metrics
        self._lock = asyncio.Lock()  # loads, unloads and swaps, one at a time
        self._idle = asyncio.Event()  # set (and replaced) whenever a lease ends
        self._reaper: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._started = False
        self.entries: dict[str, Entry] = {settings.model_name: Entry.default(settings)}
        for m in settings.models:
            self.entries[m.name] = Entry.named(m, settings)
        self._trusted = [load_public_key(k) for k in settings.trusted_keys]

    @property
    def names(self) -> list[str]:
        return list(self.entries)

    @property
    def default(self) -> Entry:
        return self.entries[self.model_name]

    # -- what the rest of the gateway reads ------------------------------------------------

    def _live(self) -> list[LocalBackend]:
        files = [f for e in self.entries.values() for f in (e.current, e.canary)]
        return [f.backend for f in files if f is not None]

    @property
    def ready(self) -> bool:
        """The default model loaded once: from then on every name can be (re)loaded."""
        return self._started

    @property
    def engine(self) -> Engine | None:
        cur = self.default.current
        return cur.backend.engine if cur is not None else None

    @property
    def n_ctx(self) -> int:
        cur = self.default.current
        return cur.backend.n_ctx if cur is not None else self.settings.n_ctx

    @property
    def queue_depth(self) -> int:
        return sum(b.queue_depth for b in self._live())

    @property
    def in_flight(self) -> int:
        return sum(b.in_flight for b in self._live())

    @property
    def slots_busy(self) -> int:
        return self.in_flight

    def has_room(self) -> bool:
        cur = self.default.current
        return cur.backend.has_room() if cur is not None else True

    def resident(self) -> list[str]:
        return [e.name for e in self.entries.values() if e.current is not None]

    def describe(self) -> list[dict[str, Any]]:
        return [e.describe() for e in self.entries.values()]

    # -- lifecycle ---------------------------------------------------------------------------

    async def load(self) -> None:
        """Start-up: the default model now, the named ones on first use."""
        entry = self.default
        if not entry.settings.model_path:
            entry.path = await asyncio.to_thread(embedded_model_path)
        await self._ensure(entry, deadline=None)
        self._started = True
        if len(self.entries) > 1:
            self._reaper = asyncio.create_task(self._reap())

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        # A load in its thread cannot be stopped: cancelling lets it run to its end and close
        # the engine it made (see _open); a load that finished first left it in `current`.
        loads = [e.loading for e in self.entries.values() if e.loading is not None]
        for task in loads:
            task.cancel()
        for task in loads:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for entry in self.entries.values():
            for f in (entry.current, entry.canary):
                if f is not None:
                    await f.backend.close()
            entry.current = entry.canary = None
        # Swapped-out files whose last request just ended: let them finish closing.
        await asyncio.gather(*self._retiring, return_exceptions=True)

    # -- serving -------------------------------------------------------------------------------

    def entry_for(self, model: str | None) -> Entry:
        if model is None or model not in self.entries:
            return self.default  # "auto", "local", or a rule without `model:`
        return self.entries[model]

    def route(self, model: str | None) -> ModelRoute:
        """A per-request backend for the named model (None: the default)."""
        return ModelRoute(self, self.entry_for(model), metrics=self._metrics)

    async def acquire(self, entry: Entry) -> Loaded:
        """Lease the file serving `entry`, loading it first if needed (bounded wait)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.load_timeout_s
        while True:
            cur = entry.current
            if cur is not None:
                can = entry.canary
                if can is not None and random.random() * 100 < entry.canary_percent:
                    cur = can  # a traffic split, not a secret: random is right
                cur.leases += 1
                entry.last_used = time.monotonic()
                return cur
            await self._ensure(entry, deadline=deadline)

    def release(self, loaded: Loaded, entry: Entry) -> None:
        loaded.leases -= 1
        entry.last_used = time.monotonic()
        if loaded.retired and loaded.leases == 0:
            self._close_later(loaded)
        idle, self._idle = self._idle, asyncio.Event()
        idle.set()

    # -- residency ---------------------------------------------------------------------------

    async def _ensure(self, entry: Entry, *, deadline: float | None) -> None:
        """Make `entry` resident; many waiters share one load."""
        task = entry.loading
        if task is None and entry.failure is not None:
            left = entry.retry_at - time.monotonic()
            if left > 0:  # failed a moment ago: the same answer, without trying again yet
                raise unavailable(entry.name, entry.failure, retry_after=left)
        if task is None:
            task = entry.loading = asyncio.create_task(self._load_entry(entry, deadline))
            task.add_done_callback(lambda t: _loaded(entry, t))
        timeout = (
            None if deadline is None else max(0.0, deadline - asyncio.get_running_loop().time())
        )
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise NotReady(
                f"model {entry.name!r} is still loading; retry shortly", code="model_loading"
            ) from None
        except (InsufficientMemory, ModelFileError, OSError, ValueError, RuntimeError) as exc:
            pause = entry.retry_at - time.monotonic() if exc is entry.failure else None
            raise unavailable(entry.name, exc, retry_after=pause) from None

    async def _load_entry(self, entry: Entry, deadline: float | None) -> Loaded:
        sized: tuple[Path, memory.Estimate] | None = None
        while True:
            async with self._lock:
                if entry.current is not None:
                    return entry.current
                s = entry.settings
                try:
                    # Every check comes before anything is unloaded or allocated: a model that
                    # cannot fit never costs the ones already serving.
                    if sized is None or sized[0] != entry.path:
                        est = await asyncio.to_thread(
                            memory.estimate, entry.path, n_ctx=s.n_ctx, parallel=s.parallel
                        )
                        memory.check_budget(est, budget=entry.budget, name=entry.name)
                        sized = (entry.path, est)
                    est = sized[1]
                    if await self._make_room(entry, est):
                        entry.state = "loading"
                        loaded = await self._open(entry, entry.path, expect=entry.sha256, est=est)
                        entry.serve(loaded)
                        return loaded
                except Exception as exc:
                    entry.state = "failed"
                    entry.last_error = str(exc)
                    entry.failure, entry.retry_at = exc, time.monotonic() + FAILED_RETRY_S
                    log.error("model load failed", extra={"model": entry.name, "error": str(exc)})
                    raise
                released = self._idle
            # Busy, not broken (the state stays what it was): TimeoutError past the deadline.
            await self._wait_for_release(released, deadline)

    async def _make_room(self, entry: Entry, est: memory.Estimate) -> bool:
        """Under the lock, for `entry` to become resident: unload the least recently used idle
        models one more needs under max_loaded, once the memory check (counting what those
        unloads free) says it will fit. False when too many resident models are busy: the
        caller waits for a lease to end, without the lock, and asks again."""
        excess = len(self.resident()) + 1 - self.settings.max_loaded
        idle = sorted(
            (
                e
                for e in self.entries.values()
                if e is not entry and e.current is not None and not e.busy
            ),
            key=lambda e: e.last_used,
        )
        if excess > len(idle):
            return False
        victims = idle[: max(0, excess)]
        freed = sum(v.current.estimate.total for v in victims if v.current is not None)
        memory.check_room(est, name=entry.name, freed=freed)
        # Every victim leaves before the first await: a request arriving while they close
        # finds its name unloaded and queues for a reload, never leasing a file being closed.
        closing = [f for v in victims for f in self._detach(v, why="lru")]
        for f in closing:
            await f.backend.close()
        return True

    async def _wait_for_release(self, released: asyncio.Event, deadline: float | None) -> None:
        """Until a lease ends (`released`, taken under the lock) or a second passes; raise
        TimeoutError once `deadline` is past."""
        left = None if deadline is None else deadline - asyncio.get_running_loop().time()
        if left is not None and left <= 0:
            raise TimeoutError
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), 1.0 if left is None else min(left, 1.0))

    def _detach(self, entry: Entry, *, why: str) -> list[Loaded]:
        """Take `entry` out of memory's bookkeeping at once; the files to close after."""
        cur, entry.current = entry.current, None
        entry.state = "unloaded"
        can, entry.canary = entry.canary, None  # a trial ends when its model leaves memory
        if cur is not None:
            log.info("model unloaded", extra={"model": entry.name, "why": why})
            if self._metrics is not None:
                self._metrics.model_unloads.labels(why).inc()
        return [f for f in (can, cur) if f is not None]

    async def _unload(self, entry: Entry, *, why: str) -> None:
        for f in self._detach(entry, why=why):
            await f.backend.close()

    async def _open(
        self, entry: Entry, path: Path, *, expect: str | None, est: memory.Estimate | None = None
    ) -> Loaded:
        """Load and hash (compared with `expect` when given); the memory check first unless
        the caller made it (`est`). Models already loaded stay."""
        s = entry.settings.model_copy(update={"model_path": path})
        if est is None:
            est = await asyncio.to_thread(memory.estimate, path, n_ctx=s.n_ctx, parallel=s.parallel)
            memory.check(est, budget=entry.budget, name=entry.name)
        # Hashed at every load, reloads after a keep-alive unload too: the digest reported
        # for this file (x-gateway-model-file, /admin/models) is of the bytes read now.
        digest = await asyncio.to_thread(file_sha256, path)
        if expect is not None and digest != expect:
            raise ModelFileError(
                f"{path.name} changed on disk: it no longer matches sha256 {expect[:12]}"
            )
        backend = LocalBackend(s, metrics=self._metrics)
        backend.model_name = entry.name
        load = asyncio.ensure_future(backend.load())
        try:
            await asyncio.shield(load)
        except asyncio.CancelledError:
            # Cancelled (shutdown, or a swap's client gone): the load in its thread goes on
            # regardless, so let it finish and close the engine it made, then stop.
            with contextlib.suppress(Exception):
                await load
            await backend.close()
            raise
        return Loaded(backend=backend, path=path, sha256=digest, estimate=est)

    async def _reap(self) -> None:
        """Unload named models idle longer than keep_alive_s (the default one stays)."""
        keep = self.settings.keep_alive_s
        while True:
            await asyncio.sleep(min(keep / 4, 5.0))
            now = time.monotonic()
            for entry in list(self.entries.values()):
                cur = entry.current
                if (
                    entry is self.default
                    or cur is None
                    or entry.busy
                    or entry.swapping
                    or now - entry.last_used < keep
                ):
                    continue
                async with self._lock:
                    if entry.current is cur and not entry.busy:
                        await self._unload(entry, why="keep_alive")

    def _close_later(self, loaded: Loaded) -> None:
        task = asyncio.create_task(loaded.backend.close())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _smoke(self, loaded: Loaded) -> None:
        req = ChatRequest.model_validate(
            {
                "model": loaded.backend.model_name,
                "messages": [{"role": "user", "content": self.SMOKE_PROMPT}],
                "max_tokens": 4,
                "temperature": 0,
            }
        )
        done = await asyncio.wait_for(loaded.backend.complete(req, "chat"), 60)
        if not done.obj.get("choices"):
            raise RuntimeError("no answer")


def _loaded(entry: Entry, task: asyncio.Task[Loaded]) -> None:
    entry.loading = None
    if not task.cancelled():
        task.exception()  # retrieved here: waiters that timed out never read it
