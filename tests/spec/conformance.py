"""Every answer an in-process gateway sends, checked against OpenAI's published response schemas.

The schemas are vendored (openai_responses.json: the response schemas of the operations the
gateway serves and all they reference, from openai/openai-openapi at the commit the file
names). tests/spec/capture.py tees what a gateway writes (`StreamResponse.write` and
`write_eof`, so every client of the suite is covered, whatever library it is): in the test's
process for the in-process gateways, and in each gateway process the suite starts
(GatewayProcess runs `python -m tests.spec.gateway`, which writes what it finds to a file the
suite reads after every test). Each finished answer goes to `Conformance.check`: a whole
answer against its schema, a stream frame by frame, a Responses event against the schema its
`type` names, an error body against ErrorResponse. A test during which a violation was seen
fails, naming it.

Where OpenAI's spec contradicts OpenAI's own API, KNOWN says which and why, in one place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_FILE = Path(__file__).with_name("openai_responses.json")
BASE = "urn:openai-openapi"


@dataclass(frozen=True)
class Known:
    """A place where the spec says one thing and OpenAI's API (and its SDKs) another."""

    schema: str  # the schema being checked
    path: str  # a regex over the JSON path of the failing value ("choices.0.delta.role")
    why: str


KNOWN = (
    Known(
        "CreateChatCompletionStreamResponse",
        r"choices\.\d+\.finish_reason",
        "null in every chunk but the last: OpenAI sends it so and the SDKs type it Optional; "
        "the spec's enum leaves null out",
    ),
    Known(
        "CreateCompletionResponse",
        r"choices\.\d+\.finish_reason",
        "a completions stream's chunks reuse this schema; finish_reason is null until the last",
    ),
    Known(
        "CreateChatCompletionStreamResponse",
        r"choices\.\d+\.logprobs",
        "null when logprobs were not asked for, as OpenAI sends it",
    ),
    Known(
        "CreateChatCompletionStreamResponse",
        r"choices\.\d+\.logprobs\.refusal",
        "null beside the content's logprobs when the model did not refuse, as OpenAI sends it "
        "(the whole answer's schema allows null there; the chunk's does not)",
    ),
    Known(
        "CreateEmbeddingResponse",
        r"data\.\d+\.embedding",
        "with encoding_format: base64 OpenAI sends each vector as a base64 string (its SDKs "
        "decode it); the spec types the field an array of numbers only",
    ),
)

# Paths whose answers are OpenAI's (the gateway's own /v1/route, /v1/feedback are not).
_OPERATIONS: tuple[tuple[str, re.Pattern[str], str, str | None], ...] = (
    # (method, path, whole-answer schema, stream frame schema)
    ("POST", re.compile(r"/v1/chat/completions"), "CreateChatCompletionResponse",
     "CreateChatCompletionStreamResponse"),
    ("POST", re.compile(r"/v1/completions"), "CreateCompletionResponse",
     "CreateCompletionResponse"),
    ("POST", re.compile(r"/v1/responses"), "Response", "ResponseStreamEvent"),
    ("GET", re.compile(r"/v1/responses/[^/]+"), "Response", "ResponseStreamEvent"),
    ("POST", re.compile(r"/v1/embeddings"), "CreateEmbeddingResponse", None),
    ("GET", re.compile(r"/v1/models"), "ListModelsResponse", None),
    ("GET", re.compile(r"/v1/models/.+"), "Model", None),
)  # fmt: skip


class Conformance:
    def __init__(self) -> None:
        doc = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
        self.source = doc["source"]
        self.schemas: dict[str, Any] = doc["components"]["schemas"]
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(BASE, resource)
        self._validators: dict[str, Draft202012Validator] = {}
        # A Responses event is checked against the one schema its `type` names.
        self.events = dict(self._event_types())
        self.checked = 0  # documents (answers, frames, events) checked
        self.unchecked = 0  # bodies too long to keep that were not events (none so far)
        self.violations: list[tuple[str, str]] = []  # (test, what), noted by tests/spec/capture

    def _event_types(self) -> Iterator[tuple[str, str]]:
        for ref in self.schemas["ResponseStreamEvent"]["anyOf"]:
            name = ref["$ref"].rsplit("/", 1)[-1]
            kinds = (self.schemas[name].get("properties") or {}).get("type", {}).get("enum", [])
            for kind in kinds:
                yield kind, name

    def validator(self, name: str) -> Draft202012Validator:
        v = self._validators.get(name)
        if v is None:
            schema = {"$ref": f"{BASE}#/components/schemas/{name}"}
            v = self._validators[name] = Draft202012Validator(schema, registry=self.registry)
        return v

    def errors(self, name: str, obj: Any) -> list[str]:
        """What in `obj` the schema `name` rejects, KNOWN contradictions left out."""
        if name == "ResponseStreamEvent" and isinstance(obj, dict):
            name = self.events.get(str(obj.get("type")), name)
        self.checked += 1
        out = []
        for err in self.validator(name).iter_errors(obj):
            where = ".".join(str(p) for p in err.absolute_path)
            if any(k.schema == name and re.fullmatch(k.path, where) for k in KNOWN):
                continue
            out.append(f"{name} at {where or '(top)'}: {err.message[:300]}")
        return out

    def check(self, method: str, path: str, status: int, ctype: str, body: bytes) -> list[str]:
        """The violations in one finished answer ([] when it conforms or is not OpenAI's)."""
        op = next((o for o in _OPERATIONS if o[0] == method and o[1].fullmatch(path)), None)
        if op is None or not body:
            return []
        _, _, whole, frame = op
        if status >= 400:
            if not ctype.startswith("application/json"):
                return [f"{method} {path}: a {status} that is not JSON"]
            return self.errors("ErrorResponse", json.loads(body))
        if ctype.startswith("text/event-stream"):
            if frame is None:
                return [f"{method} {path}: an event stream where the spec has none"]
            out = []
            for obj in _frames(body):
                if "error" in obj and len(obj) == 1:  # an in-band error after the first byte
                    out += self.errors("ErrorResponse", obj)
                else:
                    out += self.errors(frame, obj)
            return out
        if ctype.startswith("application/json"):
            return self.errors(whole, json.loads(body))
        return []


def _frames(body: bytes) -> Iterator[dict[str, Any]]:
    for line in body.splitlines():
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data and data != b"[DONE]":
                yield json.loads(data)
