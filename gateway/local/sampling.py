"""Per-request sampling: a llama_sampler chain (behind an optional grammar's token mask), stop
strings held back across tokens, logprobs."""

from __future__ import annotations

import codecs
import ctypes
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .constraint import CompiledGrammar, Matcher

# llama.cpp's "pick a random seed" value for llama_sampler_init_dist.
RANDOM_SEED = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one request picks its tokens and when it stops."""

    temperature: float = 0.7
    top_p: float = 1.0
    # llama-cpp-python's create_completion defaults, which the local model answered with before.
    top_k: int = 40
    min_p: float = 0.05
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    # None: no logprobs; k >= 0: each token's logprob and its k most likely alternatives.
    logprobs: int | None = None
    # Optional grammar constraining the output (structured output, tool calls).
    grammar: CompiledGrammar | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def grammar_param(self) -> str | None:
        return self.grammar.param if self.grammar is not None else None


class Sampler:
    """A llama_sampler chain for one request; freed when the request leaves its slot."""

    def __init__(self, llama_cpp: Any, vocab: Any, params: SamplingParams) -> None:
        self._lib = lib = llama_cpp
        self.n_vocab = int(lib.llama_vocab_n_tokens(vocab))
        # The grammar masks the logits before the chain sees them (constraint.py).
        grammar = params.grammar
        self.matcher: Matcher | None = grammar.matcher() if grammar is not None else None
        # Logprobs are the model's own, as without a grammar: the row before masking is kept.
        self._keep_raw = params.logprobs is not None and self.matcher is not None
        self._raw: np.ndarray | None = None
        # Greedy without penalties is the row's first maximum, as llama.cpp's greedy sampler
        # picks it: numpy's argmax over the logits is a seventh of that sampler's time (it
        # fills a 49k-entry candidate array first), paid for every slot in every step.
        self._argmax = params.greedy and not (params.presence_penalty or params.frequency_penalty)
        self.chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        try:
            if params.presence_penalty or params.frequency_penalty:
                # OpenAI's penalties count every token generated so far (not the prompt).
                self._add(
                    lib.llama_sampler_init_penalties(
                        lib.llama_vocab_n_tokens(vocab),
                        max(params.max_tokens, 1),
                        1.0,
                        params.frequency_penalty,
                        params.presence_penalty,
                    )
                )
            if params.greedy:
                self._add(lib.llama_sampler_init_greedy())
            else:
                if params.top_k > 0:
                    self._add(lib.llama_sampler_init_top_k(params.top_k))
                if params.top_p < 1.0:
                    self._add(lib.llama_sampler_init_top_p(params.top_p, 1))
                if params.min_p > 0.0:
                    self._add(lib.llama_sampler_init_min_p(params.min_p, 1))
                self._add(lib.llama_sampler_init_temp(params.temperature))
                seed = params.seed if params.seed is not None else random.getrandbits(32)
                self._add(lib.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        except BaseException:
            self.close()
            raise

    def _add(self, sampler: Any) -> None:
        self._lib.llama_sampler_chain_add(self.chain, sampler)  # the chain owns it now

    def sample(self, ctx: Any, index: int) -> int:
        """Pick (and accept) the next token from output `index` of the last decode.

        Raises constraint.ConstraintError when the grammar has no token to allow."""
        matcher = self.matcher
        if matcher is None:
            if self._argmax:
                return int(np.argmax(logits_row(self._lib, ctx, index, self.n_vocab)))
            return int(self._lib.llama_sampler_sample(self.chain, ctx, index))
        # llama_sampler_sample reads the context's own logits row: masked in place.
        row = logits_row(self._lib, ctx, index, self.n_vocab)
        if self._keep_raw:
            self._raw = row.copy()
        matcher.apply(row)
        if self._argmax:
            token = int(np.argmax(row))
        else:
            token = int(self._lib.llama_sampler_sample(self.chain, ctx, index))
        matcher.advance(token)
        return token

    def logits(self, ctx: Any, index: int) -> np.ndarray:
        """The model's logits for output `index` of the last decode (unmasked)."""
        if self._raw is not None:
            return self._raw
        return logits_row(self._lib, ctx, index, self.n_vocab)

    @property
    def complete(self) -> bool:
        """The grammar is satisfied and allows nothing more: the answer is whole."""
        return self.matcher is not None and self.matcher.complete

    def close(self) -> None:
        if self.chain is not None:
            self._lib.llama_sampler_free(self.chain)
            self.chain = None


class TextStream:
    """Token bytes in, text safe to send out: whole UTF-8 characters, never part of a stop string.

    A stop string may arrive split over several tokens, so the tail of the text that could
    still become one is held back until the next token settles it.
    """

    __slots__ = ("_decoder", "_held", "_hold", "_stops", "emitted", "stopped", "total")

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = tuple(s for s in stops if s)
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._held = ""
        self.emitted = 0  # characters handed out so far
        self.total = 0  # characters decoded so far (emitted + held)
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """Add one token's bytes; return the text that may be sent now (maybe "")."""
        new = self._decoder.decode(piece)
        if not new:
            return ""
        self.total += len(new)
        text = self._held + new
        if not self._stops:
            self._held = ""
            self.emitted += len(text)
            return text
        cut = -1
        for s in self._stops:
            i = text.find(s)
            if i != -1 and (cut == -1 or i < cut):
                cut = i
        if cut != -1:
            self.stopped = True
            self._held = ""
            self.emitted += cut
            return text[:cut]
        keep = 0
        for k in range(min(self._hold, len(text)), 0, -1):
            tail = text[-k:]
            if any(s.startswith(tail) for s in self._stops):
                keep = k
                break
        out = text[: len(text) - keep]
        self._held = text[len(text) - keep :]
        self.emitted += len(out)
        return out

    def flush(self) -> str:
        """The generation ended without a stop string: whatever was held back is text after all."""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        self.emitted += len(text)
        return text


@dataclass(slots=True)
class TokenLogprob:
    """One emitted token's logprob and its most likely alternatives, from the raw logits."""

    token: str
    raw: bytes
    logprob: float
    top: list[tuple[str, bytes, float]]
    start: int  # character offset of the token's text in the generated text
    end: int

    def chat(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": list(self.raw),
            "top_logprobs": [
                {"token": t, "logprob": lp, "bytes": list(b)} for t, b, lp in self.top
            ],
        }


def token_text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def logits_row(lib: Any, ctx: Any, index: int, n_vocab: int) -> np.ndarray:
    """Output `index` of the last decode as a writable view over llama.cpp's own buffer."""
    ptr = lib.llama_get_logits_ith(ctx, index)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), (n_vocab,))


def log_softmax_top(row: np.ndarray, token: int, k: int) -> tuple[float, list[tuple[int, float]]]:
    """The token's log-probability and the k most likely tokens, from one row of raw logits."""
    peak = float(row.max())
    lse = peak + float(np.log(np.exp(row - peak, dtype=np.float64).sum()))
    chosen = float(row[token]) - lse
    top: list[tuple[int, float]] = []
    if k > 0:
        idx = np.argpartition(row, -k)[-k:]
        idx = idx[np.argsort(row[idx])[::-1]]
        top = [(int(i), float(row[i]) - lse) for i in idx]
    return chosen, top
