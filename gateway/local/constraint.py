"""Constrained decoding with llguidance: every sampled token is one the grammar allows.

The model's vocabulary is handed to llguidance once, on the first structured request (its
llama.cpp bridge reads each token's bytes from the GGUF's vocabulary and marks control tokens,
so no grammar can emit them; a second or so for a 262k vocabulary). A grammar (structured.py
writes it from the client's schema) is compiled once per distinct text and kept; each answer
gets its own copy of the compiled matcher, which costs microseconds.

Per step of a slot, the matcher's token bitmask sets the logit of every token the grammar
forbids to -inf before the sampler chain picks (temperature, top-p, seed and penalties act
on what is left), and the picked token advances the matcher. The answer is complete when
nothing but the end of generation can follow.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidRequest

if TYPE_CHECKING:
    from .model import Model
    from .structured import Grammar


class ConstraintError(RuntimeError):
    """The matcher refused a token or has nothing left to allow. The mask allows only tokens
    the grammar takes, so this is llguidance giving up on the grammar itself (a parser row
    past its item limit, say, from an `anyOf` of hundreds of objects): the schema's cost."""


def too_complex(param: str | None) -> InvalidRequest:
    """The client's 400 for a grammar llguidance gives up on while answering (the log line
    that goes with it carries no message: it would quote the schema)."""
    return InvalidRequest(
        "The schema is too complex for the local model's grammar engine; simplify it (fewer "
        "alternatives) or use a cloud model.",
        param=param,
        code="unsupported_schema",
    )


# What a compiled grammar is counted as in the cache, at least: measured on SmolLM2's
# vocabulary, a matcher costs 50-75 KiB however small its grammar and 30-110 bytes per byte
# of grammar text (objects, enums, patterns of 0.3-30 KB).
_FLOOR_BYTES = 64 * 1024
_BYTES_PER_CHAR = 128


