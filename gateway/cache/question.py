"""What the semantic cache compares by meaning, and what must match exactly.

The question is the last message of a chat request when a user wrote it as text (a Responses
request is a chat request by then, its input included). Everything else, the tenant, the
model, the system prompt, every earlier turn, tools, response format and sampling, is hashed
as the exact cache hashes it into the partition the question is searched in: the same words
after another history, prompt or temperature are another partition, so never a hit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..schemas import AnyRequest, ChatRequest
from .answers import body_key

# Stands in for the question in the partition's body: any fixed value would do.
_ASKED = "\x00semantic-cache:question\x00"


@dataclass(frozen=True, slots=True)
class Asked:
    question: str  # the last user message's text
    partition: str  # hex sha256 of everything else


def asked_of(req: AnyRequest, *, target: str, endpoint: str, tenant: str | None) -> Asked | None:
    """The request's question and partition; None when it has no question to compare (not a
    chat request, the last turn not a user's, or not text alone: an image is not compared)."""
    if not isinstance(req, ChatRequest):
        return None
    last = req.messages[-1]
    if last.role != "user" or last.has_image():
        return None
    if isinstance(last.content, list) and any(p.type != "text" for p in last.content):
        return None  # audio, files: parts whose meaning the encoder does not read
    question = last.text().strip()
    if not question:
        return None
    body = req.upstream_body()
    messages = list(body["messages"])
    turn = dict(messages[-1])
    turn["content"] = _ASKED
    messages[-1] = turn
    body["messages"] = messages
    partition = body_key(body, target=target, endpoint=endpoint, tenant=tenant)
    return Asked(question, partition)
