"""The local embedding model: one llama.cpp context in embedding mode, on one worker thread.

Built once, on the first embedding request (a gateway that never embeds spends no memory on
it), by the worker thread itself; every decode runs on that thread, so the context is never
used by two requests at once and the event loop never waits on llama.cpp.

The inputs of a request are packed into as few `llama_decode` calls as fit `n_batch` tokens
and the context's `n_ctx / n_batch` KV streams, one sequence and stream each, and read back
pooled per sequence. llama-cpp-python's `Llama.embed` does the same packing but takes text only,
silently cuts inputs longer than the batch and shares one KV buffer among the inputs (with
flash attention an input then embeds differently alone and packed); token-id inputs, a 400 for
an over-long input and a stream per input need the loop and the context here.

A job nobody waits for any more (its deadline passed, its client left) stops at once: the
waiting side sets the job's stop flag, which llama.cpp's abort callback reads between the
graph nodes of a decode (a 512-token decode can take many seconds on a busy box) and the loop
reads between decode groups, so the next request gets the worker within moments instead of
after the abandoned job's minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ContextLengthExceeded, InvalidRequest, NoRouteAvailable, QueueFull
from ..settings import LocalEmbeddingSettings
from ..vectors import Item, normalise
from .model import Model, embedded_model_path, llama_lib

log = logging.getLogger(__name__)

_POOLING = {"mean": 1, "cls": 2, "last": 3}  # llama_pooling_type
_ABORTED = 2  # llama_decode's return code when the abort callback said stop


class _Abandoned(Exception):
    """The job's waiter is gone (deadline, disconnect): nobody reads its vectors."""


