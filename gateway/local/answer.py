"""Every local answer, one path: one plain text, several choices, prompt lists, echo, grammars.

Every choice is its own engine job (`n` choices of `p` prompts are `n * p` parallel sequences,
sharing their prompt's KV through prefix reuse); their typed events (Started, Text, Done,
Failed) are merged by choice index. A grammar (JSON output, tool calls) is compiled here, off
the event loop, and masks each job's logits (constraint.py). Whole answers are built by
`whole`, streams by `Streamer` on the chunk builder the cache's replays share
(backends/chunks.py), plain text as ready SSE frames.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator
from contextlib import AbstractContextManager, aclosing
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from ..backends.base import Chunk, Completion, Endpoint
from ..backends.chunks import ChunkSequence
from ..schemas import AnyRequest, ChatRequest, CompletionRequest, new_id, usage
from . import structured, tool_calls
from .sampling import SamplingParams, TokenLogprob
from .slots import Done, Event, Failed, Job, Started, Text

if TYPE_CHECKING:
    from .constraint import CompiledGrammar
    from .engine import Engine

log = logging.getLogger(__name__)


class _Backend(Protocol):
    """What the general path needs of the local backend (backend.py imports this module, not
    back)."""

    model_name: str

    def admit(self) -> AbstractContextManager[Engine]: ...

    def compile_grammar(
        self, grammar: structured.Grammar, gone: threading.Event | None = None
    ) -> CompiledGrammar: ...

    def render_chat(
        self, messages: list[dict[str, str]], stops: list[str]
    ) -> tuple[list[int], list[str], str]: ...

    def render_text(self, text: str, stops: list[str]) -> tuple[list[int], list[str], str]: ...

    def sampling(
        self, req: AnyRequest, endpoint: Endpoint, tokens: list[int], stops: list[str], n_ctx: int
    ) -> SamplingParams: ...


# Prompts longer than this are templated and tokenized off the event loop.
INLINE_PROMPT_CHARS = 8192


def _structured(req: AnyRequest) -> bool:
    """Whether the answer may need a grammar (tools or a JSON response format)."""
    if not isinstance(req, ChatRequest):
        return False
    return bool(req.tools) or (req.response_format or {}).get("type", "text") != "text"


@dataclass
class _Choice:
    index: int
    prompt: int  # which prompt (completions' prompt lists)
    tokens: list[int]
    params: SamplingParams
    echo: str = ""  # completions' `echo`: the prompt text, sent before the answer
    offset: int = 0  # completions' logprob text offsets count from the prompt's start
    job: Job | None = None
    parts: list[str] = field(default_factory=list)
    entries: list[TokenLogprob] = field(default_factory=list)
    finish: str = "stop"


class _Tagged:
    """A job's sink that files its events under the choice index in one shared queue."""

    def __init__(self, queue: asyncio.Queue[tuple[int, list[Event]]], index: int) -> None:
        self._queue, self._index = queue, index

    def put_nowait(self, events: list[Event]) -> None:
        self._queue.put_nowait((self._index, events))


