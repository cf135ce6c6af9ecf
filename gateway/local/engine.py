"""Continuous batching: one thread owns the llama.cpp context and decodes every slot at once.

Each step the engine admits waiting jobs into free slots (reusing the KV of the free slot whose
tokens share the longest prefix with the new prompt), prefills at most `prefill_chunk` prompt
tokens (shortest remaining prompt first, so a long prompt never stalls the streams already
running), adds one token for every decoding slot, and runs the whole batch in ONE
`llama_decode`. Then it samples per slot, hands text to each job (one thread-safe wake-up of
the event loop per step, at most every `flush_s` per job) and frees finished, stopped or
abandoned slots at once. With nothing to do it sleeps on a condition variable.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque

import numpy as np

from ..errors import GatewayError, InternalError, NotReady
from .constraint import ConstraintError
from .model import Model
from .sampling import Sampler, TextStream, TokenLogprob, log_softmax_top, token_text
from .slots import DECODE, FREE, PREFILL, Event, Job, Observer, Post, Slot, common_prefix

__all__ = ["Engine", "Event", "Job", "Observer"]

log = logging.getLogger(__name__)


class Engine:
    """Owns one llama.cpp context with `parallel` sequences; thread-safe submit and cancel."""

    def __init__(
        self,
        model: Model,
        *,
        parallel: int,
        n_ctx: int,
        prefill_chunk: int,
        n_batch: int,
        n_threads: int,
        flush_s: float,
        post: Post,
        observer: Observer | None = None,
        prefix_reuse: bool = True,
        kv_unified: bool = False,
    ) -> None:
        self.model = model
        lib = self.lib = model.lib
        self.parallel = parallel
        self.prefill_chunk = prefill_chunk
        self.flush_s = flush_s
        self.prefix_reuse = prefix_reuse
        self._post = post
        self._observer = observer
        p = lib.llama_context_default_params()
        p.n_ctx = n_ctx * parallel
        p.n_seq_max = parallel
        p.n_batch = max(n_batch, prefill_chunk + parallel)
        p.n_ubatch = min(p.n_batch, 512)
        p.n_threads = n_threads
        p.n_threads_batch = n_threads
        # A KV stream per sequence: each slot attends over its own cells only, so a prompt decodes
        # to the same numbers alone or alongside others (one shared buffer does not: the
        # attention runs over other sequences' masked cells and the greedy text can drift).
        p.kv_unified = kv_unified
        p.no_perf = True
        self.ctx = lib.llama_init_from_model(model.model, p)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context (out of memory?)")
        self.mem = lib.llama_get_memory(self.ctx)
        total = int(lib.llama_n_ctx(self.ctx))
        # Every slot gets its own share; llama.cpp may round the total up.
        self.n_ctx_slot = min(total // parallel, int(lib.llama_n_ctx_seq(self.ctx)))
        self.kv_bytes = model.kv_bytes_per_token() * total
        cap = int(p.n_batch)
        self._cap = cap
        self._batch = lib.llama_batch_init(cap, 0, parallel)
        b = self._batch
        self._tok = np.ctypeslib.as_array(b.token, shape=(cap,))
        self._pos = np.ctypeslib.as_array(b.pos, shape=(cap,))
        self._out = np.ctypeslib.as_array(
            ctypes.cast(b.logits, ctypes.POINTER(ctypes.c_int8)), (cap,)
        )
        self._nseq = np.ctypeslib.as_array(b.n_seq_id, shape=(cap,))
        self._nseq[:] = 1
        self._seq_ptr = b.seq_id
        self.slots = [Slot(i) for i in range(parallel)]
        self._waiting: deque[Job] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._dirty: list[Job] = []  # jobs with events to hand over after this step
        self.steps = 0
        self.busy = 0
        self._thread = threading.Thread(target=self._run, name="llama-engine", daemon=True)

    # -- any thread --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def submit(self, job: Job) -> None:
        job.prompt_tokens = len(job.prompt)
        with self._cond:
            if self._stopping:
                raise NotReady("the local model is shutting down", code="model_unavailable")
            self._waiting.append(job)
            self._cond.notify()

    def cancel(self, job: Job) -> None:
        """The client is gone: drop the job if it still waits, else free its slot next step."""
        if job.cancelled or job.finish is not None:
            return
        job.cancelled = True
        job.cancelled_at_step = self.steps
        with self._cond:
            try:
                self._waiting.remove(job)
            except ValueError:
                pass
            self._cond.notify()

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._free()

    def _free(self) -> None:
        for slot in self.slots:
            if slot.sampler is not None:
                slot.sampler.close()
                slot.sampler = None
        if self._batch is not None:
            self.lib.llama_batch_free(self._batch)
            self._batch = None
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.ctx = None

    # -- engine thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self.busy:
                    self._cond.wait()
                if self._stopping:
                    break
                free = self.parallel - self.busy
                admitted = [self._waiting.popleft() for _ in range(min(free, len(self._waiting)))]
            try:
                for job in admitted:
                    self._admit(job)
                self._drop_cancelled()
                if self.busy:
                    self._step()
            except Exception:
                log.exception("local engine step failed")
                self._fail_all(InternalError("local model failed"))
            self._flush()
        left = [s.job for s in self.slots if s.job is not None]
        with self._cond:
            left += list(self._waiting)
            self._waiting.clear()
        for job in left:
            job._events.append(("error", NotReady("the local model shut down")))
        for s in self.slots:
            if s.job is not None:
                self._release(s)
        self._flush(jobs=left)

    def _admit(self, job: Job) -> None:
        if job.cancelled:
            return
        prompt = job.prompt
        free = [s for s in self.slots if s.job is None]
        best, shared = free[0], -1
        for s in free:  # in sequence order
            n = common_prefix(s.cache, prompt) if s.cache and self.prefix_reuse else 0
            # Longest shared prefix first; among equals the lowest sequence id, which keeps the
            # busy sequences contiguous: llama.cpp splits a batch into one pass per run of
            # consecutive sequence ids when each sequence has its own KV stream.
            if n > shared:
                best, shared = s, n
        # At least the last prompt token is decoded again: its logits start the answer.
        shared = min(shared, len(prompt) - 1)
        if shared < len(best.cache):
            if not self.lib.llama_memory_seq_rm(self.mem, best.seq, shared, -1):
                self.lib.llama_memory_seq_rm(self.mem, best.seq, -1, -1)
                shared = 0
            del best.cache[shared:]
        sampler = Sampler(self.lib, self.model.vocab, job.params)
        best.job = job
        best.state = PREFILL
        best.prompt_pos = shared
        best.sampler = sampler
        best.text = TextStream(job.params.stop)
        best.generated = 0
        best.pending_lp = []
        job.reused_tokens = shared
        self.busy += 1
        if shared and self._observer is not None:
            self._observer.reused(shared)
        job._events.append(("start",))
        self._dirty.append(job)

    def _drop_cancelled(self) -> None:
        for s in self.slots:
            if s.job is not None and s.job.cancelled:
                self._release(s)

    def _release(self, slot: Slot) -> None:
        """Free the slot now; its KV stays for the next prompt sharing a prefix with it."""
        job = slot.job
        if job is not None:
            job.freed_at_step = self.steps
        if slot.sampler is not None:
            slot.sampler.close()
            slot.sampler = None
        slot.job = None
        slot.state = FREE
        slot.text = None
        slot.pending_lp = []
        self.busy -= 1

    def _step(self) -> None:
        tok, pos, out, seq_ptr = self._tok, self._pos, self._out, self._seq_ptr
        n = 0
        outputs: list[tuple[Slot, int]] = []
        decoding: list[Slot] = []
        prefilling: list[Slot] = []
        for s in self.slots:
            if s.state == DECODE:
                tok[n] = s.last_token
                pos[n] = len(s.cache)
                out[n] = 1
                seq_ptr[n][0] = s.seq
                outputs.append((s, n))
                decoding.append(s)
                n += 1
            elif s.state == PREFILL:
                prefilling.append(s)
        n_decode = n
        budget = self.prefill_chunk
        if prefilling:
            prefilling.sort(key=lambda s: len(s.job.prompt) - s.prompt_pos)  # type: ignore[union-attr]
        for s in prefilling:
            if budget <= 0:
                s.chunk = 0
                continue
            prompt = s.job.prompt  # type: ignore[union-attr]
            start = s.prompt_pos
            take = min(budget, len(prompt) - start)
            end = n + take
            tok[n:end] = prompt[start : start + take]
            p0 = len(s.cache)
            pos[n:end] = np.arange(p0, p0 + take, dtype=np.int32)
            out[n:end] = 0
            seq = s.seq
            for i in range(n, end):
                seq_ptr[i][0] = seq
            if start + take == len(prompt):
                out[end - 1] = 1
                outputs.append((s, end - 1))
            s.chunk = take
            n = end
            budget -= take
        self._batch.n_tokens = n
        rc = self.lib.llama_decode(self.ctx, self._batch)
        self.steps += 1
        if rc != 0:
            log.error("llama_decode failed", extra={"code": rc, "batch": n})
            for s in decoding + [s for s in prefilling if s.chunk]:
                self._reset(s, InternalError(f"local model failed to decode (code {rc})"))
            return
        if self._observer is not None:
            self._observer.step(batch=n, prefill=n - n_decode, decode=n_decode)
        for s in decoding:
            s.cache.append(s.last_token)
        for s in prefilling:
            if s.chunk:
                prompt = s.job.prompt  # type: ignore[union-attr]
                s.cache.extend(prompt[s.prompt_pos : s.prompt_pos + s.chunk])
                s.prompt_pos += s.chunk
                s.chunk = 0
        now = time.monotonic()
        for s, idx in outputs:
            if s.job is not None and not s.job.cancelled:
                self._sample(s, idx, now)

    def _sample(self, slot: Slot, idx: int, now: float) -> None:
        job = slot.job
        assert job is not None and slot.sampler is not None and slot.text is not None
        params = job.params
        try:
            token = slot.sampler.sample(self.ctx, idx)
        except ConstraintError:
            # Only a defect gets here (the mask allows only tokens the grammar takes): say so
            # rather than send an answer the schema does not hold.
            log.exception("grammar refused the sampled token")
            self._fail(slot, InternalError("local model failed to follow the grammar"))
            return
        model = self.model
        if model.is_eog(token):
            self._finish(slot, "stop")
            return
        slot.generated += 1
        job.completion_tokens = slot.generated
        text = slot.text
        piece = model.piece(token)
        start = text.total
        emitted = text.push(piece)
        if params.logprobs is not None:
            chosen, top = log_softmax_top(
                slot.sampler.logits(self.ctx, idx), token, params.logprobs
            )
            slot.pending_lp.append(
                TokenLogprob(
                    token=token_text(piece),
                    raw=piece,
                    logprob=chosen,
                    top=[(token_text(model.piece(t)), model.piece(t), lp) for t, lp in top],
                    start=start,
                    end=text.total,
                )
            )
            if emitted or text.stopped:
                self._emit_lp(slot, emitted)
        elif emitted:
            job._items.append(emitted)
        if text.stopped or slot.sampler.complete:
            # A grammar that is complete allows only the end of generation: the answer is whole
            # now, without one more decode to sample it.
            self._finish(slot, "stop")
        elif slot.generated >= params.max_tokens:
            self._finish(slot, "length")
        else:
            slot.last_token = token
            slot.state = DECODE
            # The first text goes out at once (time to first token); later text in batches:
            # every hand-over wakes the event loop, which takes CPU from llama.cpp.
            if job._items and (not job._text_sent or now - job._last_flush >= self.flush_s):
                self._dirty.append(job)

    def _emit_lp(self, slot: Slot, emitted: str, *, final: bool = False) -> None:
        """Pair emitted text with the logprobs of the tokens it completes."""
        assert slot.job is not None and slot.text is not None
        upto = slot.text.emitted
        ready: list[TokenLogprob] = []
        keep: list[TokenLogprob] = []
        for e in slot.pending_lp:
            if final or e.end <= upto or (slot.text.stopped and e.start < upto):
                ready.append(e)
            elif not slot.text.stopped:
                keep.append(e)
        slot.pending_lp = keep
        if emitted or ready:
            slot.job._items.append((emitted, ready))

    def _finish(self, slot: Slot, reason: str) -> None:
        job = slot.job
        assert job is not None and slot.text is not None
        if not slot.text.stopped:
            rest = slot.text.flush()
            if job.params.logprobs is not None:
                self._emit_lp(slot, rest, final=True)
            elif rest:
                job._items.append(rest)
        job.finish = reason
        self._release(slot)
        self._dirty.append(job)

    def _fail(self, slot: Slot, error: GatewayError) -> None:
        """This answer cannot go on; its KV is sound and stays for prefix reuse."""
        job = slot.job
        assert job is not None
        job.finish = "error"
        job._events.append(("error", error))
        self._release(slot)
        self._dirty.append(job)

    def _reset(self, slot: Slot, error: GatewayError) -> None:
        """A failed decode: the slot's KV is suspect, forget it, tell the client."""
        self.lib.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
        slot.cache = []
        job = slot.job
        if job is not None:
            job.finish = "error"
            job._events.append(("error", error))
            self._release(slot)
            self._dirty.append(job)

    def _fail_all(self, error: GatewayError) -> None:
        for s in self.slots:
            if s.job is not None:
                self._reset(s, error)

    def _flush(self, *, jobs: list[Job] | None = None) -> None:
        """Hand pending events to the event loop: one wake-up for every job that is due."""
        dirty = self._dirty
        if jobs:
            dirty.extend(jobs)
        if not dirty:
            return
        batch: list[tuple[Job, list[Event]]] = []
        seen: set[int] = set()
        now = time.monotonic()
        for job in dirty:
            if id(job) in seen:
                continue
            seen.add(id(job))
            events = [e for e in job._events if e[0] == "start"]
            if job._items:
                events.append(("text", job._items))
                job._items = []
                job._text_sent = True
            events += [e for e in job._events if e[0] != "start"]
            if job.finish is not None and job.finish != "error":
                events.append(("done", job.finish))
            job._events = []
            job._last_flush = now
            if events and not job.cancelled:
                batch.append((job, events))
        dirty.clear()
        if batch:
            self._post(batch)
