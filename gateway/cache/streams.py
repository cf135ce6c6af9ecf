"""Streams and the cache: assemble a passing stream into one response, replay a stored one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from ..backends.base import Chunk
from ..backends.chunks import ChunkSequence


class StreamAssembler:
    """Builds the whole response from chat or completion chunks as they pass by."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.text: list[str] = []
        self.refusal: list[str] = []
        self.role = "assistant"
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.is_chat = True

    def add(self, obj: dict[str, Any]) -> None:
        if not self.head:
            self.head = {k: obj.get(k) for k in ("id", "created", "model")}
            self.is_chat = obj.get("object", "chat.completion.chunk") != "text_completion"
        if obj.get("usage"):
            self.usage = obj["usage"]
        for choice in obj.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            if not self.is_chat:
                self.text.append(choice.get("text") or "")
                continue
            delta = choice.get("delta") or {}
            if delta.get("role"):
                self.role = delta["role"]
            if delta.get("content"):
                self.text.append(delta["content"])
            if delta.get("refusal"):
                self.refusal.append(delta["refusal"])
            for call in delta.get("tool_calls") or []:
                slot = self.tool_calls.setdefault(
                    call.get("index", 0),
                    {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
                )
                if call.get("id"):
                    slot["id"] = call["id"]
                fn = call.get("function") or {}
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""

    def result(self) -> dict[str, Any]:
        text = "".join(self.text)
        if self.is_chat:
            # `refusal` is required in a chat answer: null unless the model refused.
            message: dict[str, Any] = {
                "role": self.role,
                "content": text or None,
                "refusal": "".join(self.refusal) or None,
            }
            if self.tool_calls:
                message["tool_calls"] = [self.tool_calls[i] for i in sorted(self.tool_calls)]
            choice: dict[str, Any] = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": self.finish_reason or "stop",
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": self.finish_reason or "stop",
            }
            obj = "text_completion"
        out = {**self.head, "object": obj, "choices": [choice]}
        if self.usage:
            out["usage"] = self.usage
        return out


async def assemble_then(
    chunks: AsyncIterator[Chunk], done: Callable[[dict[str, Any]], None]
) -> AsyncIterator[Chunk]:
    """Pass chunks through; only a stream that ended normally reaches `done`, never a part."""
    asm = StreamAssembler()
    try:
        async for chunk in chunks:
            asm.add(chunk.obj)
            yield chunk
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    done(asm.result())


def _pieces(text: str) -> list[str]:
    """Split an answer into word-sized pieces so a replay streams like the original."""
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)] if text else []


async def replay(obj: dict[str, Any]) -> AsyncIterator[Chunk]:
    """A stored response as a stream of OpenAI chunks (role, pieces, finish, usage)."""
    choice = (obj.get("choices") or [{}])[0]
    chat = obj.get("object") != "text_completion"
    seq = ChunkSequence("chat" if chat else "completion", model=obj.get("model") or "")
    message = choice.get("message") or {}
    opening = seq.role(message.get("role", "assistant"))
    if opening is not None:
        yield opening
    for piece in _pieces((message.get("content") if chat else choice.get("text")) or ""):
        yield seq.text(piece)
    if chat and message.get("tool_calls"):
        yield seq.tool_calls([{**c, "index": i} for i, c in enumerate(message["tool_calls"])])
    yield seq.finish(choice.get("finish_reason") or "stop")
    if obj.get("usage"):
        yield seq.usage(obj["usage"])


def as_hit(obj: dict[str, Any]) -> dict[str, Any]:
    """A stored answer as a plain response: honest usage, the prompt tokens marked cached."""
    out = dict(obj)
    if out.get("object") == "chat.completion.chunk":
        out["object"] = "chat.completion"
    usage = dict(out.get("usage") or {})
    if usage:
        usage["prompt_tokens_details"] = {
            **(usage.get("prompt_tokens_details") or {}),
            "cached_tokens": usage.get("prompt_tokens", 0),
        }
        out["usage"] = usage
    return out
