"""Whether a request fits a cloud model's context window (`cloud.models[].context_window`).

Counted as OpenAI counts it: the prompt plus the answer it may grow to, `max_tokens` as the
upstream call clamps it (`max_output_tokens`); the prompt alone when the request sets none. A
request past a model's window is one that model would refuse, so the router treats the model
as unable to serve it (policy.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .features import Features


class _Sized(Protocol):
    """A cloud model's settings (settings.CloudModel), as far as its window goes."""

    name: str
    context_window: int
    max_output_tokens: int


@dataclass(frozen=True, slots=True)
class ContextWindow:
    tokens: int  # context_window: prompt and answer together
    max_output: int  # max_output_tokens: what the upstream call clamps max_tokens to

    def needed(self, f: Features) -> int:
        """The tokens of the model's context this request takes."""
        answer = min(f.max_tokens, self.max_output) if f.max_tokens else 0
        return f.prompt_tokens + answer

    def too_small(self, f: Features) -> str | None:
        """Why this window cannot hold the request, or None when it can."""
        needed = self.needed(f)
        if needed <= self.tokens:
            return None
        asked = "prompt" if not f.max_tokens else "prompt and max_tokens"
        return f"{asked} need about {needed} tokens, context_window {self.tokens}"


def context_windows(models: Iterable[_Sized]) -> dict[str, ContextWindow]:
    """The windows of the configured cloud models, by the name clients use."""
    return {m.name: ContextWindow(m.context_window, m.max_output_tokens) for m in models}
