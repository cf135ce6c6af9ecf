"""Which strings of a request leave the box, and the one private-data scan over all of them.

Deny by default: every string value and every object key of the request, at any depth, is
scanned (routing/pii/), whatever field it is in, known to the gateway or not: a tool-call's
`arguments`, `user`, a message's `name`, `metadata` keys and values, a JSON schema's property
names and descriptions, fields OpenAI adds next year. The only strings skipped are those at
the few allow-listed paths below (roles, part and tool types, tool and call names and ids,
enum-valued options, the model name), and only when the value looks like an identifier:
letters, digits and `_.:-`, at most 128 characters, at least one letter. A value that does
not (an e-mail address, a sentence, a bare run of digits) is scanned like any other.
Identifiers are skipped because some are machine-made (a uuid's digit groups can read as a
phone number), not to save time.

Linear in the size of the request: one walk collects the strings, one pass of the detectors
runs over them joined. `budget` bounds the walk on the event loop: past it, `TooLarge` tells
the caller to start again off the loop.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from .pii import Detector, default_detector

# Joins the collected strings: no detector pattern matches across a NUL (none allows it in a
# match, and it is a non-word character for the `\b` anchors), so two neighbouring strings can
# never make one false match, nor hide one.
_SEP = "\x00"
_IDENT = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_ANY = "*"  # any list index
_SKIP = ""  # in a trie node: a string here may be skipped when identifier-shaped
# What one node (object, list, string, number) weighs against `budget`, which counts
# characters: a step of this walk in Python costs what dozens of characters of regex do.
NODE_COST = 32


def _paths(*specs: str) -> dict[str, Any]:
    """The allow-list as a trie: "messages.*.role" -> {"messages": {"*": {"role": {"": True}}}}."""
    trie: dict[str, Any] = {}
    for spec in specs:
        node = trie
        for part in spec.split("."):
            node = node.setdefault(part, {})
        node[_SKIP] = True
    return trie


# Fields the gateway or the OpenAI API defines as identifiers or enums, in the chat body that
# goes upstream (a Responses request is scanned as the chat request it becomes), completions
# and embeddings. Free text is never listed here: `name` of a message (a participant's name),
# descriptions, arguments, stop sequences, `user`, metadata.
_CHAT = _paths(
    "model",
    "messages.*.role",
    "messages.*.tool_call_id",
    "messages.*.tool_calls.*.id",
    "messages.*.tool_calls.*.type",
    "messages.*.tool_calls.*.function.name",
    "messages.*.function_call.name",
    "messages.*.content.*.type",
    "messages.*.content.*.image_url.detail",
    "messages.*.content.*.input_audio.format",
    "messages.*.content.*.file.file_id",
    "tools.*.type",
    "tools.*.function.name",
    "functions.*.name",
    "tool_choice",
    "tool_choice.type",
    "tool_choice.function.name",
    "function_call",
    "function_call.name",
    "response_format.type",
    "response_format.json_schema.name",
    "reasoning_effort",
    "service_tier",
    "verbosity",
    "modalities.*",
    "audio.voice",
    "audio.format",
    "prediction.type",
    "web_search_options.search_context_size",
)
_COMPLETION = _paths("model")
_EMBEDDING = _paths("model", "encoding_format")


class TooLarge(Exception):
    """The request is larger than the walk's budget: scan it off the event loop."""


def _identifier(value: str) -> bool:
    return _IDENT.fullmatch(value) is not None and any(c.isalpha() for c in value)


def _items(node: Any) -> Any:
    """The (key, value) pairs of a dict or a validated model (set fields and extras)."""
    if isinstance(node, BaseModel):
        # What upstream_body() dumps: the fields set (extras included), never defaults.
        names = dict.fromkeys([*node.model_fields_set, *(node.model_extra or {})])
        return [(k, getattr(node, k)) for k in names]
    return node.items()


def strings(root: Any, allowed: dict[str, Any], *, budget: int | None = None) -> list[str]:
    """Every string `root` holds that is not an allow-listed identifier: values and keys.

    Iterative (a deeply nested body cannot exhaust the stack). `budget` counts characters
    plus NODE_COST per node (an object's or list's members are charged before they are
    gone through, so one wide object cannot overrun it); past it, TooLarge.
    """
    out: list[str] = []
    size = 0
    stack: list[tuple[Any, dict[str, Any] | None]] = [(root, allowed)]
    while stack:
        node, trie = stack.pop()
        size += NODE_COST
        if isinstance(node, str):
            if trie is not None and trie.get(_SKIP) and _identifier(node):
                continue
            out.append(node)
            size += len(node)
        elif isinstance(node, (dict, BaseModel)):
            if isinstance(node, dict):
                size += NODE_COST * len(node)  # charged before a wide object is gone through
                _check(size, budget)
            for key, value in _items(node):
                if value is None:
                    continue
                key = str(key)
                out.append(key)
                size += len(key)
                stack.append((value, trie.get(key) if trie is not None else None))
        elif isinstance(node, (list, tuple)):
            size += NODE_COST * len(node)
            _check(size, budget)
            sub = trie.get(_ANY) if trie is not None else None
            stack.extend((v, sub) for v in node)
        # numbers, booleans, None: nothing a detector could read
        _check(size, budget)
    return out


def _check(size: int, budget: int | None) -> None:
    if budget is not None and size > budget:
        raise TooLarge


def scan(
    root: Any,
    allowed: dict[str, Any],
    *,
    budget: int | None = None,
    detector: Detector | None = None,
) -> tuple[str, ...]:
    """The kinds of private data (routing/pii/) anywhere in `root` but allow-listed ids;
    `detector` is the policy's (the default configuration's when None)."""
    return (detector or default_detector()).find(_SEP.join(strings(root, allowed, budget=budget)))


def scan_chat(
    req: Any, *, budget: int | None = None, detector: Detector | None = None
) -> tuple[str, ...]:
    return scan(req, _CHAT, budget=budget, detector=detector)


def scan_completion(
    req: Any, *, budget: int | None = None, detector: Detector | None = None
) -> tuple[str, ...]:
    return scan(req, _COMPLETION, budget=budget, detector=detector)


def embedding_strings(req: Any, *, budget: int | None = None) -> list[str]:
    """Every string of an embedding request but `input` (the caller scans it with its token
    ids, decoded, in the same pass)."""
    body = {k: v for k, v in _items(req) if k != "input"}
    return strings(body, _EMBEDDING, budget=budget)
