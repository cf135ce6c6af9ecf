"""Private data stays on the box whatever field of the request it is in (issue 21).

The field list is not hand-picked: it comes from the OpenAI Python SDK's typed request
parameters (TypedDicts, read with typing.get_type_hints) for chat completions, completions,
Responses and embeddings. For every free-text string in them (every `str` that is not a
Literal, every dict key, every JSON-schema property name and description), one request
carries a marker e-mail address `marker-<field>@example.com` in that field and nowhere else.
Each goes to a real gateway with the shipped default policy (whose privacy rule is enforced
for named models too), shadow judging of every local answer, and a fake cloud that records
every byte it receives; with `model: auto` and with a named cloud model; and again to a
gateway whose policy has a cascade rule that escalates every answer. The fake cloud must
never see a marker, and every answer must be local or a clear 4xx error.

Then one test per leak the issue's probe found, each written as the probe sent it.
"""

from __future__ import annotations

import asyncio
import collections.abc
import json
import re
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import aiohttp
import openai.types.chat.completion_create_params as chat_params
import openai.types.completion_create_params as completion_params
import openai.types.embedding_create_params as embedding_params
import openai.types.responses.response_create_params as responses_params
import pytest

from gateway.schemas import ChatRequest
from gateway.services import SERVICES
from tests.conftest import ROOT, RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

CLOUD_CHAT = "gpt-fake"
CLOUD_EMBED = "embed-fake"
PATHS = {
    "chat": "/chat/completions",
    "completion": "/completions",
    "responses": "/responses",
    "embeddings": "/embeddings",
}
SDK_PARAMS: dict[str, Any] = {
    "chat": chat_params.CompletionCreateParamsNonStreaming,
    "completion": completion_params.CompletionCreateParamsNonStreaming,
    "responses": responses_params.ResponseCreateParamsNonStreaming,
    "embeddings": embedding_params.EmbeddingCreateParams,
}
# Where a client puts the marker is its own choice: these set the request up around it.
BASE: dict[str, dict[str, Any]] = {
    "chat": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "temperature": 0},
    "completion": {"prompt": "hi", "max_tokens": 1, "temperature": 0},
    "responses": {"input": "hi", "max_output_tokens": 1, "temperature": 0},
    "embeddings": {"input": "hi"},
}
# A schema position (tool parameters, response schema) gets a JSON schema, not a random dict.
SCHEMA_KEYS = ("parameters", "schema")
# Fields the SDK types as free strings that are not the client's to mark: the model name
# picks the gateway's route (an unknown one is a 404) and is replaced by the upstream's own.
NOT_MARKED = {("model",)}

CASCADE_POLICY = """\
version: 1
default: local
cache: never
rules:
  - {name: private-data-stays-local, enforce: true, when: {pii: true}, route: local}
  - {name: beyond-local, when: {needs: [images]}, route: cloud}
  # A threshold no answer meets: every local answer that may be escalated is.
  - name: local-first
    route: cascade
    cascade: {to: cloud, threshold: {mean_logprob: -0.000001}, stream: local}
"""

Step = (
    str | tuple[str, int]
)  # a field name, "[]" (a list item), "{key}"/"{}" (dict), or a union arm


# -- the SDK's request types, walked ------------------------------------------------------------


def _bare(t: Any) -> Any:
    """The type without Annotated / Required / NotRequired / ReadOnly wrappers."""
    while True:
        origin = get_origin(t)
        if origin is Annotated or (
            origin is not None and getattr(origin, "_name", "") in ("Required", "NotRequired")
        ):
            t = get_args(t)[0]
        elif str(origin).endswith(("Required", "ReadOnly")):
            t = get_args(t)[0]
        else:
            return t


def _required(t: Any) -> set[str]:
    """The required keys of a TypedDict. Its __required_keys__ is wrong here: the SDK's
    modules use postponed annotations, so `Required[...]` is only seen once resolved."""
    required = set()
    for key, hint in get_type_hints(t, include_extras=True).items():
        flag = None
        while flag is None:
            name = getattr(get_origin(hint), "_name", "") or str(get_origin(hint))
            if get_origin(hint) is Annotated:
                hint = get_args(hint)[0]
            elif name.endswith("NotRequired"):
                flag = False
            elif name.endswith("Required"):
                flag = True
            else:
                flag = bool(getattr(t, "__total__", True))
        if flag:
            required.add(key)
    return required


