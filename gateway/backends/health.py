"""Per-target circuit breakers fed by real traffic, closed again by a light probe."""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..metrics import Metrics
    from ..settings import CloudModel, CloudSettings

log = logging.getLogger(__name__)


class State(enum.IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


class Breaker:
    """Closed: traffic flows. Open: requests skip the target until a probe or trial succeeds.

    An unreachable target (timeout, refused connection) opens the breaker at once; provider
    errors (5xx, 429) open it after `failures` in a row. Without a probe, an open breaker lets
    one trial request through every `retry_after_s` (half-open).
    """

    def __init__(
        self,
        target: str,
        *,
        failures: int,
        retry_after_s: float,
        probe_interval_s: float | None = None,
        on_change: Callable[[str, State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.target = target
        self.failures = failures
        self.retry_after_s = retry_after_s
        # How often a probe asks the target while the breaker is open (None: never probed).
        self.probe_interval_s = probe_interval_s
        self.state = State.CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.last_cause = ""
        # The last transition, for people (the status page): wall-clock time and why.
        self.changed_at: float | None = None
        self.change_reason = ""
        self._on_change = on_change
        self._clock = clock

    @property
    def reachable(self) -> bool:
        return self.state != State.OPEN

    def allow(self) -> bool:
        if self.state == State.CLOSED:
            return True
        if self.state == State.OPEN and self._clock() - self.opened_at >= self.retry_after_s:
            self._set(State.HALF_OPEN, f"trial request after {self.retry_after_s:g}s open")
            return True  # the trial request
        return False

    def retry_in(self) -> float | None:
        """Seconds until an open breaker may close (its next probe, or its next trial request);
        None unless open."""
        if self.state != State.OPEN:
            return None
        trial = max(0.0, self.retry_after_s - (self._clock() - self.opened_at))
        return min(trial, self.probe_interval_s) if self.probe_interval_s else trial

    def success(self) -> None:
        self.consecutive = 0
        if self.state != State.CLOSED:
            self._set(State.CLOSED, "target answered again")

    def failure(self, cause: str, *, unreachable: bool) -> None:
        self.consecutive += 1
        self.last_cause = cause
        if unreachable or self.consecutive >= self.failures or self.state == State.HALF_OPEN:
            self.opened_at = self._clock()
            if self.state != State.OPEN:
                self._set(State.OPEN, cause)

    def _set(self, state: State, why: str) -> None:
        log.warning(
            "circuit breaker state change",
            extra={"target": self.target, "state": state.name.lower(), "cause": self.last_cause},
        )
        self.state = state
        self.changed_at = time.time()
        self.change_reason = why
        if self._on_change:
            self._on_change(self.target, state)


def retry_after(breakers: Iterable[Breaker]) -> dict[str, str]:
    """`Retry-After` for a 503 while any of these breakers is open: its next trial is when the
    cloud may answer again (SDKs retry a 503 and honour the header). Empty when none is open."""
    waits = [w for b in breakers if (w := b.retry_in()) is not None and math.isfinite(w)]
    return {"Retry-After": str(max(1, math.ceil(min(waits))))} if waits else {}


def build_breakers(
    models: Iterable[CloudModel], cloud: CloudSettings, metrics: Metrics
) -> dict[str, Breaker]:
    """One breaker per cloud model (chat or embeddings), its state mirrored in metrics."""

    def changed(target: str, state: State) -> None:
        metrics.breaker_state.labels(target).set(int(state))
        metrics.cloud_reachable.labels(target).set(0 if state == State.OPEN else 1)

    breakers = {
        m.name: Breaker(
            m.name,
            failures=cloud.breaker_failures,
            # With a probe (an api_base to ask), only the probe closes an open breaker, so no
            # client waits on a dead uplink. Providers we cannot probe get a half-open trial.
            retry_after_s=float("inf") if m.api_base else 30.0,
            probe_interval_s=cloud.probe_interval_s if m.api_base else None,
            on_change=changed,
        )
        for m in models
    }
    for name in breakers:
        changed(name, State.CLOSED)
    return breakers


class Probed(Protocol):
    async def probe(self, *, deep: bool = False) -> bool | None: ...


async def probe_loop(
    breakers: Mapping[str, Breaker], targets: Mapping[str, Probed], interval_s: float
) -> None:
    """Probe every open breaker's target, each in its own task so a slow probe holds no other."""
    running: dict[str, asyncio.Task[None]] = {}
    try:
        while True:
            await asyncio.sleep(interval_s)
            for name, breaker in breakers.items():
                target = targets.get(name)
                if breaker.reachable or target is None or name in running:
                    continue
                running[name] = asyncio.create_task(_probe_once(name, breaker, target))
            for name, task in list(running.items()):
                if task.done():
                    del running[name]
    finally:
        for task in list(running.values()):
            task.cancel()


async def _probe_once(name: str, breaker: Breaker, target: Probed) -> None:
    # After a first-byte timeout only a real answer proves the target is back: its model
    # list may answer while chat hangs, and a light probe would let clients wait again.
    deep = breaker.last_cause == "timeout"
    try:
        ok = await target.probe(deep=deep)
    except Exception:
        log.exception("probe failed", extra={"target": name})
        ok = False
    if ok:
        log.info("cloud target answers again", extra={"target": name, "deep_probe": deep})
        breaker.success()