class Answer:
    """One request's choices: planned, run on the engine, shaped as OpenAI responses."""

    def __init__(self, backend: _Backend, req: AnyRequest, endpoint: Endpoint) -> None:
        self.backend = backend
        self.req = req
        self.endpoint = endpoint
        self.tools: tool_calls.ToolPlan | None = None
        self.choices: list[_Choice] = []

    # -- planning --------------------------------------------------------------------------

    def _plan(self, n_ctx: int, gone: threading.Event | None = None) -> None:
        req, backend = self.req, self.backend
        n = req.n or 1
        prompts: list[tuple[list[int], list[str], str]] = []
        grammar: CompiledGrammar | None = None
        if isinstance(req, ChatRequest):
            self.tools = tool_calls.tool_plan(req)
            spec = self.tools.grammar if self.tools else structured.response_grammar(req)
            if spec is not None:
                grammar = backend.compile_grammar(spec, gone)
            messages = tool_calls.chat_messages(req, self.tools)
            prompts.append(backend.render_chat(messages, req.stop_list()))
        else:
            prompts += [backend.render_text(t, req.stop_list()) for t in req.prompts()]
        for p, (tokens, stops, text) in enumerate(prompts):
            params = backend.sampling(req, self.endpoint, tokens, stops, n_ctx)
            if grammar is not None:
                params = replace(params, grammar=grammar)
            echo = text if isinstance(req, CompletionRequest) and req.echo else ""
            for i in range(n):
                seed = params.seed + i if params.seed is not None else None
                self.choices.append(
                    _Choice(
                        p * n + i,
                        p,
                        tokens,
                        replace(params, seed=seed),
                        echo=echo,
                        offset=len(text),
                    )
                )

    # -- running ---------------------------------------------------------------------------

    async def _events(self) -> AsyncGenerator[tuple[_Choice, Event], None]:
        queue: asyncio.Queue[tuple[int, list[Event]]] = asyncio.Queue()
        with self.backend.admit() as engine:
            # A grammar compiles in milliseconds (the vocabulary's bridge, the first time, in
            # a second or so): never on the event loop.
            if _structured(self.req) or self.req.content_chars() > INLINE_PROMPT_CHARS:
                gone = threading.Event()
                try:
                    await asyncio.to_thread(self._plan, engine.n_ctx_slot, gone)
                except asyncio.CancelledError:
                    gone.set()  # the client left: what its compile builds is not kept
                    raise
            else:
                self._plan(engine.n_ctx_slot)
            for c in self.choices:
                c.job = Job(prompt=c.tokens, params=c.params, sink=_Tagged(queue, c.index))
                engine.submit(c.job)
        try:
            left = len(self.choices)
            while left:
                index, events = await queue.get()
                choice = self.choices[index]
                for event in events:
                    if isinstance(event, Failed):
                        raise event.error
                    if isinstance(event, Done):
                        choice.finish = event.finish
                        left -= 1
                    yield choice, event
        finally:
            for c in self.choices:
                if c.job is not None:
                    engine.cancel(c.job)

    def usage(self) -> dict[str, Any]:
        jobs = [c.job for c in self.choices if c.job is not None]
        # A prompt counts once, however many choices continue it (as OpenAI counts).
        first = {c.prompt: c.job for c in reversed(self.choices) if c.job is not None}
        return local_usage(
            sum(j.prompt_tokens for j in first.values()),
            sum(j.completion_tokens for j in jobs),
            cached=sum(j.reused_tokens for j in jobs),
        )

    # -- whole answers ---------------------------------------------------------------------

    async def complete(self) -> Completion:
        started = time.perf_counter()
        async with aclosing(self._events()) as events:
            async for choice, event in events:
                if isinstance(event, Text):
                    _collect(choice, event.items)
        self._logged(started)
        return Completion(whole(self))

    # -- streams ---------------------------------------------------------------------------

    async def stream(self) -> AsyncGenerator[Chunk, None]:
        started = time.perf_counter()
        out = Streamer(self)
        async with aclosing(self._events()) as events:
            async for choice, event in events:
                for chunk in out.on(choice, event):
                    yield chunk
        self._logged(started)
        yield out.usage_chunk()

    def _logged(self, started: float) -> None:
        jobs = [c.job for c in self.choices if c.job is not None]
        log.debug(
            "local generation",
            extra={
                "choices": len(jobs),
                "prompt_tokens": sum(j.prompt_tokens for j in jobs),
                "tokens_reused": sum(j.reused_tokens for j in jobs),
                "completion_tokens": sum(j.completion_tokens for j in jobs),
                "finish": [c.finish for c in self.choices],
                "seconds": round(time.perf_counter() - started, 3),
            },
        )


def _collect(choice: _Choice, items: list[Any]) -> list[tuple[str, list[TokenLogprob]]]:
    """Keep a text event's pieces (and logprobs); return them as (text, logprobs) pairs."""
    pairs: list[tuple[str, list[TokenLogprob]]] = []
    for item in items:
        text, lps = item if isinstance(item, tuple) else (item, [])
        choice.parts.append(text)
        choice.entries.extend(lps)
        pairs.append((text, lps))
    return pairs


# -- OpenAI's shapes for several choices: whole responses and stream chunks, per index --


def chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": [e.chat() for e in entries], "refusal": None}


def completion_logprobs(entries: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """The legacy shape; text offsets count from the start of the prompt, as OpenAI's do."""
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t: lp for t, _, lp in e.top} for e in entries],
        "text_offset": [offset + e.start for e in entries],
    }


def _wants_logprobs(answer: Answer) -> bool:
    return bool(answer.choices) and answer.choices[0].params.logprobs is not None


