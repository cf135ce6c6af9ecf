"""A chat answer (whole or streamed) in the Responses API's shape.

Whole: one `response` object whose `output` holds a `message` item (its text as an
`output_text` part) and a `function_call` item per tool call. Streamed: the Responses event
sequence, each event an SSE `event:` + `data:` frame with a rising `sequence_number`:
response.created, response.in_progress, then per item output_item.added, (content_part.added,
output_text.delta..., output_text.done, content_part.done | function_call_arguments.delta...,
function_call_arguments.done), output_item.done, and last response.completed (or
response.incomplete when cut by `max_output_tokens`, response.failed after an error).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from ..errors import GatewayError
from .request import ResponsesRequest


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage_of(u: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage in the Responses names."""
    if not u:
        return None
    prompt = int(u.get("prompt_tokens") or 0)
    completion = int(u.get("completion_tokens") or 0)
    details = u.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or 0
    written = details.get("cache_write_tokens") or 0  # 0 from the local model: none written
    reasoning = (u.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(cached), "cache_write_tokens": int(written)},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(reasoning)},
        "total_tokens": prompt + completion,
    }


def _status(finish: str | None) -> tuple[str, dict[str, str] | None]:
    """The response status for a chat finish_reason, and why it is incomplete."""
    if finish == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    if finish == "content_filter":
        return "incomplete", {"reason": "content_filter"}
    return "completed", None


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message(mid: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"id": mid, "type": "message", "role": "assistant", "status": status, "content": parts}


def _call(fid: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": fid,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def event_frame(kind: str, seq: int, fields: dict[str, Any]) -> bytes:
    """One Responses event as its SSE frame (`event:` names the type, as OpenAI sends it)."""
    obj = {"type": kind, "sequence_number": seq, **fields}
    data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return f"event: {kind}\ndata: {data}\n\n".encode()


class Shell:
    """What every state of one response shares: its id, creation time and the request echo."""

    def __init__(self, req: ResponsesRequest, *, model: str) -> None:
        self.req = req
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self.model = model

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
        *,
        incomplete: dict[str, str] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        req = self.req
        # Function tools echoed with `strict`, which the spec requires (null: not said).
        tools = [
            {**t, "strict": t.get("strict")} if t.get("type") == "function" else t
            for t in req.tools or []
        ]
        text: dict[str, Any] = {"format": (req.text or {}).get("format") or {"type": "text"}}
        if (req.text or {}).get("verbosity") is not None:
            text["verbosity"] = req.text["verbosity"]  # type: ignore[index]
        shaped = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "metadata": req.metadata or {},
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True
            if req.parallel_tool_calls is None
            else req.parallel_tool_calls,
            "previous_response_id": req.previous_response_id,
            "reasoning": {"effort": (req.reasoning or {}).get("effort"), "summary": None},
            "store": req.stores(),
            "temperature": req.temperature,
            "text": text,
            "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
            "tools": tools,
            "top_p": req.top_p,
            "truncation": "disabled",
            "usage": usage,
            "user": req.user,
        }
        # Optional in the spec and typed non-null there: left out rather than sent as null
        # (usage before the answer is whole; a user the request did not name).
        for key in ("usage", "user"):
            if shaped[key] is None:
                del shaped[key]
        return shaped


