"""A model name and the files serving it: what the model pool's residency and swaps both keep."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import GatewayError
from ..settings import LocalModel, LocalSettings
from . import memory
from .backend import LocalBackend
from .memory import MIB, InsufficientMemory

LoadState = Literal["unloaded", "loading", "loaded", "failed"]


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
    state: LoadState = "unloaded"
    last_error: str | None = None
    failure: Exception | None = None  # why the last load failed, answered until retry_at
    retry_at: float = 0.0  # time.monotonic() after which a failed load is tried again
    last_used: float = field(default_factory=time.monotonic)
    loading: asyncio.Task[Loaded] | None = None
    swapping: bool = False
    canary: Loaded | None = None  # a new file on trial, taking canary_percent of requests
    canary_percent: int = 0

    @classmethod
    def default(cls, settings: LocalSettings) -> Entry:
        """The default model, `local.model_path` (or the embedded file, found at load)."""
        budget = settings.memory_budget_mib
        return cls(
            name=settings.model_name,
            settings=settings,
            budget=budget * MIB if budget else None,
            path=settings.model_path or Path(),
        )

    @classmethod
    def named(cls, model: LocalModel, settings: LocalSettings) -> Entry:
        """One of `local.models`: its own path, context and slots, the rest as `local`."""
        own = settings.model_copy(
            update={
                "model_path": model.path,
                "model_name": model.name,
                "n_ctx": model.n_ctx or settings.n_ctx,
                "parallel": model.parallel or settings.parallel,
                "chat_template": model.chat_template,
                "models": [],
            }
        )
        budget = model.memory_budget_mib
        return cls(
            name=model.name,
            settings=own,
            budget=budget * MIB if budget else None,
            path=model.path,
        )

    @property
    def busy(self) -> bool:
        return any(f is not None and f.leases for f in (self.current, self.canary))

    def serve(self, loaded: Loaded) -> None:
        """`loaded` is now the name's file, healthy: a load that finished or a swap."""
        self.current = loaded
        self.path, self.sha256 = loaded.path, loaded.sha256
        self.state, self.last_error = "loaded", None
        self.failure, self.retry_at = None, 0.0
        self.last_used = time.monotonic()

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


def unavailable(name: str, exc: Exception, *, retry_after: float | None) -> ModelUnavailable:
    """The 503 a request gets when its model could not be loaded."""
    headers = {"Retry-After": str(math.ceil(retry_after))} if retry_after else None
    if isinstance(exc, InsufficientMemory):
        return ModelUnavailable(str(exc), code="insufficient_memory", headers=headers)
    return ModelUnavailable(f"model {name!r} could not be loaded: {exc}", headers=headers)