def local_usage(prompt: int, completion: int, *, cached: int) -> dict[str, Any]:
    """OpenAI's usage; its field for prompt tokens served from a cache counts the KV reused
    from a slot."""
    u: dict[str, Any] = usage(prompt, completion)
    u["prompt_tokens_details"] = {"cached_tokens": cached}
    return u


@dataclass(frozen=True)
class _Said:
    """What one chat choice said: text, or (when tools were offered) a whole call."""

    text: str
    calls: list[dict[str, Any]] | None
    finish: str

    def message(self) -> dict[str, Any]:
        # `refusal` is required by the spec (OpenAI sends null when the model did not refuse).
        if self.calls is not None:
            return {"role": "assistant", "content": None, "refusal": None, "tool_calls": self.calls}
        return {"role": "assistant", "content": self.text, "refusal": None}


def _said(answer: Answer, c: _Choice) -> _Said:
    text = "".join(c.parts)
    if answer.tools is not None:
        calls = tool_calls.tool_calls(text)
        if calls is not None:
            return _Said(text, calls, "tool_calls")
    return _Said(text, None, c.finish)


def whole(answer: Answer) -> dict[str, Any]:
    """The non-streamed response with every choice."""
    lp = _wants_logprobs(answer)
    choices: list[dict[str, Any]] = []
    chat = answer.endpoint == "chat"
    for c in answer.choices:
        if chat:
            said = _said(answer, c)
            choices.append(
                {
                    "index": c.index,
                    "message": said.message(),
                    "logprobs": chat_logprobs(c.entries) if lp else None,
                    "finish_reason": said.finish,
                }
            )
        else:
            choices.append(
                {
                    "index": c.index,
                    "text": c.echo + "".join(c.parts),
                    "logprobs": completion_logprobs(c.entries, c.offset) if lp else None,
                    "finish_reason": c.finish,
                }
            )
    obj: dict[str, Any] = {
        "id": new_id("chatcmpl" if chat else "cmpl"),
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": answer.backend.model_name,
        "choices": choices,
        "usage": answer.usage(),
    }
    # No `system_fingerprint`: the spec types it an optional string, so none is left out.
    return obj


class Streamer:
    """Chunks for one streamed answer: each choice's pieces under its own index, plain text as
    ready SSE frames (one write per batch of tokens: the hot path)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.chat = answer.endpoint == "chat"
        self.seq = ChunkSequence(answer.endpoint, model=answer.backend.model_name)
        self.logprobs = False

    def on(self, c: _Choice, event: Event) -> list[Chunk]:
        """The chunks one engine event of choice `c` becomes."""
        seq = self.seq
        if isinstance(event, Started):
            self.logprobs = c.params.logprobs is not None
            if self.chat:
                return [seq.role(index=c.index)]  # type: ignore[list-item]
            return [seq.text(c.echo, index=c.index)] if c.echo else []
        if isinstance(event, Text):
            if self.chat and self.answer.tools is not None:
                _collect(c, event.items)
                return []  # a call is sent whole once it is complete
            if not self.logprobs:
                c.parts.extend(event.items)
                return [seq.frames(event.items, index=c.index)]
            return [self._piece(c, text, lps) for text, lps in _collect(c, event.items)]
        if isinstance(event, Done):
            return self._done(c)
        return []

    def _piece(self, c: _Choice, text: str, lps: list[TokenLogprob]) -> Chunk:
        if self.chat:
            return self.seq.text(text, logprobs=chat_logprobs(lps), index=c.index)
        return self.seq.text(text, logprobs=completion_logprobs(lps, c.offset), index=c.index)

    def _done(self, c: _Choice) -> list[Chunk]:
        seq = self.seq
        if not self.chat:
            return [seq.finish(c.finish, index=c.index)]
        said = _said(self.answer, c)
        out: list[Chunk] = []
        if said.calls is not None:
            calls = [{"index": k, **call} for k, call in enumerate(said.calls)]
            out.append(seq.tool_calls(calls, index=c.index))
        elif self.answer.tools is not None and said.text:
            out.append(seq.text(said.text, index=c.index))
        out.append(seq.finish(said.finish, index=c.index))
        return out

    def usage_chunk(self) -> Chunk:
        """Always offered; the handler drops it unless stream_options.include_usage."""
        return self.seq.usage(self.answer.usage())
