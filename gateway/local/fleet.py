"""Named local models: each its own engine, an LRU of resident ones, verified atomic swaps.

The fleet is what the dispatcher calls "local". Every request leases the file now serving
its model name for as long as it runs; a swap only moves the name to a new, already loaded
and smoke-tested file, so requests running on the old one finish there and the old engine is
closed when its last lease ends. Loads, unloads and swaps go one at a time (one lock), which
also keeps the memory check honest: nothing else allocates while it measures. Waiting for a
busy model to go idle happens without the lock, so admin calls and the reaper never queue
behind a request that cannot be served yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from ..backends.base import Chunk, Completion, Endpoint, Kind
from ..errors import GatewayError, ModelNotFound, NotReady
from ..schemas import AnyRequest, ChatRequest
from ..settings import LocalSettings
from . import memory
from .backend import LocalBackend
from .engine import Engine
from .memory import InsufficientMemory, ModelFileError
from .model import embedded_model_path
from .verify import (
    NotARegularFile,
    SignatureError,
    file_sha256,
    load_public_key,
    verify_signature,
)

log = logging.getLogger(__name__)

MIB = memory.MIB
State = Literal["unloaded", "loading", "loaded", "failed"]

# After a load fails, requests for that model get the same 503 for this long instead of each
# one re-parsing the GGUF (under the fleet's lock) only to fail again. Short, and no setting:
# a file fixed on disk is picked up within half a minute, an admin swap at once.
FAILED_RETRY_S = 30.0


class ModelRefused(GatewayError):
    """An admin model change failed a check; the old file keeps serving."""

    status = 422
    type = "invalid_request_error"
    default_code = "model_refused"


class ModelPathRefused(ModelRefused):
    """The path is no file a model could be read from (a FIFO, a device, a directory)."""

    status = 400


class ModelConflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    default_code = "conflict"


class ModelUnavailable(GatewayError):
    """A request's model cannot be made resident (memory, or it failed to load)."""

    status = 503
    type = "service_unavailable"
    default_code = "model_unavailable"


@dataclass(eq=False)
class Loaded:
    """One loaded file: its engine and the requests holding it."""

    backend: LocalBackend
    path: Path
    sha256: str
    estimate: memory.Estimate
    loaded_at: float = field(default_factory=time.time)
    leases: int = 0
    retired: bool = False  # swapped out: closed when the last lease ends

    @property
    def file_id(self) -> str:
        return self.sha256[:12]


@dataclass(eq=False)
class Entry:
    """One model name and the file serving it."""

    name: str
    settings: LocalSettings  # the per-model copy: its path, context and slots
    budget: int | None
    path: Path
    sha256: str | None = None  # known once loaded or swapped in
    current: Loaded | None = None
    previous: tuple[Path, str] | None = None  # what rollback returns to
    state: State = "unloaded"
    last_error: str | None = None
    failure: Exception | None = None  # why the last load failed, answered until retry_at
    retry_at: float = 0.0  # time.monotonic() after which a failed load is tried again
    last_used: float = field(default_factory=time.monotonic)
    loading: asyncio.Task[Loaded] | None = None
    swapping: bool = False
    canary: Loaded | None = None  # a new file on trial, taking canary_percent of requests
    canary_percent: int = 0

    @property
    def busy(self) -> bool:
        return any(f is not None and f.leases for f in (self.current, self.canary))

    def describe(self) -> dict[str, Any]:
        cur = self.current
        can = self.canary
        return {
            "name": self.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "state": self.state,
            "loaded_at": cur.loaded_at if cur is not None else None,
            "last_error": self.last_error,
            "n_ctx": self.settings.n_ctx,
            "parallel": self.settings.parallel,
            "in_flight": cur.leases if cur is not None else 0,
            "estimate_mib": round(cur.estimate.total / MIB, 1) if cur is not None else None,
            "memory_budget_mib": self.budget // MIB if self.budget else None,
            "previous": (
                {"path": str(self.previous[0]), "sha256": self.previous[1]}
                if self.previous
                else None
            ),
            "canary": (
                {"path": str(can.path), "sha256": can.sha256, "percent": self.canary_percent}
                if can is not None
                else None
            ),
        }


