"""A request body as a typed request: parsed, bounded and validated, or a 400 that says why."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from ..errors import InvalidRequest
from ..schemas import ChatRequest, CompletionRequest
from ..settings import ServerSettings

_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter"}


async def read_json(request: web.Request) -> dict[str, Any]:
    # Content-Type is not enforced: `curl -d` sends form encoding and users expect it to work.
    raw = await request.read()  # bounded by the app's client_max_size (413 above it)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(
            "The request body is not valid UTF-8.", code="invalid_encoding"
        ) from None
    try:
        body = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        # ValueError also covers integers longer than Python's digit limit and NaN/Infinity.
        raise InvalidRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
            "using your HTTP library correctly.)",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    if "\\ud" in text.lower() and _has_lone_surrogate(body):
        raise InvalidRequest("The request contains invalid unicode.", code="invalid_encoding")
    return body


def _no_constants(name: str) -> Any:
    """NaN and Infinity are not JSON; passed on, they would reach the cloud as invalid JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _has_lone_surrogate(body: dict[str, Any]) -> bool:
    """A \\ud800-style escape without its pair decodes to text that cannot be UTF-8 encoded."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def validation_error(exc: ValidationError) -> InvalidRequest:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    param = loc[0] if loc else None
    path = ".".join(loc)
    code = _CODES.get(err["type"], "invalid_value" if "type" not in err["type"] else "invalid_type")
    if err["type"] == "missing":
        message = f"Missing required parameter: '{path}'."
    else:
        message = f"Invalid value for '{path}': {err['msg']}."
    return InvalidRequest(message, param=param, code=code)


def _too_many(what: str, n: int, bound: int, setting: str, param: str, code: str) -> None:
    if n > bound:
        raise InvalidRequest(
            f"Too many {what}: {n} > {bound} (server.{setting}).", param=param, code=code
        )


def _check_shape(body: dict[str, Any], server: ServerSettings) -> None:
    """Bounds checked on the raw JSON, before validation spends time on a hostile body."""
    messages = body.get("messages")
    if isinstance(messages, list):
        _too_many(
            "messages",
            len(messages),
            server.max_messages,
            "max_messages",
            "messages",
            "too_many_messages",
        )
        parts = sum(
            len(m["content"])
            for m in messages
            if isinstance(m, dict) and isinstance(m.get("content"), list)
        )
        _too_many(
            "content parts",
            parts,
            server.max_content_parts,
            "max_content_parts",
            "messages",
            "too_many_content_parts",
        )
    for field in ("tools", "functions"):
        value = body.get(field)
        if isinstance(value, list):
            _too_many(field, len(value), server.max_tools, "max_tools", field, "too_many_tools")
    stop = body.get("stop")
    if isinstance(stop, list):
        _too_many(
            "stop sequences",
            len(stop),
            server.max_stop,
            "max_stop",
            "stop",
            "too_many_stop_sequences",
        )


def check_limits(req: ChatRequest | CompletionRequest, server: ServerSettings) -> None:
    """Bounds on what one request may ask for, beyond what the schema says."""
    if (req.n or 1) > server.max_n:
        raise InvalidRequest(f"n must be at most {server.max_n}.", param="n", code="invalid_value")
    if isinstance(req, CompletionRequest) and len(req.prompts()) * (req.n or 1) > server.max_n:
        # Each prompt of a list is a choice (n of them): the same bound as n.
        raise InvalidRequest(
            f"A prompt list times n must be at most {server.max_n} choices (server.max_n).",
            param="prompt",
            code="invalid_value",
        )
    if any(len(s) > server.max_stop_chars for s in req.stop_list()):
        raise InvalidRequest(
            f"A stop sequence is longer than {server.max_stop_chars} characters "
            "(server.max_stop_chars).",
            param="stop",
            code="stop_sequence_too_long",
        )
    chars = req.content_chars()
    if chars > server.max_content_chars:
        raise InvalidRequest(
            f"The request has {chars} characters of text; this gateway accepts at most "
            f"{server.max_content_chars} (server.max_content_chars).",
            param="messages" if isinstance(req, ChatRequest) else "prompt",
            code="content_too_long",
        )


def parse_request(
    model: type[ChatRequest] | type[CompletionRequest],
    body: dict[str, Any],
    server: ServerSettings,
) -> Any:
    """Validate a request body within the server's bounds (400 naming the bound past them)."""
    _check_shape(body, server)
    try:
        req = model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    check_limits(req, server)
    return req
