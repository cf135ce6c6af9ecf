"""OpenAI's shapes for several choices: whole responses and stream chunks, per choice index."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ...schemas import chat_chunk, completion_chunk, new_id
from . import structured
from .sampling import TokenLogprob

if TYPE_CHECKING:
    from .choices import Answer, _Choice
    from .engine import Event


def chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": [e.chat() for e in entries], "refusal": None}


def completion_logprobs(entries: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """The legacy shape; text offsets count from the start of the prompt, as OpenAI's do."""
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [{t: lp for t, _, lp in e.top} for e in entries],
        "text_offset": [offset + e.start for e in entries],
    }


def _wants_logprobs(answer: Answer) -> bool:
    return bool(answer.choices) and answer.choices[0].params.logprobs is not None


def _chat_message(answer: Answer, c: _Choice) -> tuple[dict[str, Any], str]:
    text = "".join(c.parts)
    if answer.tools is not None:
        calls = structured.tool_calls(text)
        if calls is not None:
            return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    return {"role": "assistant", "content": text}, c.finish


def whole(answer: Answer) -> dict[str, Any]:
    """The non-streamed response with every choice."""
    lp = _wants_logprobs(answer)
    choices: list[dict[str, Any]] = []
    chat = answer.endpoint == "chat"
    for c in answer.choices:
        if chat:
            message, finish = _chat_message(answer, c)
            choices.append(
                {
                    "index": c.index,
                    "message": message,
                    "logprobs": chat_logprobs(c.entries) if lp else None,
                    "finish_reason": finish,
                }
            )
        else:
            choices.append(
                {
                    "index": c.index,
                    "text": c.echo + "".join(c.parts),
                    "logprobs": completion_logprobs(c.entries, c.offset) if lp else None,
                    "finish_reason": c.finish,
                }
            )
    obj: dict[str, Any] = {
        "id": new_id("chatcmpl" if chat else "cmpl"),
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": answer.backend.model_name,
        "choices": choices,
        "usage": answer.usage(),
    }
    if chat:
        obj["system_fingerprint"] = None
    return obj


class Streamer:
    """Chunks for one streamed answer: each choice's pieces under its own index."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.chat = answer.endpoint == "chat"
        self.rid = new_id("chatcmpl" if self.chat else "cmpl")
        self.created = int(time.time())
        self.logprobs = False

    def _chunk(
        self,
        c: _Choice,
        *,
        delta: dict[str, Any] | None = None,
        text: str = "",
        finish: str | None = None,
        logprobs: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "rid": self.rid,
            "model": self.answer.backend.model_name,
            "created": self.created,
            "finish_reason": finish,
            "logprobs": logprobs,
        }
        if self.chat:
            obj = chat_chunk(delta=delta or {}, **kw)
        else:
            obj = completion_chunk(text=text, **kw)
        obj["choices"][0]["index"] = c.index
        return obj

    def on(self, c: _Choice, event: Event) -> list[dict[str, Any]]:
        """The chunks one engine event of choice `c` becomes."""
        from .choices import _collect

        kind = event[0]
        if kind == "start":
            self.logprobs = c.params.logprobs is not None
            if self.chat:
                return [self._chunk(c, delta={"role": "assistant", "content": ""})]
            return [self._chunk(c, text=c.echo)] if c.echo else []
        if kind == "text":
            pairs = _collect(c, event[1])
            if self.chat and self.answer.tools is not None:
                return []  # a call is sent whole once it is complete
            return [self._piece(c, text, lps) for text, lps in pairs]
        if kind == "done":
            return self._done(c)
        return []

    def _piece(self, c: _Choice, text: str, lps: list[TokenLogprob]) -> dict[str, Any]:
        if self.chat:
            lp = chat_logprobs(lps) if self.logprobs else None
            return self._chunk(c, delta={"content": text}, logprobs=lp)
        lp = completion_logprobs(lps, c.offset) if self.logprobs else None
        return self._chunk(c, text=text, logprobs=lp)

    def _done(self, c: _Choice) -> list[dict[str, Any]]:
        if not self.chat:
            return [self._chunk(c, text="", finish=c.finish)]
        message, finish = _chat_message(self.answer, c)
        out: list[dict[str, Any]] = []
        if "tool_calls" in message:
            calls = [{"index": k, **call} for k, call in enumerate(message["tool_calls"])]
            out.append(self._chunk(c, delta={"tool_calls": calls}))
        elif self.answer.tools is not None and message["content"]:
            out.append(self._chunk(c, delta={"content": message["content"]}))
        out.append(self._chunk(c, delta={}, finish=finish))
        return out

    def usage_chunk(self) -> dict[str, Any]:
        """Always offered; the handler drops it unless stream_options.include_usage."""
        kw: dict[str, Any] = {
            "rid": self.rid,
            "model": self.answer.backend.model_name,
            "created": self.created,
            "usage_": self.answer.usage(),
        }
        return chat_chunk(delta=None, **kw) if self.chat else completion_chunk(text=None, **kw)
