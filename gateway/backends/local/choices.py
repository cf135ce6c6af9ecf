"""Answers that are more than one plain text: several choices, prompt lists, echo, grammars.

Every choice is its own engine job (`n` choices of `p` prompts are `n * p` parallel sequences,
sharing their prompt's KV through prefix reuse); their events are merged by choice index. A
grammar (JSON output, tool calls) is one more sampler in each job's chain. The plain
single-choice answer keeps the backend's own, faster path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ...errors import NotReady, QueueFull
from ...schemas import AnyRequest, ChatRequest, CompletionRequest, usage
from ..base import Chunk, Completion, Endpoint
from . import structured
from .engine import Event, Job
from .sampling import SamplingParams, TokenLogprob

if TYPE_CHECKING:
    from .backend import LocalBackend

_INLINE_CHARS = 8192


def wanted(req: AnyRequest) -> bool:
    """Whether the request needs this path rather than the single plain answer."""
    if (req.n or 1) > 1:
        return True
    if isinstance(req, ChatRequest):
        kind = (req.response_format or {}).get("type", "text")
        return bool(req.tools) or kind != "text"
    return isinstance(req.prompt, list) or bool(req.echo) or req.suffix is not None


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

    def __init__(self, backend: LocalBackend, req: AnyRequest, endpoint: Endpoint) -> None:
        self.backend = backend
        self.req = req
        self.endpoint = endpoint
        self.tools: structured.ToolPlan | None = None
        self.choices: list[_Choice] = []

    # -- planning --------------------------------------------------------------------------

    def _plan(self, n_ctx: int) -> None:
        req, backend = self.req, self.backend
        n = req.n or 1
        prompts: list[tuple[list[int], list[str], str]] = []
        grammar: str | None = None
        if isinstance(req, ChatRequest):
            self.tools = structured.tool_plan(req)
            grammar = self.tools.grammar if self.tools else structured.response_grammar(req)
            messages = structured.chat_messages(req, self.tools)
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
        backend = self.backend
        engine = backend.engine
        if engine is None:
            raise NotReady("the local model is still loading", code="model_loading")
        if not backend.has_room():
            raise QueueFull(
                "the local model is busy; retry shortly",
                retry_after=backend.settings.retry_after_s,
            )
        if _chars(self.req) > _INLINE_CHARS:
            await asyncio.to_thread(self._plan, engine.n_ctx_slot)
        else:
            self._plan(engine.n_ctx_slot)
        queue: asyncio.Queue[tuple[int, list[Event]]] = asyncio.Queue()
        for c in self.choices:
            c.job = Job(prompt=c.tokens, params=c.params, sink=_Tagged(queue, c.index))
            engine.submit(c.job)
        try:
            left = len(self.choices)
            while left:
                index, events = await queue.get()
                choice = self.choices[index]
                for event in events:
                    if event[0] == "error":
                        raise event[1]
                    if event[0] == "done":
                        choice.finish = event[1]
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
        u: dict[str, Any] = usage(
            sum(j.prompt_tokens for j in first.values()), sum(j.completion_tokens for j in jobs)
        )
        u["prompt_tokens_details"] = {"cached_tokens": sum(j.reused_tokens for j in jobs)}
        return u

    # -- whole answers ---------------------------------------------------------------------

    async def complete(self) -> Completion:
        async with aclosing(self._events()) as events:
            async for choice, event in events:
                if event[0] == "text":
                    _collect(choice, event[1])
        from .shapes import whole

        return Completion(whole(self))

    # -- streams ---------------------------------------------------------------------------

    async def stream(self) -> AsyncGenerator[Chunk, None]:
        from .shapes import Streamer

        out = Streamer(self)
        async with aclosing(self._events()) as events:
            async for choice, event in events:
                for obj in out.on(choice, event):
                    yield Chunk(obj=obj)
        yield Chunk(obj=out.usage_chunk())


def _collect(choice: _Choice, items: list[Any]) -> list[tuple[str, list[TokenLogprob]]]:
    """Keep a text event's pieces (and logprobs); return them as (text, logprobs) pairs."""
    pairs: list[tuple[str, list[TokenLogprob]]] = []
    for item in items:
        text, lps = item if isinstance(item, tuple) else (item, [])
        choice.parts.append(text)
        choice.entries.extend(lps)
        pairs.append((text, lps))
    return pairs


def _chars(req: AnyRequest) -> int:
    return req.content_chars()
