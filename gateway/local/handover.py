"""Engine thread to event loop: a job's text and logprobs, handed over in one wake-up per step.

Every hand-over wakes the event loop, which takes CPU from llama.cpp; so the engine marks jobs
due (first text, a finish, an error, or `flush_s` since the last hand-over) and `hand_over`
sends all of them in one call after the step.
"""

from __future__ import annotations

import time

from .sampling import TokenLogprob
from .slots import Done, Event, Job, Post, Slot, Started, Text


def pair_logprobs(slot: Slot, emitted: str, *, final: bool = False) -> None:
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
        slot.job.pending.append((emitted, ready))


def hand_over(dirty: list[Job], post: Post) -> None:
    """Post every due job's pending events (start, text, errors, done) and clear `dirty`."""
    if not dirty:
        return
    batch: list[tuple[Job, list[Event]]] = []
    seen: set[int] = set()
    now = time.monotonic()
    for job in dirty:
        if id(job) in seen:
            continue
        seen.add(id(job))
        events: list[Event] = [e for e in job.outbox if isinstance(e, Started)]
        if job.pending:
            events.append(Text(job.pending))
            job.pending = []
            job.text_sent = True
        events += [e for e in job.outbox if not isinstance(e, Started)]
        if job.finish is not None and job.finish != "error":
            events.append(Done(job.finish))
        job.outbox = []
        job.last_flush = now
        if events and not job.cancelled:
            batch.append((job, events))
    dirty.clear()
    if batch:
        post(batch)