class LocalEmbedder:
    kind = "local"

    def __init__(
        self,
        settings: LocalEmbeddingSettings,
        *,
        packaged: Callable[[], Path] | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.path = settings.model_path or None
        # local.embedding.packaged: the GGUF of that model, made on first use (on the worker).
        self.packaged = packaged
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._model: Model | None = None  # weights and vocabulary
        self._ctx: Any = None  # the llama.cpp context every decode runs on
        self._batch: Any = None
        self.width: int | None = None
        self.pooling: str | None = None
        self.n_seq_max = 1
        self.pending = 0  # requests submitted and not finished (waiting or running)
        self.decode_calls = 0  # llama_decode calls so far (inputs are packed, not one by one)
        self.abandoned = 0  # jobs stopped part-way because nobody waited for them any more
        # The running job's stop flag, read by llama.cpp's abort callback on the worker.
        self._stop = threading.Event()
        self._abort_cb: Any = None  # the ctypes callback, kept alive: llama.cpp holds a pointer

    # -- state the policy and the status page read ------------------------------------------

    @property
    def queue_depth(self) -> int:
        return max(0, self.pending - 1)

    def has_room(self) -> bool:
        return self.pending < self.settings.max_queue + 1

    # -- embedding --------------------------------------------------------------------------

    async def embed(self, items: list[Item]) -> tuple[list[np.ndarray], list[int]]:
        """Unit-length vectors and token counts, one per input, in order."""
        if not self.has_room():
            raise QueueFull(
                "The local embedding model is busy; retry shortly.",
                retry_after=1,
            )
        loop = asyncio.get_running_loop()
        self.pending += 1
        stop = threading.Event()
        fut: Future[tuple[list[np.ndarray], list[int]]] = self._pool.submit(
            self._embed, items, stop
        )

        def done(_: Future[Any]) -> None:
            # Runs on the worker thread: the count belongs to the loop.
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                loop.call_soon_threadsafe(self._finished)

        fut.add_done_callback(done)
        try:
            # A cancelled wait cancels a job that has not started yet...
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            stop.set()  # ...and stops a running one within a decode step.
            raise

    def _finished(self) -> None:
        self.pending -= 1

    def _embed(
        self, items: list[Item], stop: threading.Event
    ) -> tuple[list[np.ndarray], list[int]]:
        self._ensure_loaded()
        self._stop = stop
        seqs = [self._tokens(i, item) for i, item in enumerate(items)]
        total = sum(len(s) for s in seqs)
        cap = self.settings.max_request_tokens
        if total > cap:
            raise InvalidRequest(
                f"The request has {total} tokens of input; the local embedding model takes at "
                f"most {cap} per request (local.embedding.max_request_tokens).",
                param="input",
                code="too_many_tokens",
            )
        out: list[np.ndarray | None] = [None] * len(seqs)
        groups: list[list[int]] = []
        group: list[int] = []
        used = 0
        for i, toks in enumerate(seqs):
            if group and (used + len(toks) > self.settings.n_batch or len(group) >= self.n_seq_max):
                groups.append(group)
                group, used = [], 0
            group.append(i)
            used += len(toks)
        if group:
            groups.append(group)
        try:
            for group in groups:
                if stop.is_set():
                    raise _Abandoned
                self._decode(group, seqs, out)
        except _Abandoned:
            self.abandoned += 1
            log.info(
                "embedding job abandoned by its waiter",
                extra={"inputs": len(seqs), "tokens": total},
            )
            raise
        vectors = normalise(np.stack([v for v in out if v is not None]))
        return list(vectors), [len(s) for s in seqs]

    def _tokens(self, i: int, item: Item) -> list[int]:
        model = self._model
        assert model is not None  # loaded before the first input is tokenized
        if isinstance(item, str):
            # Special tokens as the model adds them (BOS, or CLS/SEP for BERT models); text
            # that looks like a control token stays text. Nothing to embed in "": a 400.
            toks = model.tokenize(item, add_bos=True, special=False) if item else []
        else:
            n_vocab = model.n_vocab
            bad = next((t for t in item if t >= n_vocab), None)
            if bad is not None:
                raise InvalidRequest(
                    f"input[{i}] holds token id {bad}; the local embedding model's vocabulary "
                    f"has {n_vocab} tokens.",
                    param="input",
                    code="invalid_value",
                )
            toks = list(item)
        if not toks:
            raise InvalidRequest(
                f"input[{i}] has no tokens to embed.", param="input", code="invalid_value"
            )
        if len(toks) > self.settings.n_batch:
            raise ContextLengthExceeded(
                f"input[{i}] has {len(toks)} tokens; the local embedding model takes at most "
                f"{self.settings.n_batch} per input (local.embedding.n_batch).",
                param="input",
            )
        return toks

    def _decode(
        self, group: list[int], seqs: list[list[int]], out: list[np.ndarray | None]
    ) -> None:
        lib = llama_lib()
        ctx = self._ctx
        batch = self._batch
        n = 0
        for seq, i in enumerate(group):
            toks = seqs[i]
            for pos, tok in enumerate(toks):
                batch.token[n] = tok
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                # Every token is an output in embedding mode; pooling reads them per sequence.
                batch.logits[n] = True
                n += 1
        batch.n_tokens = n
        mem = lib.llama_get_memory(ctx)
        if mem:  # non-causal (BERT) models keep no KV cache
            lib.llama_memory_clear(mem, True)
        rc = lib.llama_decode(ctx, batch)
        self.decode_calls += 1
        if rc == _ABORTED and self._stop.is_set():
            raise _Abandoned
        if rc != 0:
            raise NoRouteAvailable(f"the local embedding model failed to decode (code {rc})")
        width = self.width or 0
        for seq, i in enumerate(group):
            ptr = lib.llama_get_embeddings_seq(ctx, seq)
            if not ptr:
                raise NoRouteAvailable("the local embedding model returned no pooled embedding")
            out[i] = np.ctypeslib.as_array(ptr, shape=(width,)).astype(np.float32)

    # -- lifecycle --------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._ctx is not None:
            return
        try:
            self._load()
        except Exception as exc:
            log.exception("loading the local embedding model failed")
            raise NoRouteAvailable(
                f"The local embedding model could not be loaded ({type(exc).__name__}).",
                code="local_model_unavailable",
            ) from None

    def _packaged_path(self) -> Path:
        if self.settings.packaged == "none":
            return embedded_model_path()
        if self.packaged is None:
            raise RuntimeError(f"no converter given for {self.settings.packaged}")
        return self.packaged()

    def _load(self) -> None:
        lib = llama_lib()  # also quiets llama.cpp's logging
        s = self.settings
        path = Path(s.model_path) if s.model_path else self._packaged_path()
        started = time.perf_counter()
        model = Model(path)
        try:
            pooling: str = s.pooling
            if pooling == "auto":
                # The GGUF says how it was trained to pool; a chat model says nothing: mean.
                raw = model.meta(f"{model.meta('general.architecture') or ''}.pooling_type")
                names = {v: k for k, v in _POOLING.items()}
                pooling = names.get(int(raw), "mean") if raw and raw.isdigit() else "mean"
            p = lib.llama_context_default_params()
            p.embeddings = True
            p.pooling_type = _POOLING[pooling]
            p.n_ctx = s.n_ctx
            # A pooled sequence must sit in one micro-batch: the physical batch is the logical.
            p.n_batch = p.n_ubatch = s.n_batch
            # One KV stream of n_batch cells per input side by side (llama-server's slots):
            # each input attends over its own cells only, so it embeds to the same vector
            # alone or packed with others, and flash attention has no other inputs' cells to
            # skip. One shared buffer packs more inputs into the same memory, but then the
            # attention kernel, and the vector, depends on how many were packed together.
            # llama.cpp also takes at most 256 sequences, and no more than n_batch outputs.
            cap = min(lib.llama_max_parallel_sequences(), s.n_batch)
            p.n_seq_max = max(1, min(s.n_ctx // s.n_batch, cap))
            p.kv_unified = False
            p.n_threads = p.n_threads_batch = s.n_threads
            p.flash_attn_type = (
                lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if s.flash_attn
                else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
            p.no_perf = True
            ctx = lib.llama_init_from_model(model.model, p)
            if not ctx:
                raise RuntimeError("llama.cpp could not create the embedding context")
        except BaseException:
            model.close()
            raise
        # Read between graph nodes on the worker: a decode stops part-way once its job is
        # abandoned (llama_decode then returns 2, and the next decode clears the memory).
        self._abort_cb = lib.ggml_abort_callback(lambda _data: self._stop.is_set())
        lib.llama_set_abort_callback(ctx, self._abort_cb, None)
        self.n_seq_max = int(lib.llama_n_seq_max(ctx))
        self._batch = lib.llama_batch_init(s.n_batch, 0, 1)
        self.width = int(lib.llama_model_n_embd(model.model))
        self.pooling = pooling
        self._model, self._ctx = model, ctx
        log.info(
            "local embedding model loaded",
            extra={
                "model": path.name,
                "width": self.width,
                "pooling": pooling,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )

    async def close(self) -> None:
        def free() -> None:
            if self._batch is not None:
                llama_lib().llama_batch_free(self._batch)
                self._batch = None
            if self._ctx is not None:
                llama_lib().llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                self._model.close()
                self._model = None

        # On the worker, after any running job: the context is never freed under a decode.
        await asyncio.wrap_future(self._pool.submit(free))
        self._pool.shutdown(wait=False)
