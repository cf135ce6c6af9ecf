"""Circuit breaker: unreachable opens at once, provider errors after a few, probe closes."""

from __future__ import annotations

from gateway.backends.health import Breaker, State


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_unreachable_opens_at_once() -> None:
    b = Breaker("c", failures=3, retry_after_s=float("inf"))
    b.failure("timeout", unreachable=True)
    assert b.state == State.OPEN and not b.allow() and not b.reachable
    b.success()  # the probe answered
    assert b.state == State.CLOSED and b.allow()


def test_provider_errors_open_after_a_few_in_a_row() -> None:
    b = Breaker("c", failures=3, retry_after_s=10)
    b.failure("5xx", unreachable=False)
    b.failure("5xx", unreachable=False)
    b.success()  # not in a row
    b.failure("429", unreachable=False)
    b.failure("5xx", unreachable=False)
    assert b.state == State.CLOSED
    b.failure("5xx", unreachable=False)
    assert b.state == State.OPEN


def test_half_open_trial_without_probe() -> None:
    clock = Clock()
    changes: list[State] = []
    b = Breaker(
        "c", failures=1, retry_after_s=30, clock=clock, on_change=lambda _t, s: changes.append(s)
    )
    b.failure("5xx", unreachable=False)
    assert not b.allow()
    clock.t = 31
    assert b.allow() and b.state == State.HALF_OPEN
    b.failure("5xx", unreachable=False)  # the trial failed: open again
    assert b.state == State.OPEN and not b.allow()
    clock.t = 62
    assert b.allow()
    b.success()
    assert changes == [State.OPEN, State.HALF_OPEN, State.OPEN, State.HALF_OPEN, State.CLOSED]
