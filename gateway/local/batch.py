"""The one `llama_batch` the engine fills every step, written through numpy views of its arrays,
and which waiting prompts go into it."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .slots import Slot


class Batch:
    """Room for `cap` tokens, each of one sequence; `n` tokens filled since `clear`."""

    def __init__(self, lib: Any, cap: int, parallel: int) -> None:
        self.lib = lib
        self.cap = cap
        self.raw: Any = lib.llama_batch_init(cap, 0, parallel)
        b = self.raw
        self._tok = np.ctypeslib.as_array(b.token, shape=(cap,))
        self._pos = np.ctypeslib.as_array(b.pos, shape=(cap,))
        self._out = np.ctypeslib.as_array(
            ctypes.cast(b.logits, ctypes.POINTER(ctypes.c_int8)), (cap,)
        )
        np.ctypeslib.as_array(b.n_seq_id, shape=(cap,))[:] = 1
        self._seq_ptr = b.seq_id
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, token: int, pos: int, seq: int) -> int:
        """One token whose logits are wanted; returns its index in the batch's outputs."""
        n = self.n
        self._tok[n] = token
        self._pos[n] = pos
        self._out[n] = 1
        self._seq_ptr[n][0] = seq
        self.n = n + 1
        return n

    def add_run(self, tokens: list[int], pos: int, seq: int, *, last_logits: bool) -> int:
        """Consecutive prompt tokens of one sequence from position `pos`; returns the index
        of the last one (its logits are computed only if `last_logits`)."""
        n, end = self.n, self.n + len(tokens)
        self._tok[n:end] = tokens
        self._pos[n:end] = np.arange(pos, pos + len(tokens), dtype=np.int32)
        self._out[n:end] = 0
        seq_ptr = self._seq_ptr
        for i in range(n, end):
            seq_ptr[i][0] = seq
        if last_logits:
            self._out[end - 1] = 1
        self.n = end
        return end - 1

    def decode(self, ctx: Any) -> int:
        self.raw.n_tokens = self.n
        return int(self.lib.llama_decode(ctx, self.raw))

    def free(self) -> None:
        if self.raw is not None:
            self.lib.llama_batch_free(self.raw)
            self.raw = None


MAX_SKIPS = 4  # steps a waiting prompt may be passed over before it goes first


def plan_prefill(prefilling: list[Slot], chunk: int) -> list[tuple[Slot, int]]:
    """The prompts this step prefills, shortest first, and how many tokens of each.

    The shorter half of the waiting prompts (rounded up), whole prompts only once one is in,
    at most `chunk` tokens. Every token of a step costs about the same on a CPU, prompt or
    decode, and each step has a fixed cost on top (the weights are read once per step). One
    big step (llama-server's way) gives every waiting client its first token at the end of
    all the work; one prompt per step pays the fixed cost every time; halving gives half the
    clients their first token after half the work, all of them within about log2(n) steps. A
    part of the next prompt would delay the first tokens of those the step finishes and
    finish nothing itself; a prompt longer than the chunk is prefilled a chunk at a time.

    Shortest first alone would starve a long prompt while short ones keep arriving: one passed
    over for `MAX_SKIPS` steps in a row goes first in the next."""

    def rank(s: Slot) -> tuple[bool, int]:
        return s.skipped < MAX_SKIPS, len(s.job.prompt) - s.prompt_pos  # type: ignore[union-attr]

    order = sorted(prefilling, key=rank)
    starving = sum(1 for s in order if s.skipped >= MAX_SKIPS)
    plan: list[tuple[Slot, int]] = []
    budget = chunk
    for s in order[: max(starving, (len(order) + 1) // 2)]:
        left = len(s.job.prompt) - s.prompt_pos  # type: ignore[union-attr]
        if plan and left > budget:
            break
        take = min(budget, left)
        plan.append((s, take))
        budget -= take
        if budget <= 0:
            break
    return plan