def _typed_dict(t: Any) -> bool:
    return isinstance(t, type) and hasattr(t, "__required_keys__")


def _arms(t: Any) -> list[Any]:
    return [a for a in get_args(t) if a is not type(None)]


def _kind(t: Any) -> str:
    t = _bare(t)
    origin = get_origin(t)
    if t is str:
        return "str"
    if origin in (Union, types.UnionType):
        return "union"
    if origin is Literal or t in (int, float, bool, type(None)):
        return "scalar"
    if _typed_dict(t):
        return "typed_dict"
    if origin in (dict, collections.abc.Mapping):
        return "dict"
    if origin in (list, collections.abc.Iterable, collections.abc.Sequence) or (
        origin is not None and getattr(origin, "__name__", "") == "SequenceNotStr"
    ):
        return "list"
    if t is object or t is Any:
        return "json"
    raise AssertionError(f"an SDK type this walk does not know: {t!r}")


def free_text(
    t: Any, path: tuple[Step, ...] = (), seen: tuple[Any, ...] = ()
) -> Iterator[tuple[Step, ...]]:
    """The path of every free-text string of type `t`: str values, dict keys, JSON values."""
    t = _bare(t)
    kind = _kind(t)
    if kind == "str":
        yield path
    elif kind == "union":
        for i, arm in enumerate(_arms(t)):
            yield from free_text(arm, (*path, ("|", i)), seen)
    elif kind == "typed_dict" and t not in seen:
        for key, hint in get_type_hints(t).items():
            yield from free_text(hint, (*path, key), (*seen, t))
    elif kind == "list":
        yield from free_text(get_args(t)[0], (*path, "[]"), seen)
    elif kind == "dict":
        yield (*path, "{key}")
        yield from free_text(get_args(t)[1], (*path, "{}"), seen)
    elif kind == "json":
        yield path


def _minimal(t: Any) -> Any:
    """The least value of `t` a request may carry: required keys only, "x" for strings."""
    t = _bare(t)
    kind = _kind(t)
    if kind == "str":
        return "x"
    if kind == "union":
        return _minimal(_arms(t)[0])
    if kind == "scalar":
        if get_origin(t) is Literal:
            return get_args(t)[0]
        return {int: 1, float: 0.5, bool: True}.get(t)
    if kind == "typed_dict":
        hints = get_type_hints(t)
        return {k: _minimal(hints[k]) for k in sorted(_required(t))}
    if kind == "list":
        return [_minimal(get_args(t)[0])]
    return {}


def _schema(marker: str, where: Step) -> dict[str, Any]:
    """A JSON schema with the marker as a property's name or as its description."""
    if where == "{key}":
        return {"type": "object", "properties": {marker: {"type": "string"}}}
    return {"type": "object", "properties": {"a": {"type": "string", "description": marker}}}


def build(t: Any, path: tuple[Step, ...], marker: str, parent: Step | None = None) -> Any:
    """A minimal value of `t` whose only marked string is the one at `path`."""
    t = _bare(t)
    kind = _kind(t)
    if not path:
        return marker if kind in ("str", "json") else _minimal(t)
    step, rest = path[0], path[1:]
    if kind == "union":
        assert isinstance(step, tuple)
        return build(_arms(t)[step[1]], rest, marker, parent)
    if kind == "typed_dict":
        hints = get_type_hints(t)
        value = _minimal(t)
        assert isinstance(step, str)
        value[step] = build(hints[step], rest, marker, step)
        return value
    if kind == "list":
        return [build(get_args(t)[0], rest, marker, parent)]
    if kind == "dict":
        if parent in SCHEMA_KEYS:
            return _schema(marker, step)
        if step == "{key}":
            return {marker: _minimal(get_args(t)[1]) or "x"}
        return {"k": build(get_args(t)[1], rest, marker)}
    raise AssertionError(f"no step {step!r} into {t!r}")