def whole(shell: Shell, completion: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion as a response."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    status, incomplete = _status(choice.get("finish_reason"))
    if isinstance(completion.get("model"), str):
        shell.model = completion["model"]
    item_status = "incomplete" if status == "incomplete" else "completed"
    output: list[dict[str, Any]] = []
    calls = message.get("tool_calls") or []
    parts: list[dict[str, Any]] = []
    if message.get("refusal"):
        parts.append({"type": "refusal", "refusal": message["refusal"]})
    if message.get("content") or not (calls or parts):
        parts.insert(0, _text_part(message.get("content") or ""))
    if parts:
        output.append(_message(new_id("msg"), parts, item_status))
    for c in calls:
        fn = c.get("function") or {}
        output.append(
            _call(
                new_id("fc"),
                c.get("id") or new_id("call"),
                fn.get("name") or "",
                fn.get("arguments") or "",
                item_status,
            )
        )
    return shell.response(status, output, usage_of(completion.get("usage")), incomplete=incomplete)


def history_of(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output as the chat turn a follow-up continues from."""
    text = ""
    calls: list[dict[str, Any]] = []
    for item in output:
        if item.get("type") == "message":
            text += "".join(p.get("text", "") for p in item.get("content") or [])
        elif item.get("type") == "function_call":
            calls.append(
                {
                    "id": item["call_id"],
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]},
                }
            )
    turn: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        turn["tool_calls"] = calls
    elif not text:
        turn["content"] = ""
    return [turn]


class Events:
    """Chat stream chunks in, Responses SSE events out."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self._message: dict[str, Any] | None = None  # the open message item
        self._calls: dict[int, dict[str, Any]] = {}  # open function calls by chat index
        self.finish: str | None = None
        self.usage: dict[str, Any] | None = None
        self.final: dict[str, Any] | None = None
        self.started = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        frame = event_frame(kind, self.seq, fields)
        self.seq += 1
        return frame

    def _start(self) -> bytes:
        """response.created and response.in_progress, once, before any other event.

        Sent with the first chunk rather than before it: the chunk names the model that
        answers (as chat completions report it), and the first events name the same model as
        `response.completed` does. The dispatcher holds that chunk before any byte is sent, so
        nothing waits for it."""
        if self.started:
            return b""
        self.started = True
        snapshot = self.shell.response("in_progress", [], None)
        return self._event("response.created", response=snapshot) + self._event(
            "response.in_progress", response=snapshot
        )

    def chunk(self, obj: dict[str, Any]) -> bytes:
        """The events one chat chunk becomes (often one output_text.delta)."""
        if isinstance(obj.get("model"), str) and obj["model"]:
            if not self.started:
                self.shell.model = obj["model"]
        out = self._start()
        if obj.get("usage"):
            self.usage = obj["usage"]
        for choice in obj.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._text(delta["content"])
            for tc in delta.get("tool_calls") or []:
                out += self._call_delta(tc)
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return out

    def _open_message(self) -> bytes:
        out = self._close_calls()
        item = _message(new_id("msg"), [], "in_progress")
        self._message = item
        self.output.append(item)
        index = len(self.output) - 1
        out += self._event("response.output_item.added", output_index=index, item=dict(item))
        out += self._event(
            "response.content_part.added",
            item_id=item["id"],
            output_index=index,
            content_index=0,
            part=_text_part(""),
        )
        item["content"] = [_text_part("")]
        return out

    def _text(self, piece: str) -> bytes:
        out = self._open_message() if self._message is None else b""
        item = self._message
        assert item is not None
        item["content"][0]["text"] += piece
        return out + self._event(
            "response.output_text.delta",
            item_id=item["id"],
            output_index=self.output.index(item),
            content_index=0,
            delta=piece,
            logprobs=[],
        )

    def _call_delta(self, tc: dict[str, Any]) -> bytes:
        out = b""
        index = tc.get("index", 0)
        fn = tc.get("function") or {}
        item = self._calls.get(index)
        if item is None:
            out += self._close_message()
            item = _call(
                new_id("fc"),
                tc.get("id") or new_id("call"),
                fn.get("name") or "",
                "",
                "in_progress",
            )
            self._calls[index] = item
            self.output.append(item)
            out += self._event(
                "response.output_item.added", output_index=len(self.output) - 1, item=dict(item)
            )
        elif fn.get("name"):
            item["name"] += fn["name"]
        if fn.get("arguments"):
            item["arguments"] += fn["arguments"]
            out += self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=self.output.index(item),
                delta=fn["arguments"],
            )
        return out

    def _item_status(self) -> str:
        return "incomplete" if self.finish == "length" else "completed"

    def _close_message(self) -> bytes:
        item, self._message = self._message, None
        if item is None:
            return b""
        index = self.output.index(item)
        part = item["content"][0]
        item["status"] = self._item_status()
        return (
            self._event(
                "response.output_text.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                text=part["text"],
                logprobs=[],
            )
            + self._event(
                "response.content_part.done",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=part,
            )
            + self._event("response.output_item.done", output_index=index, item=item)
        )

    def _close_calls(self) -> bytes:
        out = b""
        for item in self._calls.values():
            index = self.output.index(item)
            item["status"] = self._item_status()
            out += self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            )
            out += self._event("response.output_item.done", output_index=index, item=item)
        self._calls = {}
        return out

    def end(self) -> bytes:
        """Close what is open and say how the response ended."""
        out = self._start()
        out += b"" if self.output else self._open_message()  # an empty answer is a message too
        out += self._close_message() + self._close_calls()
        status, incomplete = _status(self.finish)
        self.final = self.shell.response(
            status, self.output, usage_of(self.usage), incomplete=incomplete
        )
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._event(kind, response=self.final)

    def failed(self, exc: GatewayError) -> bytes:
        """An error after the stream began: an `error` event, then response.failed."""
        # The response's error takes one of the spec's codes (ResponseErrorCode); the `error`
        # event before it names the gateway's own (`upstream_stream_interrupted`, ...).
        code = "rate_limit_exceeded" if exc.status == 429 else "server_error"
        error = {"code": code, "message": exc.message}
        return (
            self._start()
            + self._event("error", code=exc.code, message=exc.message, param=exc.param)
            + self._event(
                "response.failed",
                response=self.shell.response(
                    "failed", self.output, usage_of(self.usage), error=error
                ),
            )
        )