class Fleet:
    """The local backend the dispatcher sees: the default model plus `local.models`."""

    kind: Kind = "local"
    SMOKE_PROMPT: ClassVar[str] = "Say OK."

    def __init__(self, settings: LocalSettings, *, metrics: Any = None) -> None:
        self.settings = settings
        self.name = "local"
        self.model_name = settings.model_name
        self._metrics = metrics
        self._lock = asyncio.Lock()  # loads, unloads and swaps, one at a time
        self._idle = asyncio.Event()  # set (and replaced) whenever a lease ends
        self._reaper: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._started = False
        budget = settings.memory_budget_mib
        self.entries: dict[str, Entry] = {
            settings.model_name: Entry(
                name=settings.model_name,
                settings=settings,
                budget=budget * MIB if budget else None,
                path=settings.model_path or Path(),  # the embedded file, found at load
            )
        }
        for m in settings.models:
            own = settings.model_copy(
                update={
                    "model_path": m.path,
                    "model_name": m.name,
                    "n_ctx": m.n_ctx or settings.n_ctx,
                    "parallel": m.parallel or settings.parallel,
                    "models": [],
                }
            )
            self.entries[m.name] = Entry(
                name=m.name,
                settings=own,
                budget=m.memory_budget_mib * MIB if m.memory_budget_mib else None,
                path=m.path,
            )
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

    async def probe(self, *, deep: bool = False) -> bool | None:
        return self.ready

    # -- serving -------------------------------------------------------------------------------

    def entry_for(self, model: str | None) -> Entry:
        if model is None or model not in self.entries:
            return self.default  # "auto", "local", or a rule without `model:`
        return self.entries[model]

    def route(self, model: str | None) -> ModelRoute:
        """A per-request backend for the named model (None: the default)."""
        return ModelRoute(self, self.entry_for(model))

    async def complete(self, req: AnyRequest, endpoint: Endpoint) -> Completion:
        return await self.route(None).complete(req, endpoint)

    def stream(self, req: AnyRequest, endpoint: Endpoint) -> AsyncGenerator[Chunk, None]:
        return self.route(None).stream(req, endpoint)

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
                raise _unavailable(entry.name, entry.failure, retry_after=left)
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
            raise _unavailable(entry.name, exc, retry_after=pause) from None

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
                        entry.current, entry.sha256 = loaded, loaded.sha256
                        entry.state, entry.last_error = "loaded", None
                        entry.failure, entry.retry_at = None, 0.0
                        entry.last_used = time.monotonic()
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

    # -- swap and rollback ---------------------------------------------------------------------

    async def swap(
        self,
        name: str,
        path: Path,
        sha256: str,
        *,
        signature: str | None = None,
        canary_percent: int | None = None,
    ) -> dict[str, Any]:
        """Verify, check memory, load beside the old file, smoke-test, then move the name
        (or, with `canary_percent`, send that share of its requests to the new file)."""
        entry = self._entry(name)
        if canary_percent and entry.current is None:
            raise ModelConflict(
                f"{name!r} is not loaded: a canary runs beside a loaded file", code="not_loaded"
            )
        if entry.swapping:
            raise ModelConflict(f"a swap of {name!r} is already running", code="swap_in_progress")
        entry.swapping = True
        try:
            await self._swap(entry, path, sha256.lower(), signature, canary_percent)
        except ModelRefused as exc:
            entry.last_error = exc.message
            log.warning("model swap refused", extra={"model": name, "error": exc.message})
            self._count("refused")
            raise
        finally:
            entry.swapping = False
        if canary_percent:
            self._count("canary")
        else:
            self._count("rolled_back" if signature is _TRUSTED else "swapped")
        return entry.describe()

    async def promote(self, name: str) -> dict[str, Any]:
        """The canary takes all of the name's traffic; the file it replaces becomes previous."""
        entry = self._entry(name)
        async with self._lock:
            new = entry.canary
            if new is None:
                raise ModelConflict(f"{name!r} has no canary to promote", code="no_canary")
            entry.canary, entry.canary_percent = None, 0
            self._install(entry, new)
        self._count("promoted")
        return entry.describe()

    def _entry(self, name: str) -> Entry:
        entry = self.entries.get(name)
        if entry is None:
            raise ModelNotFound(f"no local model named {name!r}", param="name")
        return entry

    def _install(self, entry: Entry, new: Loaded) -> None:
        """The swap itself: one assignment. Leases taken before it hold the old file."""
        old = entry.current
        entry.current = new
        if entry.sha256 is not None and (entry.path, entry.sha256) != (new.path, new.sha256):
            entry.previous = (entry.path, entry.sha256)
        entry.path, entry.sha256 = new.path, new.sha256
        entry.state, entry.last_error = "loaded", None
        entry.failure, entry.retry_at = None, 0.0
        entry.last_used = time.monotonic()
        if old is not None:
            self._retire(old)

    def _retire(self, loaded: Loaded) -> None:
        loaded.retired = True
        if loaded.leases == 0:
            self._close_later(loaded)

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.model_swaps.labels(result).inc()

    async def rollback(self, name: str) -> dict[str, Any]:
        entry = self._entry(name)
        if entry.canary is not None:
            # On trial only: ending the trial is the way back; the old file never stopped.
            async with self._lock:
                can, entry.canary, entry.canary_percent = entry.canary, None, 0
                if can is not None:
                    self._retire(can)
            self._count("rolled_back")
            return entry.describe()
        if entry.previous is None:
            raise ModelConflict(f"{name!r} has no previous file to return to", code="no_previous")
        path, digest = entry.previous
        # The previous file passed every check when it came in; its digest still guards it.
        return await self.swap(name, path, digest, signature=_TRUSTED)

    async def _swap(
        self,
        entry: Entry,
        path: Path,
        sha256: str,
        signature: str | None,
        canary_percent: int | None = None,
    ) -> None:
        try:
            # A regular file only (checked in the thread too: a FIFO or /dev/zero would hold
            # it forever).
            digest = await asyncio.to_thread(file_sha256, path)
        except NotARegularFile:
            raise ModelPathRefused(
                f"{path} is not a regular file: a model is read from a file",
                code="not_a_file",
                param="path",
            ) from None
        except OSError as exc:
            raise ModelRefused(
                f"cannot read {path}: {exc.strerror}", code="file_not_found", param="path"
            ) from None
        if digest != sha256:
            # Never the digest the file has: that would hash any readable file for the caller.
            raise ModelRefused(
                f"sha256 mismatch: {path.name} does not match the given sha256 {sha256}",
                code="hash_mismatch",
                param="sha256",
            )
        if signature is not _TRUSTED:
            if signature is None and self._trusted:
                raise ModelRefused(
                    "a signature is required: local.trusted_keys is set",
                    code="signature_required",
                    param="signature",
                )
            if signature is not None:
                if not self._trusted:
                    raise ModelRefused(
                        "a signature was given but local.trusted_keys is empty",
                        code="signature_untrusted",
                        param="signature",
                    )
                try:
                    verify_signature(digest, signature, self._trusted)
                except SignatureError as exc:
                    raise ModelRefused(
                        str(exc), code="signature_invalid", param="signature"
                    ) from None
        deadline = asyncio.get_running_loop().time() + self.settings.load_timeout_s
        sized: memory.Estimate | None = None
        while True:
            async with self._lock:
                if canary_percent and entry.current is None:
                    # Unloaded while the file was hashed: a trial needs a file beside it.
                    raise ModelConflict(
                        f"{entry.name!r} was unloaded before its canary could start: a canary "
                        "runs beside a loaded file; load the model and try again",
                        code="not_loaded",
                    )
                new: Loaded | None = None
                try:
                    if entry.current is not None:
                        # Beside the file it replaces: no more models resident than before.
                        new = await self._open(entry, path, expect=digest)
                    else:
                        # Not resident: the new file takes a place under max_loaded, as any
                        # load does.
                        if sized is None:
                            s = entry.settings
                            sized = await asyncio.to_thread(
                                memory.estimate, path, n_ctx=s.n_ctx, parallel=s.parallel
                            )
                            memory.check_budget(sized, budget=entry.budget, name=entry.name)
                        if await self._make_room(entry, sized):
                            new = await self._open(entry, path, expect=digest, est=sized)
                except InsufficientMemory as exc:
                    raise ModelRefused(str(exc), code="insufficient_memory") from None
                except (ModelFileError, ValueError, RuntimeError, OSError) as exc:
                    raise ModelRefused(
                        f"{path.name} could not be loaded: {exc}", code="invalid_model_file"
                    ) from None
                if new is not None:
                    await self._put_in_service(entry, new, canary_percent)
                    break
                released = self._idle
            try:
                await self._wait_for_release(released, deadline)
            except TimeoutError:
                raise ModelUnavailable(
                    f"every resident model is busy: no room to load {entry.name!r} "
                    f"(local.max_loaded is {self.settings.max_loaded}); retry shortly",
                    code="no_room",
                ) from None
        log.info(
            "model swapped", extra={"model": entry.name, "file": path.name, "sha": digest[:12]}
        )

    async def _put_in_service(self, entry: Entry, new: Loaded, canary_percent: int | None) -> None:
        """Under the lock: smoke-test the new file, then make it the canary or the current."""
        try:
            await self._smoke(new)
        except Exception as exc:
            await new.backend.close()
            raise ModelRefused(
                f"{new.path.name} failed its smoke generation: {exc}", code="smoke_failed"
            ) from None
        if canary_percent and entry.current is not None:
            old_trial = entry.canary
            entry.canary, entry.canary_percent = new, canary_percent
            if old_trial is not None:
                self._retire(old_trial)
        else:
            entry.canary, old_trial = None, entry.canary
            if old_trial is not None:
                self._retire(old_trial)
            self._install(entry, new)

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