def slug(path: tuple[Step, ...]) -> str:
    """A field's name for its marker: keys, the union arm taken (a number), `key`/`value`."""
    names = {"[]": "", "{key}": "key", "{}": "value"}
    parts = [str(s[1]) if isinstance(s, tuple) else names.get(s, s) for s in path]
    return re.sub(r"[^A-Za-z0-9_.]+", "-", ".".join(p for p in parts if p))


@dataclass(frozen=True)
class Case:
    endpoint: str
    field: str
    marker: str
    body: dict[str, Any]  # without `model`


def cases(endpoint: str) -> list[Case]:
    """One request per free-text field of the endpoint's SDK params, marked there only."""
    out = []
    for path in free_text(SDK_PARAMS[endpoint]):
        if tuple(s for s in path if not isinstance(s, tuple)) in NOT_MARKED:
            continue
        name = slug(path)
        marker = f"marker-{name}@example.com"
        top = path[0]
        assert isinstance(top, str)
        hints = get_type_hints(SDK_PARAMS[endpoint])
        body = {**BASE[endpoint], top: build(hints[top], path[1:], marker, top)}
        # A conversation ends with the user's turn, after the marked one.
        if endpoint == "chat" and top == "messages":
            body["messages"] = [*body["messages"], {"role": "user", "content": "hi"}]
        if endpoint == "responses" and top == "input" and isinstance(body["input"], list):
            body["input"] = [*body["input"], {"role": "user", "content": "hi"}]
        out.append(Case(endpoint, name, marker, body))
    # Deny by default: a field no SDK knows yet, at the top and deep inside a message.
    future = f"marker-{endpoint}.future-field@example.com"
    out.append(Case(endpoint, "future_field", future, {**BASE[endpoint], "x_future": future}))
    if endpoint == "chat":
        deep = "marker-chat.messages.future@example.com"
        msgs = [{"role": "user", "content": "hi", "x_future": {"notes": [deep]}}]
        out.append(Case(endpoint, "messages.future", deep, {**BASE["chat"], "messages": msgs}))
    return out


def test_the_sdk_walk_finds_the_fields_of_the_issue() -> None:
    """The walk is not hand-picked, and it reaches every field the probe leaked through."""
    chat = {c.field for c in cases("chat")}
    assert {
        "messages.3.tool_calls.0.function.arguments",
        "messages.0.name",
        "tools.0.function.description",
        "metadata.0.value",
        "metadata.0.key",
        "response_format.1.json_schema.schema.key",
        "response_format.1.json_schema.schema.value",
        "user",
    } <= chat, sorted(chat)
    assert "suffix.0" in {c.field for c in cases("completion")}
    responses = {c.field for c in cases("responses")}
    assert "user" in responses and len(responses) > 100
    assert any(f.startswith("input.1.") and f.endswith(".arguments") for f in responses)
    assert "user" in {c.field for c in cases("embeddings")}


# -- against real gateways ----------------------------------------------------------------------


def _settings(cloud: FakeCloud, tmp: Path, policy: Path) -> dict[str, Any]:
    settings = cloud_settings(cloud)
    settings["cloud"]["embedding_models"] = [
        cloud.model_entry(name=CLOUD_EMBED, model="openai/text-embedding-3-small")
    ]
    settings["policy"] = {"file": str(policy)}
    settings["learning"] = {
        "enabled": True,
        "store": str(tmp / f"labels-{policy.stem}.sqlite3"),
        "shadow_rate": 1.0,  # every local answer of `auto` is shadowed (unless private)
        "shadow_max_per_hour": 100_000,
        "shadow_concurrency": 64,
    }
    # Plenty of requests in a row from one key.
    settings["limits"] = {"requests_per_minute": 1_000_000}
    return settings


async def default_gateway(factory: Any, cloud: FakeCloud, tmp: Path) -> RunningGateway:
    gw: RunningGateway = await factory(**_settings(cloud, tmp, ROOT / "policies" / "default.yaml"))
    return gw


