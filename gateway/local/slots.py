"""What the engine schedules: jobs (one request's sequence), slots (a KV sequence each)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .sampling import Sampler, SamplingParams, TextStream, TokenLogprob

FREE, PREFILL, DECODE = 0, 1, 2


class Observer(Protocol):
    """What the engine reports, from its own thread (metrics)."""

    def step(self, *, batch: int, prefill: int, decode: int) -> None: ...

    def reused(self, tokens: int) -> None: ...


Event = tuple[Any, ...]
Post = Callable[[list[tuple["Job", list[Event]]]], None]


@dataclass(eq=False)
class Job:
    """One request as the engine sees it: prompt tokens in, events out.

    Events: ("start",) when it gets a slot; ("text", items) with items plain strings, or
    (text, [TokenLogprob]) pairs when logprobs were asked for; ("done", finish_reason);
    ("error", GatewayError).
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
    # engine thread only
    _items: list[Any] = field(default_factory=list)
    _events: list[Event] = field(default_factory=list)
    _last_flush: float = 0.0
    _text_sent: bool = False


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
