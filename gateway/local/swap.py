"""Verified swaps of a model name's file: replace, canary, promote, roll back.

A swap never touches the file now serving: the new file is hashed (and its signature checked),
sized, loaded beside the old one and smoke-tested, and only then does the name move to it, in
one assignment. Requests that leased the old file finish there; it closes after its last lease.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..errors import GatewayError, ModelNotFound
from ..settings import LocalSettings
from . import memory
from .entry import Entry, Loaded, ModelUnavailable
from .memory import InsufficientMemory, ModelFileError
from .verify import NotARegularFile, SignatureError, file_sha256, verify_signature

log = logging.getLogger(__name__)

# A sentinel for rollback: the file was verified when it first came in.
_TRUSTED = "\x00trusted"


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


class Swaps(ABC):
    """Admin changes to the files behind the model pool's names, one swap per name at a time.

    The model pool (pool.py) is made of this: what a swap needs of it, its lock, room under
    max_loaded, loads, closes and the smoke test, are declared here and written there."""

    settings: LocalSettings
    entries: dict[str, Entry]
    _lock: asyncio.Lock  # loads, unloads and swaps, one at a time
    _idle: asyncio.Event  # replaced whenever a lease ends: read it under the lock
    _trusted: list[object]  # Ed25519 keys from local.trusted_keys
    _metrics: Any

    @abstractmethod
    async def _open(
        self, entry: Entry, path: Path, *, expect: str | None, est: memory.Estimate | None = None
    ) -> Loaded: ...

    @abstractmethod
    async def _make_room(self, entry: Entry, est: memory.Estimate) -> bool: ...

    @abstractmethod
    async def _wait_for_release(self, released: asyncio.Event, deadline: float | None) -> None: ...

    @abstractmethod
    def _close_later(self, loaded: Loaded) -> None: ...

    @abstractmethod
    async def _smoke(self, loaded: Loaded) -> None: ...

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

    def _entry(self, name: str) -> Entry:
        entry = self.entries.get(name)
        if entry is None:
            raise ModelNotFound(f"no local model named {name!r}", param="name")
        return entry

    def _install(self, entry: Entry, new: Loaded) -> None:
        """The swap itself: one assignment. Leases taken before it hold the old file."""
        old = entry.current
        if entry.sha256 is not None and (entry.path, entry.sha256) != (new.path, new.sha256):
            entry.previous = (entry.path, entry.sha256)
        entry.serve(new)
        if old is not None:
            self._retire(old)

    def _retire(self, loaded: Loaded) -> None:
        loaded.retired = True
        if loaded.leases == 0:
            self._close_later(loaded)

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.model_swaps.labels(result).inc()

    async def _verify(self, path: Path, sha256: str, signature: str | None) -> str:
        """The file's digest, once it matches `sha256` and (when keys are set) its signature."""
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
        if signature is _TRUSTED:
            return digest
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
                raise ModelRefused(str(exc), code="signature_invalid", param="signature") from None
        return digest

    async def _swap(
        self,
        entry: Entry,
        path: Path,
        sha256: str,
        signature: str | None,
        canary_percent: int | None = None,
    ) -> None:
        digest = await self._verify(path, sha256, signature)
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