class Grammars:
    """Compiled grammars for one model's vocabulary; thread-safe, bounded in bytes.

    A grammar is counted as the larger of the process's RSS growth while it was built
    (builds are one at a time, so the growth is its own: a `multipleOf` lexer is hundreds of
    MB where its text is a hundred bytes) and an estimate from its text. The least recently
    used go once the sum passes `max_bytes`; one that alone passes it is used and not kept,
    and neither is one whose request left while it was built.
    """

    def __init__(self, model: Model, *, max_bytes: int = 64 * 2**20) -> None:
        self._model = model
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._building = threading.Lock()
        self._tokenizer: Any = None
        self._compiled: OrderedDict[str, tuple[CompiledGrammar, int]] = OrderedDict()
        self.bytes = 0

    def tokenizer(self) -> Any:
        """The vocabulary as llguidance sees it (built on first use: off the event loop)."""
        with self._lock:
            if self._tokenizer is None:
                from llguidance.llamacpp import lltokenizer_from_vocab

                model = self._model
                # Every end-of-generation token ends a complete answer (SmolLM2: <|im_end|>
                # as well as <|endoftext|>), not only the one the GGUF calls EOS.
                eog = [t for t in range(model.n_vocab) if model.is_eog(t)]
                self._tokenizer = lltokenizer_from_vocab(
                    model.vocab, n_vocab=model.n_vocab, eos_token=eog or None
                )
            return self._tokenizer

    def compile(self, grammar: Grammar, gone: threading.Event | None = None) -> CompiledGrammar:
        """The grammar ready for matchers. Any thread; milliseconds the first time per text.
        `gone` is set when the request that asked has left: what was built is not kept."""
        with self._lock:
            hit = self._compiled.get(grammar.text)
            if hit is not None:
                self._compiled.move_to_end(grammar.text)
                return hit[0]
        tokenizer = self.tokenizer()
        with self._building:
            before = _rss()
            done = self._build(grammar, tokenizer)
            cost = max(_rss() - before, _FLOOR_BYTES + _BYTES_PER_CHAR * len(grammar.text))
        if cost <= self.max_bytes and not (gone is not None and gone.is_set()):
            self._keep(grammar.text, done, cost)
        return done

    def _keep(self, text: str, done: CompiledGrammar, cost: int) -> None:
        with self._lock:
            if text in self._compiled:
                return
            self._compiled[text] = (done, cost)
            self.bytes += cost
            while self.bytes > self.max_bytes:
                _, (_, freed) = self._compiled.popitem(last=False)
                self.bytes -= freed

    def __len__(self) -> int:
        return len(self._compiled)

    def _build(self, grammar: Grammar, tokenizer: Any) -> CompiledGrammar:
        from llguidance import LLMatcher

        matcher = LLMatcher(tokenizer, grammar.text, log_level=0)
        if matcher.is_error():
            raise InvalidRequest(
                f"The grammar for '{grammar.param}' cannot be served by the local model: "
                f"{matcher.get_error()}",
                param=grammar.param,
                code="invalid_schema",
            )
        done = CompiledGrammar(matcher, self._model.n_vocab, grammar.param)
        try:
            # The first two tokens' masks, now, along the first ways the grammar may start: a
            # grammar llguidance compiles but cannot follow (an `anyOf` of hundreds of
            # objects, past its 2,000 items per parser row once an object opens) is the
            # client's schema to simplify, a 400 here rather than one answer in two failing.
            _probe(done, self._model.n_vocab)
        except ConstraintError as exc:
            raise InvalidRequest(
                f"The schema in '{grammar.param}' is too complex for the local model's "
                f"grammar engine: {exc}",
                param=grammar.param,
                code="unsupported_schema",
            ) from None
        return done


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    """The process's resident bytes now (Linux); 0 where /proc is not (the estimate counts)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


PROBES = 16  # first tokens tried at compile time (about 1 ms each)


def _probe(done: CompiledGrammar, n_vocab: int) -> None:
    """Raise ConstraintError if the grammar fails at its first token or, after any of its
    first PROBES allowed first tokens, at its second."""
    logits = np.zeros(n_vocab, dtype=np.float32)
    done.matcher().apply(logits)
    for token in np.flatnonzero(logits == 0)[:PROBES]:
        m = done.matcher()
        m.apply(np.zeros(n_vocab, dtype=np.float32))
        m.advance(int(token))
        m.apply(np.zeros(n_vocab, dtype=np.float32))


class CompiledGrammar:
    """A matcher at the start of the grammar, never advanced itself: answers get copies."""

    __slots__ = ("_start", "n_vocab", "param")

    def __init__(self, start: Any, n_vocab: int, param: str) -> None:
        self._start = start
        self.n_vocab = n_vocab
        self.param = param  # the request field the grammar came from, for errors

    def matcher(self) -> Matcher:
        return Matcher(self._start.deep_copy(), self.n_vocab)


class Matcher:
    """One answer's position in its grammar. Engine thread only."""

    __slots__ = ("_m", "_mask", "n_vocab")

    def __init__(self, matcher: Any, n_vocab: int) -> None:
        self._m = matcher
        self.n_vocab = n_vocab
        self._mask = np.zeros((n_vocab + 31) // 32, dtype=np.int32)  # one bit per token

    def apply(self, logits: np.ndarray) -> None:
        """Forbidden tokens to -inf, in place, in one row of logits."""
        m = self._m
        m.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        if m.is_error():
            raise ConstraintError(m.get_error())
        allowed = np.unpackbits(self._mask.view(np.uint8), count=self.n_vocab, bitorder="little")
        if not allowed.any():
            raise ConstraintError("the grammar allows no token here")
        logits[allowed == 0] = -np.inf

    def advance(self, token: int) -> None:
        if not self._m.consume_token(token):
            raise ConstraintError(self._m.get_error() or f"token {token} was not allowed")

    @property
    def complete(self) -> bool:
        """Nothing but the end of generation can follow: the answer is whole."""
        return bool(self._m.is_stopped())
