"""What the engine schedules: jobs (one request's sequence), slots (a KV sequence each), and
which slot a new prompt goes to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import GatewayError
from .sampling import Sampler, SamplingParams, TextStream, TokenLogprob

FREE, PREFILL, DECODE = 0, 1, 2


class Observer(Protocol):
    """What the engine reports, from its own thread (metrics)."""

    def step(self, *, batch: int, prefill: int, decode: int) -> None: ...

    def reused(self, tokens: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Started:
    """The job has a slot: its answer begins."""


@dataclass(frozen=True, slots=True)
class Text:
    """Text since the last event: plain strings, or (text, [TokenLogprob]) pairs when
    logprobs were asked for."""

    items: list[Any]


@dataclass(frozen=True, slots=True)
class Done:
    """The answer is complete, and why it ended (stop, length)."""

    finish: str


@dataclass(frozen=True, slots=True)
class Failed:
    """The answer cannot go on (the error the client gets)."""

    error: GatewayError


Event = Started | Text | Done | Failed
Post = Callable[[list[tuple["Job", list[Event]]]], None]


@dataclass(eq=False)
class Job:
    """One request as the engine sees it: prompt tokens in, events out.

    Events (to its sink, in order): Started when it gets a slot, Text as tokens come, then
    Done or Failed.
    """

    prompt: list[int]
    params: SamplingParams
    sink: Any = None  # the adapter's per-request receiver (an asyncio queue)
    cancelled: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reused_tokens: int = 0
    finish: str | None = None
    freed_at_step: int | None = None  # engine step at which the slot was released
    cancelled_at_step: int | None = None
    # The engine thread's bookkeeping (engine.py and its hand-over, handover.py; nothing else
    # touches them): text not yet flushed to the sink, events waiting for the next post,
    # when text was last flushed, and whether any text has gone out.
    pending: list[Any] = field(default_factory=list)
    outbox: list[Event] = field(default_factory=list)
    last_flush: float = 0.0
    text_sent: bool = False


class Slot:
    """One sequence of the shared context: its KV tokens and the job decoding in it."""

    __slots__ = (
        "cache",
        "chunk",
        "generated",
        "job",
        "last_token",
        "pending_lp",
        "prompt_pos",
        "sampler",
        "seq",
        "skipped",
        "state",
        "text",
    )

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self.state = FREE
        self.job: Job | None = None
        self.cache: list[int] = []  # tokens whose K/V this sequence holds, in position order
        self.prompt_pos = 0  # next prompt token to prefill
        self.chunk = 0  # prompt tokens in the batch being decoded
        self.skipped = 0  # steps in a row its prompt was left out of the batch (plan_prefill)
        self.sampler: Sampler | None = None
        self.text: TextStream | None = None
        self.last_token = -1
        self.generated = 0
        self.pending_lp: list[TokenLogprob] = []


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix, by bisection over C-speed slice comparisons."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:  # invariant: a[:lo] == b[:lo] and a[:hi+1] != b[:hi+1]
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def choose_free(slots: list[Slot], prompt: list[int], reuse: bool) -> tuple[Slot, int]:
    """The free slot sharing the longest prefix with `prompt`, and that prefix's length."""
    best, shared = None, -1
    for s in slots:  # in sequence order
        if s.job is not None:
            continue
        n = common_prefix(s.cache, prompt) if s.cache and reuse else 0
        # Longest shared prefix first; among equals the lowest sequence id, which keeps the
        # busy sequences contiguous: llama.cpp splits a batch into one pass per run of
        # consecutive sequence ids when each sequence has its own KV stream.
        if n > shared:
            best, shared = s, n
    assert best is not None, "admitted with no free slot"
    return best, shared


def choose_busy(slots: list[Slot], prompt: list[int]) -> tuple[Slot | None, int]:
    """The busy slot whose computed KV shares the longest prefix with `prompt`.

    A client that stops reading an answer and sends its next turn at once finds its history in
    the slot still generating that answer."""
    best, shared = None, 0
    for s in slots:
        if s.job is not None and s.cache:
            n = common_prefix(s.cache, prompt)
            if n > shared:
                best, shared = s, n
    return best, shared
