"""Continuous batching: one thread owns the llama.cpp context and decodes every slot at once.

Each step the engine admits waiting jobs into free slots (reusing the KV of the free slot whose
tokens share the longest prefix with the new prompt, or copying a longer one from a busy slot:
a client that stops reading an answer and sends its next turn at once finds its history in
the slot still generating the answer it did not read), prefills the shorter half of the waiting
prompts, at most `prefill_chunk` tokens (`plan_prefill`: a burst gets half its first tokens after
half the work, and a long prompt never stalls the streams already running), adds one token
for every decoding slot, and runs the whole batch in ONE `llama_decode`. Then it samples per
slot, hands text to each job (one thread-safe wake-up of the event loop per step, at most every
`flush_s` per job) and frees finished, stopped or abandoned slots at once. With nothing to do
it sleeps on a condition variable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from ..errors import GatewayError, InternalError, NotReady
from . import slots
from .batch import Batch, plan_prefill
from .constraint import ConstraintError, too_complex
from .handover import hand_over, pair_logprobs
from .model import Model
from .sampling import Sampler, TextStream, TokenLogprob, log_softmax_top, token_text
from .slots import DECODE, FREE, PREFILL, Event, Job, Observer, Post, Slot, choose_busy, choose_free

__all__ = ["Engine", "Event", "Job", "Observer"]

log = logging.getLogger(__name__)

# A busy slot's prefix is copied when it beats the best free slot's by this many tokens:
# a copy moves the sequence's whole KV stream (2,048 cells, 45 MiB for the embedded model), a
# memory copy far cheaper than prefilling hundreds of tokens but not free, so a short
# difference is prefilled instead. Not tuned: the copy's cost alone was not measured yet.
_COPY_MIN_TOKENS = 64


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
        self.kv_unified = kv_unified
        self.prefix_copies = 0  # prompts that started from a busy slot's copied prefix
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
        self._batch = Batch(lib, int(p.n_batch), parallel)
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
        self._batch.free()
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
            job.outbox.append(slots.Failed(NotReady("the local model shut down")))
        for s in self.slots:
            if s.job is not None:
                self._release(s)
        self._flush(jobs=left)

    def _admit(self, job: Job) -> None:
        if job.cancelled:
            return
        prompt = job.prompt
        best, shared = choose_free(self.slots, prompt, self.prefix_reuse)
        if self.prefix_reuse:
            src, longer = choose_busy(self.slots, prompt)
            if src is not None and longer - shared >= _COPY_MIN_TOKENS:
                shared = self._copy_prefix(src, best, min(longer, len(prompt) - 1))
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
        best.skipped = 0
        best.sampler = sampler
        best.text = TextStream(job.params.stop)
        best.generated = 0
        best.pending_lp = []
        job.reused_tokens = shared
        self.busy += 1
        if shared and self._observer is not None:
            self._observer.reused(shared)
        job.outbox.append(slots.Started())
        self._dirty.append(job)

    def _copy_prefix(self, src: Slot, dst: Slot, n: int) -> int:
        """Give `dst` the K/V of `src`'s first `n` tokens; returns the tokens `dst` now holds.

        One KV buffer per sequence (the default) copies the whole stream (llama.cpp copies
        only full streams across them) on the next decode, then trims; a unified buffer
        shares the cells instead."""
        lib, mem = self.lib, self.mem
        lib.llama_memory_seq_rm(mem, dst.seq, -1, -1)
        if self.kv_unified:
            lib.llama_memory_seq_cp(mem, src.seq, dst.seq, 0, n)
        else:
            lib.llama_memory_seq_cp(mem, src.seq, dst.seq, -1, -1)
            if not lib.llama_memory_seq_rm(mem, dst.seq, n, -1):
                lib.llama_memory_seq_rm(mem, dst.seq, -1, -1)
                dst.cache = []
                return 0
        dst.cache = src.cache[:n]
        self.prefix_copies += 1
        return n

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
        batch = self._batch
        batch.clear()
        outputs: list[tuple[Slot, int]] = []
        decoding: list[Slot] = []
        prefilling: list[Slot] = []
        for s in self.slots:
            if s.state == DECODE:
                outputs.append((s, batch.add(s.last_token, len(s.cache), s.seq)))
                decoding.append(s)
            elif s.state == PREFILL:
                prefilling.append(s)
        n_decode = batch.n
        for s in prefilling:
            s.chunk = 0
            s.skipped += 1  # unless planned, below
        for s, take in plan_prefill(prefilling, self.prefill_chunk):
            prompt = s.job.prompt  # type: ignore[union-attr]
            start = s.prompt_pos
            whole = start + take == len(prompt)
            last = batch.add_run(
                prompt[start : start + take], len(s.cache), s.seq, last_logits=whole
            )
            if whole:
                outputs.append((s, last))
            s.chunk = take
            s.skipped = 0
        n = batch.n
        rc = batch.decode(self.ctx)
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
            # llguidance gave up on the grammar (its limits, reached by the client's schema):
            # a 400 naming the field, never an answer the schema does not hold.
            log.warning("grammar engine gave up", extra={"param": params.grammar_param()})
            self._fail(slot, too_complex(params.grammar_param()))
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
                pair_logprobs(slot, emitted)
        elif emitted:
            job.pending.append(emitted)
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
            if job.pending and (not job.text_sent or now - job.last_flush >= self.flush_s):
                self._dirty.append(job)

    def _finish(self, slot: Slot, reason: str) -> None:
        job = slot.job
        assert job is not None and slot.text is not None
        if not slot.text.stopped:
            rest = slot.text.flush()
            if job.params.logprobs is not None:
                pair_logprobs(slot, rest, final=True)
            elif rest:
                job.pending.append(rest)
        job.finish = reason
        self._release(slot)
        self._dirty.append(job)

    def _fail(self, slot: Slot, error: GatewayError) -> None:
        """This answer cannot go on; its KV is sound and stays for prefix reuse."""
        job = slot.job
        assert job is not None
        job.finish = "error"
        job.outbox.append(slots.Failed(error))
        self._release(slot)
        self._dirty.append(job)

    def _reset(self, slot: Slot, error: GatewayError) -> None:
        """A failed decode: the slot's KV is suspect, forget it, tell the client."""
        self.lib.llama_memory_seq_rm(self.mem, slot.seq, -1, -1)
        slot.cache = []
        job = slot.job
        if job is not None:
            job.finish = "error"
            job.outbox.append(slots.Failed(error))
            self._release(slot)
            self._dirty.append(job)

    def _fail_all(self, error: GatewayError) -> None:
        for s in self.slots:
            if s.job is not None:
                self._reset(s, error)

    def _flush(self, *, jobs: list[Job] | None = None) -> None:
        if jobs:
            self._dirty.extend(jobs)
        hand_over(self._dirty, self._post)
