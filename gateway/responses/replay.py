"""A stored response replayed as the event stream that created it (`GET /v1/responses/{id}
?stream=true`), as OpenAI's spec defines the retrieval: the same event types in the same order
as a streamed create, with the stored ids, each text and each call's arguments in one delta,
and `starting_after` skipping the events a reconnecting client already has."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..errors import InvalidRequest
from .render import event_frame


def stream_param(value: str | None) -> bool:
    """The `stream` query parameter: true or false (absent: false), else a 400 naming it."""
    if value is None or value.lower() == "false":
        return False
    if value.lower() == "true":
        return True
    raise InvalidRequest(
        f"Invalid value for 'stream': {value[:32]!r}; expected true or false.",
        param="stream",
        code="invalid_value",
    )


def starting_after(value: str | None) -> int:
    """The `starting_after` query parameter: a sequence number (absent: -1, every event)."""
    if value is None:
        return -1
    try:
        n: int | None = int(value)
    except ValueError:
        n = None
    if n is None or n < -1:
        raise InvalidRequest(
            f"Invalid value for 'starting_after': {value[:32]!r}; expected a sequence number.",
            param="starting_after",
            code="invalid_value",
        )
    return n


def refuse_include(values: list[str]) -> None:
    """`include[]` on retrieval asks for output the stored response was not made with (its
    create request's `include` decided what it holds): refused by name, never ignored."""
    if values:
        raise InvalidRequest(
            f"'include' ({values[0][:64]!r}) is not supported when retrieving a stored response "
            "from this gateway: the response holds what its create request asked for.",
            param="include",
            code="unsupported_parameter",
        )


def events(response: dict[str, Any], after: int = -1) -> Iterator[bytes]:
    """The SSE frames of `response` replayed, those numbered above `after`."""
    for seq, (kind, fields) in enumerate(_events(response)):
        if seq > after:
            yield event_frame(kind, seq, fields)


def _events(final: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    # The response as it was when it began: in progress, nothing out yet.
    start = {k: v for k, v in final.items() if k != "usage"}  # no usage until it is whole
    start.update(status="in_progress", output=[], incomplete_details=None, error=None)
    yield "response.created", {"response": start}
    yield "response.in_progress", {"response": start}
    for index, item in enumerate(final.get("output") or []):
        yield from _item(index, item)
    status = final.get("status")
    kind = {"incomplete": "response.incomplete", "failed": "response.failed"}.get(
        status or "", "response.completed"
    )
    yield kind, {"response": final}


def _item(index: int, item: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    iid = item.get("id")
    if item.get("type") == "message":
        parts = item.get("content") or []
        yield (
            "response.output_item.added",
            {
                "output_index": index,
                "item": {**item, "status": "in_progress", "content": []},
            },
        )
        for ci, part in enumerate(parts):
            where = {"item_id": iid, "output_index": index, "content_index": ci}
            kind = part.get("type")
            empty = {**part, "text": ""} if kind == "output_text" else {**part, kind: ""}
            yield "response.content_part.added", {**where, "part": empty}
            if kind == "output_text":
                text = part.get("text") or ""
                logprobs = part.get("logprobs") or []
                yield "response.output_text.delta", {**where, "delta": text, "logprobs": logprobs}
                yield "response.output_text.done", {**where, "text": text, "logprobs": logprobs}
            elif kind == "refusal":
                refusal = part.get("refusal") or ""
                yield "response.refusal.delta", {**where, "delta": refusal}
                yield "response.refusal.done", {**where, "refusal": refusal}
            yield "response.content_part.done", {**where, "part": part}
    elif item.get("type") == "function_call":
        yield (
            "response.output_item.added",
            {
                "output_index": index,
                "item": {**item, "status": "in_progress", "arguments": ""},
            },
        )
        where = {"item_id": iid, "output_index": index}
        arguments = item.get("arguments") or ""
        yield "response.function_call_arguments.delta", {**where, "delta": arguments}
        yield (
            "response.function_call_arguments.done",
            {
                **where,
                "name": item.get("name"),
                "arguments": arguments,
            },
        )
    else:  # an item of a kind this gateway does not make: added and done whole
        yield "response.output_item.added", {"output_index": index, "item": item}
    yield "response.output_item.done", {"output_index": index, "item": item}