async def cascade_gateway(factory: Any, cloud: FakeCloud, tmp: Path) -> RunningGateway:
    policy = tmp / "cascade.yaml"
    policy.write_text(CASCADE_POLICY, encoding="utf-8")
    gw: RunningGateway = await factory(**_settings(cloud, tmp, policy))
    return gw


async def settle(gw: RunningGateway) -> None:
    """Wait (bounded) until no shadow or cascade judgement is still running."""
    learning = gw.app[SERVICES].learning
    assert learning is not None
    async with asyncio.timeout(60):
        while learning.shadow.tasks:
            await asyncio.wait(set(learning.shadow.tasks))


@dataclass
class Sent:
    case: Case
    model: str
    status: int
    route: str | None
    error: dict[str, Any] | None


async def send(http: aiohttp.ClientSession, gw: RunningGateway, case: Case, model: str) -> Sent:
    body = {**case.body, "model": model}
    async with http.post(f"{gw.base_url}{PATHS[case.endpoint]}", json=body) as r:
        payload = await r.json(content_type=None)
        error = payload.get("error") if r.status >= 400 else None
        return Sent(case, model, r.status, r.headers.get("x-gateway-route"), error)


def leaks(cloud: FakeCloud, markers: list[str]) -> list[str]:
    received = b"\n".join(cloud.received)
    return [m for m in dict.fromkeys(markers) if m.encode() in received]


def unclear(sent: list[Sent]) -> list[str]:
    """Answers that were neither local (or the cache) nor a clear 4xx error."""
    bad = []
    for s in sent:
        if s.status == 200 and s.route in ("local", "cache"):
            continue
        if 400 <= s.status < 500 and s.error and set(s.error) >= {"message", "type", "code"}:
            continue
        if s.status == 200 and s.route == "cloud" and s.case.marker:
            continue  # allowed only if the marker never left: checked by leaks()
        bad.append(f"{s.case.endpoint} {s.case.field} ({s.model}): {s.status} {s.error}")
    return bad


async def run_all(
    http: aiohttp.ClientSession, gw: RunningGateway, todo: list[tuple[Case, str]]
) -> list[Sent]:
    gate = asyncio.Semaphore(4)

    async def one(case: Case, model: str) -> Sent:
        async with gate:
            return await send(http, gw, case, model)

    sent = await asyncio.gather(*(one(c, m) for c, m in todo))
    await settle(gw)
    return list(sent)


def _models(endpoint: str) -> tuple[str, ...]:
    return ("auto", CLOUD_EMBED if endpoint == "embeddings" else CLOUD_CHAT)


@pytest.mark.parametrize("endpoint", list(PATHS))
async def test_no_free_text_field_carries_private_data_to_the_cloud(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    endpoint: str,
) -> None:
    gw = await default_gateway(gateway_factory, fake_cloud, tmp_path)
    todo = [(c, m) for c in cases(endpoint) for m in _models(endpoint)]
    sent = await run_all(http, gw, todo)
    leaked = leaks(fake_cloud, [c.marker for c, _ in todo])
    fields = len(todo) // 2
    assert leaked == [], f"{len(leaked)} of {fields} fields reached the cloud: {leaked}"
    assert unclear(sent) == []
    # The check itself works: the cloud was reachable and answered plain requests meanwhile.
    probe = {**BASE[endpoint], "model": _models(endpoint)[1]}
    url = f"{gw.base_url}{PATHS[endpoint]}"
    async with http.post(url, json=probe, headers={"Cache-Control": "no-cache"}) as r:
        assert r.status == 200 and r.headers["x-gateway-route"] == "cloud"


