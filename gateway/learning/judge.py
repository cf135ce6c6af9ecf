"""The pairwise judge prompt (MT-Bench style) and the reading of its verdict.

The judge sees the user's conversation and two answers, A and B, and must end with `[[A]]`,
`[[B]]` or `[[C]]` (a tie), the format of the MT-Bench pairwise judge (Zheng et al., 2023).
Which answer is the local one is a fair coin per judgement from the `secrets` module, so a
judge that favours the first position does not favour the local model on average, and no
client can predict (or choose, through its `x-request-id`) where its answer will sit.
Anything but exactly one distinct verdict is unparsable and gives no label.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from ..schemas import AnyRequest, ChatRequest

# What the judge reads is bounded: its cost must not grow with a huge prompt or answer.
QUESTION_CHARS = 6000
ANSWER_CHARS = 3000

SYSTEM = (
    "You are an impartial judge. Compare the two AI assistants' answers to the user's request "
    "shown below and decide which one follows the instructions and answers the request "
    "better. Weigh helpfulness, relevance, accuracy, depth and level of detail. The order in "
    "which the answers appear and their length must not influence you, nor the assistants' "
    "names. Explain your comparison in a few sentences, then give your verdict on the last "
    'line, exactly "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, or '
    '"[[C]]" for a tie.'
)

_VERDICT = re.compile(r"\[\[([ABC])\]\]")


@dataclass(frozen=True)
class Pair:
    """A judge request and where the local answer sits in it."""

    messages: list[dict[str, str]]
    local_is_a: bool


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 200] + "\n[...]\n" + text[-199:]


def conversation(req: AnyRequest) -> str:
    if isinstance(req, ChatRequest):
        lines = [f"[{m.role}]\n{m.text()}" for m in req.messages if m.text()]
        return "\n\n".join(lines)
    return req.prompt_text()


def local_first() -> bool:
    """An unpredictable coin: half the local answers are shown as A, half as B."""
    return secrets.randbits(1) == 1


def pair(req: AnyRequest, local: str, cloud: str, *, local_is_a: bool) -> Pair:
    a_local = local_is_a
    a, b = (local, cloud) if a_local else (cloud, local)
    user = (
        f"[User request]\n{_clip(conversation(req), QUESTION_CHARS)}\n\n"
        f"[The start of assistant A's answer]\n{_clip(a, ANSWER_CHARS)}\n"
        "[The end of assistant A's answer]\n\n"
        f"[The start of assistant B's answer]\n{_clip(b, ANSWER_CHARS)}\n"
        "[The end of assistant B's answer]"
    )
    return Pair([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}], a_local)


def verdict(text: str) -> str | None:
    """ "A", "B" or "C" (tie); None unless the text names exactly one of them."""
    found = set(_VERDICT.findall(text))
    return found.pop() if len(found) == 1 else None


def label_of(v: str, local_is_a: bool) -> float:
    """1.0 when the cloud's answer won (the local one was not good enough), else 0.0."""
    if v == "C":
        return 0.0  # as good as the cloud's: local was enough
    local_won = (v == "A") == local_is_a
    return 0.0 if local_won else 1.0
