"""Which waiting prompts a step prefills: the shorter half, shortest first, whole ones."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.local.batch import MAX_SKIPS, plan_prefill
from gateway.local.slots import Slot


def waiting(*lengths: int, done: int = 0) -> list[Slot]:
    slots = []
    for i, n in enumerate(lengths):
        s = Slot(i)
        s.job = SimpleNamespace(prompt=list(range(n)))  # type: ignore[assignment]
        s.prompt_pos = done
        slots.append(s)
    return slots


def planned(slots: list[Slot], chunk: int) -> list[tuple[int, int]]:
    return [(s.seq, take) for s, take in plan_prefill(slots, chunk)]


def test_a_burst_of_short_prompts_gets_half_its_first_tokens_in_one_step() -> None:
    # Seven prompts arrive together: the four shortest are prefilled whole in the first step,
    # so half the clients see a token after about half the work, not all of it.
    slots = waiting(31, 29, 40, 30, 28, 35, 33)
    assert planned(slots, 256) == [(4, 28), (1, 29), (3, 30), (0, 31)]
    assert planned(waiting(30), 256) == [(0, 30)]
    assert planned(waiting(30, 30), 256) == [(0, 30)]
    assert planned([], 256) == []


def test_a_step_never_holds_part_of_a_prompt_after_whole_ones() -> None:
    # 100 + 100 fill the chunk of 256 only partly; the third prompt (of five, so it is in the
    # shorter half) would not finish in this step: it waits for the next rather than delay
    # the two that do.
    assert planned(waiting(100, 100, 120, 300, 400), 256) == [(0, 100), (1, 100)]
    assert planned(waiting(100, 100, 50, 300, 400), 256) == [(2, 50), (0, 100), (1, 100)]


def test_a_prompt_longer_than_the_chunk_is_prefilled_a_chunk_at_a_time() -> None:
    assert planned(waiting(1000), 256) == [(0, 256)]
    # Part-way through: what is left of it counts, not its whole length.
    assert planned(waiting(1000, done=900), 256) == [(0, 100)]
    # Beside a short one, the short one goes first and the long one waits a step.
    assert planned(waiting(1000, 20), 256) == [(1, 20)]


def test_a_long_prompt_passed_over_for_max_skips_steps_goes_first() -> None:
    # Short prompts that keep arriving would otherwise keep a long one out for ever.
    slots = waiting(1000, 20, 30)
    assert planned(slots, 256) == [(1, 20), (2, 30)]
    slots[0].skipped = MAX_SKIPS - 1
    assert planned(slots, 256) == [(1, 20), (2, 30)]
    slots[0].skipped = MAX_SKIPS
    # It goes first with a chunk; the short ones wait for the next step (whole ones only).
    assert planned(slots, 256) == [(0, 256)]
    assert planned(waiting(100, 20, 30), 256)[0] == (1, 20)
    starved = waiting(100, 20, 30)
    starved[0].skipped = MAX_SKIPS
    assert planned(starved, 256) == [(0, 100), (1, 20)]  # still the shorter half: 2 of 3