@pytest.mark.parametrize("endpoint", ["chat", "completion", "responses"])
async def test_no_field_escapes_through_the_cascade(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    endpoint: str,
) -> None:
    gw = await cascade_gateway(gateway_factory, fake_cloud, tmp_path)
    todo = [(c, "auto") for c in cases(endpoint)]
    sent = await run_all(http, gw, todo)
    leaked = leaks(fake_cloud, [c.marker for c, _ in todo])
    assert leaked == [], f"{len(leaked)} of {len(todo)} fields reached the cloud: {leaked}"
    assert unclear(sent) == []
    # The cascade does escalate what is not private: the check is not vacuous.
    before = len(fake_cloud.received)
    async with http.post(
        f"{gw.base_url}{PATHS[endpoint]}", json={**BASE[endpoint], "model": "auto"}
    ) as r:
        assert r.status == 200
    await settle(gw)
    assert len(fake_cloud.received) > before


# -- the probe's findings, one by one -------------------------------------------------------

EMAIL = "alice@example.com"
CARD = "4111 1111 1111 1111"  # passes the Luhn check
HI = [{"role": "user", "content": "hi"}]
REPRO = {
    "model": "auto",
    "messages": [
        {"role": "user", "content": "say hi"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "f", "arguments": json.dumps({"email": EMAIL})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
        {"role": "user", "content": "hi"},
    ],
}


def _tool(description: str = "Looks up a city.", **parameters: Any) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, **parameters}
    return {
        "type": "function",
        "function": {"name": "lookup", "description": description, "parameters": schema},
    }


FINDINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "repro_tool_call_arguments": ("chat", {k: v for k, v in REPRO.items() if k != "model"}),
    "chat_user": ("chat", {"messages": HI, "user": EMAIL}),
    "chat_user_card": ("chat", {"messages": HI, "user": CARD}),
    "message_name": ("chat", {"messages": [{"role": "user", "content": "hi", "name": EMAIL}]}),
    "tool_description": ("chat", {"messages": HI, "tools": [_tool(f"Mail {EMAIL}")]}),
    "metadata": ("chat", {"messages": HI, "metadata": {"owner": EMAIL}, "store": True}),
    "json_schema_description": (
        "chat",
        {
            "messages": HI,
            "response_format": {
                "type": "json_schema",
                "json_schema": {
                    "name": "r",
                    "schema": {
                        "type": "object",
                        "properties": {"a": {"type": "string", "description": f"card {CARD}"}},
                    },
                },
            },
        },
    ),
    "responses_function_call_arguments": (
        "responses",
        {
            "input": [
                {"role": "user", "content": "say hi"},
                {
                    "type": "function_call",
                    "call_id": "c1",
                    "name": "f",
                    "arguments": json.dumps({"email": EMAIL}),
                },
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
                {"role": "user", "content": "hi"},
            ]
        },
    ),
    "responses_user": ("responses", {"input": "hi", "user": EMAIL}),
    "responses_tool_description": (
        "responses",
        {
            "input": "hi",
            "tools": [
                {
                    "type": "function",
                    "name": "lookup",
                    "description": f"Mail {EMAIL}",
                    "parameters": {"type": "object", "properties": {}},
                }
            ],
        },
    ),
    "completion_suffix": ("completion", {"prompt": "hi", "suffix": f"mail {EMAIL}"}),
}


@pytest.mark.parametrize("finding", list(FINDINGS))
async def test_a_finding_of_the_probe_stays_on_the_box(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    finding: str,
) -> None:
    endpoint, body = FINDINGS[finding]
    gw = await default_gateway(gateway_factory, fake_cloud, tmp_path)
    secret = EMAIL if EMAIL in json.dumps(body) else CARD
    case = Case(endpoint, finding, secret, {**BASE[endpoint], **body})
    sent = await run_all(http, gw, [(case, m) for m in _models(endpoint)])
    assert not any(secret.encode() in r for r in fake_cloud.received), finding
    assert unclear(sent) == [], sent
    for s in sent:
        assert s.status != 200 or s.route == "local", s