def _unavailable(name: str, exc: Exception, *, retry_after: float | None) -> ModelUnavailable:
    """The 503 a request gets when its model could not be loaded."""
    headers = {"Retry-After": str(math.ceil(retry_after))} if retry_after else None
    if isinstance(exc, InsufficientMemory):
        return ModelUnavailable(str(exc), code="insufficient_memory", headers=headers)
    return ModelUnavailable(f"model {name!r} could not be loaded: {exc}", headers=headers)


# A sentinel for rollback: the file was verified when it first came in.
_TRUSTED = "\x00trusted"


class ModelRoute:
    """One request's local backend: leases its model's current file for the whole answer."""

    kind: Kind = "local"
    name = "local"

    def __init__(self, fleet: Fleet, entry: Entry) -> None:
        self.fleet = fleet
        self.entry = entry
        self.model_name = entry.name
        self.served_by: str | None = None  # the file's sha256 prefix, once leased

    async def complete(self, req: AnyRequest, endpoint: Endpoint) -> Completion:
        loaded = await self._lease()
        try:
            return await loaded.backend.complete(req, endpoint)
        finally:
            self.fleet.release(loaded, self.entry)

    async def _lease(self) -> Loaded:
        loaded = await self.fleet.acquire(self.entry)
        self.served_by = loaded.file_id
        metrics = self.fleet._metrics
        if metrics is not None:
            metrics.local_file_requests.labels(self.entry.name, loaded.file_id).inc()
        return loaded

    async def stream(self, req: AnyRequest, endpoint: Endpoint) -> AsyncGenerator[Chunk, None]:
        loaded = await self._lease()
        try:
            chunks = loaded.backend.stream(req, endpoint)
            try:
                async for chunk in chunks:
                    yield chunk
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
        finally:
            self.fleet.release(loaded, self.entry)

    async def probe(self, *, deep: bool = False) -> bool | None:
        return self.fleet.ready

    async def close(self) -> None:
        return None
