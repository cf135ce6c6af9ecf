"""A request body as a typed request: parsed, bounded and validated, or a 400 that says why."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..errors import InvalidRequest
from ..jsonfast import fast_loads
from ..schemas import ChatRequest, CompletionRequest
from ..settings import ServerSettings

M = TypeVar("M", bound=BaseModel)

_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter"}


async def read_json(request: web.Request) -> dict[str, Any]:
    # Content-Type is not enforced: `curl -d` sends form encoding and users expect it to work.
    raw = await request.read()  # bounded by the app's client_max_size (413 above it)
    try:
        # orjson first (several times faster): what it takes, the stdlib reads alike; what it
        # refuses (lone surrogates, NaN, bad UTF-8, maybe-huge integers) gets the stdlib's
        # verdict below.
        fast = fast_loads(raw)
    except ValueError:
        pass
    else:
        if not isinstance(fast, dict):
            raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
        return fast
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


def too_many(what: str, n: int, bound: int, setting: str, param: str, code: str) -> None:
    if n > bound:
        raise InvalidRequest(
            f"Too many {what}: {n} > {bound} (server.{setting}).", param=param, code=code
        )


@dataclass(frozen=True, slots=True)
class BodyBounds:
    """The list bounds of one request body, checked on the raw JSON before validation spends
    time on a hostile body: its items (messages, Responses input) and their content parts,
    then each other bounded list as (field, what the message calls it, setting, code)."""

    items: str
    items_what: str
    lists: tuple[tuple[str, str, str, str], ...]

    def check(self, body: dict[str, Any], server: ServerSettings) -> None:
        items = body.get(self.items)
        if isinstance(items, list):
            limit = server.max_messages
            too_many(self.items_what, len(items), limit, "max_messages", self.items,
                     "too_many_messages")  # fmt: skip
            parts = sum(
                len(i["content"])
                for i in items
                if isinstance(i, dict) and isinstance(i.get("content"), list)
            )
            too_many("content parts", parts, server.max_content_parts, "max_content_parts",
                     self.items, "too_many_content_parts")  # fmt: skip
        for field, what, setting, code in self.lists:
            value = body.get(field)
            if isinstance(value, list):
                too_many(what, len(value), getattr(server, setting), setting, field, code)


_TOOLS = ("tools", "tools", "max_tools", "too_many_tools")
CHAT_SHAPE = BodyBounds(
    "messages",
    "messages",
    (
        _TOOLS,
        ("functions", "functions", "max_tools", "too_many_tools"),
        ("stop", "stop sequences", "max_stop", "too_many_stop_sequences"),
    ),
)
RESPONSES_SHAPE = BodyBounds("input", "input items", (_TOOLS,))


def validated(model: type[M], body: dict[str, Any]) -> M:
    """`model` validated from `body`, or the 400 naming the first field that is wrong."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None


def check_bounds(req: ChatRequest | CompletionRequest, server: ServerSettings) -> None:
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
    CHAT_SHAPE.check(body, server)
    req = validated(model, body)
    check_bounds(req, server)
    return req