async def test_shadowing_never_sends_a_local_private_answer_to_the_cloud(
    gateway_factory: Any, fake_cloud: FakeCloud, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The worst case of the probe: `auto`, answered locally, then sent whole to the judge."""
    gw = await default_gateway(gateway_factory, fake_cloud, tmp_path)
    learning = gw.app[SERVICES].learning
    assert learning is not None
    for stream in (False, True):
        async with http.post(
            f"{gw.base_url}/chat/completions",
            json={**REPRO, "max_tokens": 2, "temperature": 0, "stream": stream},
        ) as r:
            assert r.status == 200, await r.text()
            assert r.headers["x-gateway-route"] == "local"
            assert "private-data-stays-local" in r.headers["x-gateway-reason"]
            await r.read()
    await settle(gw)
    assert not any(EMAIL.encode() in r for r in fake_cloud.received)
    registry = gw.app[SERVICES].metrics.registry
    skipped = registry.get_sample_value(
        "edge_gateway_learning_shadow_skipped_total", {"reason": "private"}
    )
    assert skipped == 2
    # Without the address the same conversation is shadowed: the guard is the scan, not luck.
    clean = json.loads(json.dumps(REPRO).replace(EMAIL, "nobody"))
    async with http.post(
        f"{gw.base_url}/chat/completions", json={**clean, "max_tokens": 2, "temperature": 0}
    ) as r:
        assert r.status == 200 and r.headers["x-gateway-route"] == "local"
    await settle(gw)
    assert any(b"nobody" in r for r in fake_cloud.received)


# -- the scan itself ----------------------------------------------------------------------------


def test_identifiers_are_skipped_only_when_they_look_like_identifiers() -> None:
    from gateway.routing.privacy import scan_chat

    def pii(**message: Any) -> tuple[str, ...]:
        req = ChatRequest.model_validate(
            {"model": "auto", "messages": [{"role": "assistant", **message}, *HI]}
        )
        return scan_chat(req)

    # A machine-made id whose digits read as a card number (Luhn passes one time in ten).
    made = "tx.4111111111111111"
    call = {"id": made, "type": "function"}
    fn = {"name": "f", "arguments": "{}"}
    assert pii(content="ok", tool_calls=[{**call, "function": fn}]) == ()
    # The same string where free text goes is scanned.
    assert pii(content=made) == ("card",)
    # An identifier field holding what no identifier looks like is scanned.
    assert pii(content="ok", tool_calls=[{**call, "id": EMAIL, "function": fn}]) == ("email",)
    assert pii(content="ok", tool_calls=[{**call, "function": {**fn, "name": CARD}}]) == ("card",)


def test_the_scan_is_linear_and_bounded_on_the_loop() -> None:
    from gateway.routing.privacy import TooLarge, scan_chat

    wide = ChatRequest.model_validate(
        {"model": "auto", "messages": HI, "metadata": {f"k{i}": "v" for i in range(10_000)}}
    )
    with pytest.raises(TooLarge):
        scan_chat(wide, budget=32_768)
    assert scan_chat(wide) == ()
    deep: Any = EMAIL
    for _ in range(5_000):
        deep = {"a": [deep]}
    nested = ChatRequest.model_validate({"model": "auto", "messages": HI, "x": deep})
    assert scan_chat(nested) == ("email",)  # iterative: no recursion limit


async def test_the_judge_position_is_not_the_clients_to_choose(
    gateway_factory: Any, fake_cloud: FakeCloud, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """The A/B position of the local answer is a secret coin, not the request id's hash."""
    await fake_cloud.set_mode("judge")
    gw = await default_gateway(gateway_factory, fake_cloud, tmp_path)
    learning = gw.app[SERVICES].learning
    assert learning is not None
    coins = iter([True, False])
    learning.shadow._coin = lambda: next(coins)
    for i in range(2):
        # The same client-chosen request id twice: positions follow the coin regardless.
        async with http.post(
            f"{gw.base_url}/chat/completions",
            json={"model": "auto", "messages": HI, "max_tokens": 2, "temperature": 0},
            headers={"x-request-id": f"req-fixed-{i % 1}"},
        ) as r:
            assert r.status == 200 and r.headers["x-gateway-route"] == "local"
        await settle(gw)
    rows = await learning.store.rows()
    assert [r.body["detail"]["local_is_a"] for r in rows] == [True, False]
