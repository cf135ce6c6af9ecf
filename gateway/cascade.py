"""Escalation on local confidence (`route: cascade`): the confidence of a local answer, and
what one cascade decision did, for headers, metrics and the request log.

The local model answers first with its token logprobs asked for internally (the engine
computes them anyway for clients that ask); the answer's mean and minimum token logprob are
its confidence. Below the rule's threshold, and with the cloud reachable, the dispatcher
discards the local answer and asks the cloud. The logprobs reach the client only if it asked.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from .routing.policy import Thresholds
from .schemas import AnyRequest, ChatRequest


@dataclass(frozen=True, slots=True)
class Confidence:
    """Token logprob statistics of one local answer (all choices pooled)."""

    mean_logprob: float
    min_logprob: float
    tokens: int

    def below(self, t: Thresholds) -> tuple[str, str] | None:
        """(signal, why) when the answer is unsure under `t`, None when it is confident."""
        if self.tokens == 0:
            return "empty_answer", "the local answer has no tokens"
        if t.mean_logprob is not None and self.mean_logprob < t.mean_logprob:
            return "mean_logprob", f"mean_logprob={self.mean_logprob:.3f}<{t.mean_logprob:g}"
        if t.min_logprob is not None and self.min_logprob < t.min_logprob:
            return "min_logprob", f"min_logprob={self.min_logprob:.3f}<{t.min_logprob:g}"
        return None

    def describe(self) -> str:
        return f"mean={self.mean_logprob:.3f} min={self.min_logprob:.3f} tokens={self.tokens}"


def of_logprobs(values: Iterable[float]) -> Confidence:
    lps = [float(v) for v in values]
    if not lps:
        return Confidence(0.0, 0.0, 0)
    return Confidence(math.fsum(lps) / len(lps), min(lps), len(lps))


def token_logprobs(obj: dict[str, Any]) -> list[float]:
    """Every token logprob of a chat or completions response (all choices)."""
    out: list[float] = []
    for choice in obj.get("choices") or []:
        lp = choice.get("logprobs") or {}
        if "content" in lp:  # chat
            out += [e["logprob"] for e in lp.get("content") or []]
        else:  # completions' legacy shape
            out += [v for v in lp.get("token_logprobs") or [] if v is not None]
    return out


def client_wants_logprobs(req: AnyRequest) -> bool:
    if isinstance(req, ChatRequest):
        return bool(req.logprobs)
    return req.logprobs is not None


def probing(req: AnyRequest) -> AnyRequest:
    """The request as the local model gets it: with token logprobs (no alternatives)."""
    if client_wants_logprobs(req):
        return req
    if isinstance(req, ChatRequest):
        return req.model_copy(update={"logprobs": True, "top_logprobs": 0})
    if req.echo:
        return req  # echo with logprobs needs prompt logprobs: no confidence, stays local
    return req.model_copy(update={"logprobs": 0})


def strip_logprobs(obj: dict[str, Any]) -> None:
    """Take the internally asked-for logprobs out of a response the client gets."""
    for choice in obj.get("choices") or []:
        if "logprobs" in choice:
            choice["logprobs"] = None


@dataclass
class CascadeRecord:
    """One cascade decision: the structured event the request log carries (and a label
    source: an escalation has both a local and a cloud answer to the same request)."""

    to: str  # the cloud model unsure answers go to
    mean_logprob: float | None = None
    min_logprob: float | None = None
    tokens: int = 0  # local completion tokens the confidence was computed from
    escalated: bool = False
    signal: str = ""  # mean_logprob | min_logprob | empty_answer | "" when confident
    why: str = ""  # human-readable: which bound failed, or why nothing was escalated
    outcome: str = "kept"  # kept | escalated | degraded | stream_local | no_logprobs
    local_answer: bool = True  # a local answer exists (discarded when escalated)
    cloud_answer: bool = False  # a cloud answer exists (the one the client got)
    local_prompt_tokens: int = 0
    local_completion_tokens: int = 0
    # The discarded local text, kept only in memory for the learning loop's judge (never
    # logged: as_dict leaves it out).
    local_text: str | None = field(default=None, repr=False)

    @property
    def local_tokens(self) -> int:
        return self.local_prompt_tokens + self.local_completion_tokens

    def headers(self) -> dict[str, str]:
        h = {"x-gateway-escalated": "true" if self.escalated else "false"}
        if self.why:
            h["x-gateway-escalation-reason"] = self.why
        if self.mean_logprob is not None and self.min_logprob is not None:
            h["x-gateway-local-confidence"] = (
                f"mean_logprob={self.mean_logprob:.3f}; min_logprob={self.min_logprob:.3f}"
            )
        return h

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["local_text"]
        return d
