"""The local backend: OpenAI requests in, the batching engine's events out as responses."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing, contextmanager
from typing import TYPE_CHECKING

from ..backends.base import Chunk, Completion, Endpoint, Kind
from ..errors import ContextLengthExceeded, NotReady, QueueFull
from ..schemas import (
    AnyRequest,
    ChatRequest,
)
from ..settings import LocalSettings
from . import answer, fields
from .constraint import CompiledGrammar, Grammars
from .engine import Engine, Event, Job
from .model import Model, embedded_model_path
from .sampling import SamplingParams
from .structured import Grammar

if TYPE_CHECKING:
    from ..metrics import Metrics

log = logging.getLogger(__name__)


class _MetricsObserver:
    """Engine reports into the Prometheus instruments (prometheus_client is thread-safe)."""

    def __init__(self, metrics: Metrics) -> None:
        self._batch = metrics.local_batch_size
        self._prefill = metrics.local_prefill_tokens
        self._decode = metrics.local_decode_tokens
        self._reused = metrics.local_tokens_reused

    def step(self, *, batch: int, prefill: int, decode: int) -> None:
        self._batch.observe(batch)
        if prefill:
            self._prefill.inc(prefill)
        if decode:
            self._decode.inc(decode)

    def reused(self, tokens: int) -> None:
        self._reused.inc(tokens)


def _deliver(batch: list[tuple[Job, list[Event]]]) -> None:
    for job, events in batch:
        job.sink.put_nowait(events)


class LocalBackend:
    """Serves requests from a GGUF model, up to `parallel` of them decoded together."""

    kind: Kind = "local"

    def __init__(self, settings: LocalSettings, *, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.name = "local"
        self.model_name = settings.model_name
        self._metrics = metrics
        self._model: Model | None = None
        self._grammars: Grammars | None = None
        self.engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._preparing = 0  # admitted, prompt being templated and tokenized

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def n_ctx(self) -> int:
        """Context of one slot, in tokens."""
        return self.engine.n_ctx_slot if self.engine is not None else self.settings.n_ctx

    @property
    def queue_depth(self) -> int:
        """Requests admitted but not yet generating."""
        waiting = self.engine.waiting if self.engine is not None else 0
        return waiting + self._preparing

    @property
    def in_flight(self) -> int:
        """Requests holding a slot (prefilling or decoding)."""
        return self.engine.busy if self.engine is not None else 0

    def has_room(self) -> bool:
        return self.queue_depth + self.in_flight < self.settings.parallel + self.settings.max_queue

    @contextmanager
    def admit(self) -> Iterator[Engine]:
        """The local admission check, the one every local answer passes: the model loaded
        and room for one more request. Inside the block the request counts as waiting
        (queue_depth) while its prompt is templated and tokenized; the caller submits its
        jobs to the engine before leaving, from when the engine counts them."""
        engine = self.engine
        if engine is None:
            raise NotReady("the local model is still loading", code="model_loading")
        if not self.has_room():
            raise QueueFull(
                "the local model is busy; retry shortly",
                retry_after=self.settings.retry_after_s,
            )
        self._preparing += 1
        try:
            yield engine
        finally:
            self._preparing -= 1

    async def load(self) -> None:
        self._loop = asyncio.get_running_loop()
        engine = await asyncio.to_thread(self._load)
        self.engine = engine
        engine.start()

    def _load(self) -> Engine:
        s = self.settings
        path = s.model_path or embedded_model_path()
        started = time.perf_counter()
        model = Model(path, chat_template=self.settings.chat_template)
        try:
            engine = Engine(
                model,
                parallel=s.parallel,
                n_ctx=s.n_ctx,
                prefill_chunk=s.prefill_chunk,
                prefix_reuse=s.prefix_reuse,
                n_batch=s.n_batch,
                n_threads=s.n_threads,
                flush_s=s.stream_flush_ms / 1000,
                post=self._post,
                observer=_MetricsObserver(self._metrics) if self._metrics is not None else None,
            )
        except BaseException:
            model.close()
            raise
        self._model = model
        self._grammars = Grammars(model, max_bytes=s.grammar_cache_bytes)
        log.info(
            "local model loaded",
            extra={
                "model": path.name,
                "seconds": round(time.perf_counter() - started, 2),
                "parallel": s.parallel,
                "n_ctx_slot": engine.n_ctx_slot,
                "kv_mib": round(engine.kv_bytes / 2**20, 1),
            },
        )
        return engine

    def _post(self, batch: list[tuple[Job, list[Event]]]) -> None:
        """Engine thread: one event-loop wake-up carries every job's events of a step."""
        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("no event loop")
            loop.call_soon_threadsafe(_deliver, batch)
        except RuntimeError:  # the loop closed under us (shutdown): nobody is listening
            for job, _ in batch:
                job.cancelled = True

    async def close(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            await asyncio.to_thread(engine.stop)
        self._grammars = None  # its tokenizer points into the model's vocabulary
        if self._model is not None:
            model, self._model = self._model, None
            if engine is None or engine.ctx is None:
                model.close()

    # -- serving ---------------------------------------------------------------------------

    async def complete(self, req: AnyRequest, endpoint: Endpoint) -> Completion:
        fields.check(req)  # a field the local model would ignore is a 400, never dropped
        return await answer.Answer(self, req, endpoint).complete()

    async def stream(self, req: AnyRequest, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        fields.check(req)
        async with aclosing(answer.Answer(self, req, endpoint).stream()) as chunks:
            async for chunk in chunks:
                yield chunk

    def compile_grammar(
        self, grammar: Grammar, gone: threading.Event | None = None
    ) -> CompiledGrammar:
        """The grammar for this model's vocabulary. Blocks (milliseconds): not on the loop.
        `gone` set: the request left while it was built (not kept)."""
        grammars = self._grammars
        if grammars is None:
            raise NotReady("the local model is not loaded", code="model_loading")
        return grammars.compile(grammar, gone)

    def render_chat(
        self, messages: list[dict[str, str]], stops: list[str]
    ) -> tuple[list[int], list[str], str]:
        """A chat through the model's template: tokens, stop strings, prompt text."""
        model = self._model
        assert model is not None
        text, extra, add_bos = model.template.render(messages)
        return model.tokenize(text, add_bos=add_bos), [*stops, *extra], text

    def render_text(self, text: str, stops: list[str]) -> tuple[list[int], list[str], str]:
        model = self._model
        assert model is not None
        return model.tokenize(text, add_bos=True), list(stops), text

    def sampling(
        self, req: AnyRequest, endpoint: Endpoint, tokens: list[int], stops: list[str], n_ctx: int
    ) -> SamplingParams:
        """One prompt's sampler settings: the request's, the defaults, and the room in context."""
        n_prompt = len(tokens)
        room = n_ctx - n_prompt
        if room < 1:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {n_ctx} tokens. "
                f"However, your prompt resulted in {n_prompt} tokens. "
                "Please reduce the length of the prompt.",
                param="messages" if endpoint == "chat" else "prompt",
            )
        s = self.settings
        asked = req.requested_max_tokens() or s.default_max_tokens
        if isinstance(req, ChatRequest):
            logprobs = (req.top_logprobs or 0) if req.logprobs else None
        else:
            logprobs = req.logprobs
        seed = req.seed if req.seed is not None else (s.seed if s.seed >= 0 else None)
        return SamplingParams(
            temperature=s.default_temperature if req.temperature is None else req.temperature,
            top_p=1.0 if req.top_p is None else req.top_p,
            seed=seed,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            max_tokens=min(asked, s.max_tokens_limit, room),
            stop=tuple(stops),
            logprobs=logprobs,
        )
