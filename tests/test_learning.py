"""The box labels its own traffic: shadow judging, client feedback, retraining (issue 15).

Real gateways on loopback with the real GGUF; the cloud (and its judge) is the fake one, in
`judge` mode: it calls local answers about tax bad and every other local answer good.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from gateway.durable import Record
from gateway.http.auth import tenant_id
from gateway.learning import judge
from gateway.learning.labels import LabelStore, read_store_examples
from gateway.learning.recent import RecentRequests
from gateway.learning.verdict import evaluate, held_out
from gateway.routing.complexity import ComplexityScorer
from gateway.routing.learned import LearnedScorer, read_weights, vector
from gateway.routing.training import Example, train
from gateway.schemas import ChatRequest
from gateway.services import SERVICES
from gateway.settings import SettingsError, load_settings
from tests.conftest import ROOT, RunningGateway, cloud_settings, until
from tests.fakes.cloud import FakeCloud

TAX = ["my tax return", "the tax office", "paying less tax", "tax forms"]
OTHER = [
    "cooking dinner",
    "the weather",
    "my vegetable garden",
    "football",
    "travel by train",
    "painting walls",
    "music lessons",
    "hiking trails",
]
FORMS = [
    "What should I know about {} this year?",
    "Give me two quick tips about {}.",
    "I have a question about {} for my family.",
    "Tell me something useful about {} today.",
]
# Checked after training: phrasings and a sentence form never seen in training.
NEW_TAX = ["a tax refund", "tax", "the tax office"]
NEW_OTHER = ["chess", "poetry books", "a new bicycle", "cooking dinner"]

POLICY = """\
version: 1
default: local
{scorer}
rules:
  - name: private-data-stays-local
    enforce: true
    when: {{pii: true}}
    route: local
  - name: learned
    when: {{complexity: {{gte: 0.6}}}}
    route: cloud
"""


def write_policy(path: Path, weights: str | None = None) -> Path:
    scorer = f"scorer: {{weights: {weights}}}" if weights else ""
    path.write_text(POLICY.format(scorer=scorer), encoding="utf-8")
    return path


def learning_settings(cloud: FakeCloud, tmp: Path, policy: Path, **learning: Any) -> dict[str, Any]:
    conf = {
        "enabled": True,
        "store": str(tmp / "labels.sqlite3"),
        "shadow_rate": 1.0,
        "shadow_concurrency": 8,
        **learning,
    }
    return {**cloud_settings(cloud), "learning": conf, "policy": {"file": str(policy)}}


async def ask(c: openai.AsyncOpenAI, text: str, **kw: Any) -> tuple[str, str]:
    """(route header, request id) of one small answer."""
    raw = await c.chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": text}],
        max_tokens=4,
        temperature=0.0,
        **kw,
    )
    if kw.get("stream"):
        async for _ in raw.parse():
            pass
    return raw.headers["x-gateway-route"], raw.headers["x-request-id"]


async def settle(gw: RunningGateway) -> None:
    """Wait until no shadow judgement is running (bounded)."""
    learning = gw.app[SERVICES].learning
    assert learning is not None
    await until(lambda: not learning.shadow.tasks and learning.retrainer.task is None)


async def route_of(http: aiohttp.ClientSession, gw: RunningGateway, text: str) -> str:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    async with http.post(f"{gw.base_url}/route", json=body) as r:
        assert r.status == 200
        return str((await r.json())["route"])


def train_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "train-router", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- Done when 1: shadow labels -> train-router --from-store -> policy reload ----------------


async def test_shadow_labels_train_a_router_that_sends_the_bad_topic_to_the_cloud(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    await fake_cloud.set_mode("judge")
    # Starting weights (hashed, so the on-box canary can score them) that know nothing of tax.
    seed = tmp_path / "seed.jsonl"
    seed.write_text(
        "".join(
            json.dumps({"prompt": "report " * k, "local_ok": k < 20}) + "\n" for k in range(2, 42)
        ),
        encoding="utf-8",
    )
    weights = tmp_path / "router.json"
    done = train_cli(str(seed), "--hashed", "--no-terms", "--out", str(weights))
    assert done.returncode == 0, done.stderr
    policy = write_policy(tmp_path / "policy.yaml", weights.name)
    gw = await gateway_factory(
        **learning_settings(
            fake_cloud,
            tmp_path,
            policy,
            retrain_every=36,
            retrain_min_labels=30,
            canary_share=0.5,  # half held back: both labels in it whatever the arrival order
        )
    )
    before = weights.read_bytes()
    c = gw.client("sk-tenant-a")
    traffic = [(f.format(t), True) for f in FORMS[:3] for t in TAX]
    traffic += [(f.format(t), False) for f in FORMS[:3] for t in OTHER]
    for i in range(0, len(traffic), 4):  # four at a time: the local model's slots
        batch = traffic[i : i + 4]
        results = await asyncio.gather(*(ask(c, p, stream=i % 8 == 0) for p, _ in batch))
        assert all(route == "local" for route, _ in results)
    await settle(gw)

    # Every answer was shadowed: one cloud answer and one verdict each, and one label each.
    assert gw.metric("edge_gateway_learning_labels_total", source="shadow") == len(traffic)
    assert fake_cloud.judge_calls == len(traffic)
    assert fake_cloud.chat_calls == 2 * len(traffic)
    assert gw.metric("edge_gateway_learning_cloud_tokens_total", call="judge", kind="prompt") > 0
    store = tmp_path / "labels.sqlite3"
    examples = read_store_examples(store)
    assert sorted(e.target for e in examples) == sorted(float(tax) for _, tax in traffic)
    assert all(e.prompt == "" for e in examples)  # keep_prompts is off: no text on disk
    assert b"tax" not in store.read_bytes()

    # The periodic retrain ran on the 36th label, beat the starting weights on the held-back
    # slice, and went live by reloading the policy: same process, new weights.
    assert gw.metric("edge_gateway_learning_retrains_total", result="accepted", reason="better")
    assert weights.read_bytes() != before
    assert read_weights(weights)["format_version"] == 2
    assert gw.metric("edge_gateway_policy_reloads_total", result="success") >= 1

    # The operator's way: train-router --from-store, point the policy at it, reload.
    learned = tmp_path / "learned.json"
    done = train_cli("--from-store", str(store), "--l2", "0.1", "--out", str(learned))
    assert done.returncode == 0, done.stderr
    write_policy(policy, learned.name)
    async with http.post(f"{gw.url}/admin/reload") as r:
        assert r.status == 200
    for f in FORMS:
        for t in NEW_TAX:
            assert await route_of(http, gw, f.format(t)) == "cloud", f.format(t)
        for t in NEW_OTHER:
            assert await route_of(http, gw, f.format(t)) == "local", f.format(t)
    # The route header of a real answer says the same.
    route, _ = await ask(c, FORMS[3].format("a tax refund"))
    assert route == "cloud"


# -- Done when 2: privacy, the hourly cap, the pauses, feedback, the cap of the store ---------


async def test_private_prompts_are_never_shadowed(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    await fake_cloud.set_mode("judge")
    policy = write_policy(tmp_path / "policy.yaml")
    gw = await gateway_factory(**learning_settings(fake_cloud, tmp_path, policy, keep_prompts=True))
    c = gw.client("sk-tenant-a")
    route, rid = await ask(c, "Mail bob@example.com my tax return summary please.")
    assert route == "local"
    route, _ = await ask(c, "Call me on +44 20 7946 0958 about my tax return.", stream=True)
    assert route == "local"
    await settle(gw)
    assert fake_cloud.chat_calls == 0 and fake_cloud.hits == []
    assert gw.metric("edge_gateway_learning_shadow_skipped_total", reason="private") == 2
    # Feedback on it is stored, without its text even though keep_prompts is on.
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-tenant-a"}) as s:
        async with s.post(f"{gw.base_url}/feedback", json={"request_id": rid, "good": True}) as r:
            assert r.status == 200, await r.text()
    learning = gw.app[SERVICES].learning
    assert learning is not None
    rows = await learning.store.rows()
    assert [(r.kind, r.body["label"], "prompt" in r.body) for r in rows] == [
        ("feedback", 0.0, False)
    ]
    assert b"bob@example.com" not in (tmp_path / "labels.sqlite3").read_bytes()

    # A privacy route without private data in the text: a tenant the policy keeps local.
    rule = f"  - {{name: tenant-stays-local, when: {{tenant: [{tenant_id('sk-secret-tenant')}]}}"
    rule += ", route: local}\n"
    policy.write_text(
        POLICY.format(scorer="").replace("rules:\n", "rules:\n" + rule), encoding="utf-8"
    )
    gw.app[SERVICES].policies.reload()
    route, _ = await ask(gw.client("sk-secret-tenant"), "Give me two quick tips about chess.")
    assert route == "local"
    await settle(gw)
    assert fake_cloud.chat_calls == 0
    assert gw.metric("edge_gateway_learning_shadow_skipped_total", reason="private") == 3
    # ... while the same question from another tenant is shadowed.
    await ask(gw.client("sk-tenant-a"), "Give me two quick tips about chess.")
    await settle(gw)
    assert fake_cloud.judge_calls == 1


async def test_hourly_cap_offline_and_rate_limit_pauses(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    await fake_cloud.set_mode("judge")
    policy = write_policy(tmp_path / "policy.yaml")
    gw = await gateway_factory(
        **learning_settings(fake_cloud, tmp_path, policy, shadow_max_per_hour=2, pause_s=600)
    )
    c = gw.client("sk-tenant-a")
    for i in range(4):
        await ask(c, f"Give me two quick tips about football, number {i}.")
    await settle(gw)
    assert fake_cloud.judge_calls == 2 and fake_cloud.chat_calls == 4
    assert gw.metric("edge_gateway_learning_shadow_skipped_total", reason="hourly_cap") == 2
    learning = gw.app[SERVICES].learning
    assert learning is not None and len(learning.store) == 2

    # A new hour: the cap has room again, but the uplink is down (breaker open): no attempt.
    learning.shadow._started.clear()
    await fake_cloud.set_mode("refuse")
    # A request for the cloud model finds it gone: the breaker opens (local answers it).
    await c.chat.completions.create(
        model="gpt-fake", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert not gw.app[SERVICES].dispatcher.breakers["gpt-fake"].reachable
    calls = fake_cloud.chat_calls
    await ask(c, "Give me two quick tips about music lessons.")
    await settle(gw)
    assert gw.metric("edge_gateway_learning_shadow_skipped_total", reason="offline") == 1
    assert fake_cloud.chat_calls == calls

    # Back, but rate-limiting: the first shadow call gets a 429 and shadowing pauses.
    await fake_cloud.set_mode("fail429")
    await until(lambda: gw.app[SERVICES].dispatcher.breakers["gpt-fake"].reachable)  # probe
    calls = fake_cloud.chat_calls
    await ask(c, "Give me two quick tips about hiking trails.")
    await settle(gw)
    assert fake_cloud.chat_calls == calls + 1
    assert gw.metric("edge_gateway_learning_shadow_paused") == 1
    await fake_cloud.set_mode("judge")
    await ask(c, "Give me two quick tips about painting walls.")
    await settle(gw)
    assert fake_cloud.chat_calls == calls + 1  # paused: nothing sent
    assert gw.metric("edge_gateway_learning_shadow_skipped_total", reason="rate_limited") == 1
    assert len(learning.store) == 2


async def test_unparsable_verdict_gives_no_label(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    await fake_cloud.set_mode("judge")
    fake_cloud.judge_reply = "Both answers have merit; I cannot choose. [[A]] or maybe [[B]]."
    policy = write_policy(tmp_path / "policy.yaml")
    gw = await gateway_factory(**learning_settings(fake_cloud, tmp_path, policy))
    await ask(gw.client("sk-tenant-a"), "Give me two quick tips about chess.")
    await settle(gw)
    assert fake_cloud.judge_calls == 1
    assert gw.metric("edge_gateway_learning_shadow_total", result="unparsable") == 1
    learning = gw.app[SERVICES].learning
    assert learning is not None and len(learning.store) == 0


async def test_feedback_only_for_the_tenants_own_recent_requests(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    gw = await gateway_factory(**learning_settings(fake_cloud, tmp_path, policy, shadow_rate=0))
    _, rid = await ask(gw.client("sk-tenant-a"), "Give me two quick tips about chess.")
    url = f"{gw.base_url}/feedback"

    async def post(key: str, body: Any) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as s:
            async with s.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
                return r.status, await r.json()

    status, body = await post("sk-tenant-b", {"request_id": rid, "score": -1})
    assert status == 404 and body["error"]["code"] == "request_not_found"
    assert (await post("sk-tenant-a", {"request_id": "req_unknown", "score": 1}))[0] == 404
    for bad in (
        {"request_id": rid, "score": 2},
        {"request_id": rid, "score": True},
        {"request_id": rid, "score": "1"},
        {"request_id": rid, "good": 1},
        {"request_id": rid},
        {"request_id": rid, "score": 1, "good": True},
        {"request_id": 7, "score": 1},
        {"request_id": rid, "score": 1, "extra": 1},
    ):
        status, body = await post("sk-tenant-a", bad)
        assert status == 400, (bad, body)
        assert body["error"]["type"] == "invalid_request_error"
    status, body = await post("sk-tenant-a", {"request_id": rid, "score": -0.5})
    assert status == 200 and body["label"] == 0.75
    assert (await post("sk-tenant-a", {"request_id": rid, "good": True}))[0] == 409
    assert gw.metric("edge_gateway_learning_labels_total", source="feedback") == 1

    # Feedback sent while its answer is still streaming waits for the answer to finish.
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer sk-tenant-a"}) as s:
        body = {
            "model": "auto",
            "stream": True,
            "max_tokens": 12,
            "messages": [{"role": "user", "content": "Count from one to twenty."}],
        }
        async with s.post(f"{gw.base_url}/chat/completions", json=body) as stream:
            sid = stream.headers["x-request-id"]
            await stream.content.readline()  # the stream has started
            early = asyncio.create_task(post("sk-tenant-a", {"request_id": sid, "good": False}))
            await stream.read()
        status, body = await early
        assert status == 200 and body["label"] == 1.0
    # A Responses API answer takes feedback by its request id as well.
    raw = await gw.client("sk-tenant-a").responses.with_raw_response.create(
        model="auto", input="Name a colour.", max_output_tokens=4
    )
    fid = raw.headers["x-request-id"]
    assert (await post("sk-tenant-b", {"request_id": fid, "good": True}))[0] == 404
    assert (await post("sk-tenant-a", {"request_id": fid, "good": True}))[0] == 200
    assert fake_cloud.chat_calls == 0  # shadow_rate 0: nothing left the box


async def test_shutdown_cancels_running_judgements(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    await fake_cloud.set_mode("hang")  # the shadow call never gets an answer
    policy = write_policy(tmp_path / "policy.yaml")
    gw = await gateway_factory(**learning_settings(fake_cloud, tmp_path, policy))
    route, _ = await ask(gw.client("sk-tenant-a"), "Give me two quick tips about chess.")
    assert route == "local"  # the client's answer did not wait for the judge
    learning = gw.app[SERVICES].learning
    assert learning is not None
    await until(lambda: fake_cloud.chat_calls == 1)
    (task,) = learning.shadow.tasks
    async with asyncio.timeout(10):
        await gw.runner.cleanup()
    assert task.cancelled()
    assert len(learning.store) == 0


async def test_learning_off_stores_nothing(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    overrides = learning_settings(fake_cloud, tmp_path, policy)
    overrides["learning"]["enabled"] = False
    gw = await gateway_factory(**overrides)
    _, rid = await ask(gw.client("sk-tenant-a"), "Give me two quick tips about chess.")
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{gw.base_url}/feedback", json={"request_id": rid, "good": 1}) as r:
            assert r.status == 404
            assert (await r.json())["error"]["code"] == "learning_disabled"
    assert gw.app[SERVICES].learning is None
    assert not (tmp_path / "labels.sqlite3").exists()
    assert fake_cloud.chat_calls == 0


# -- the pieces, without a model ----------------------------------------------------------


async def test_store_stays_within_its_cap(tmp_path: Path) -> None:
    added: list[tuple[str, int]] = []
    store = LabelStore(tmp_path / "s.sqlite3", 10, on_added=lambda s, d: added.append((s, d)))
    for i in range(15):
        await store.add("cascade", label=float(i % 2), tenant="t", route="local", prompt=f"p{i}")
    assert len(store) == 10 and store.dropped == 5
    assert sum(d for _, d in added) == 5
    rows = await store.rows()
    assert [r.body["label"] for r in rows] == [float(i % 2) for i in range(5, 15)]
    assert all("prompt" not in r.body for r in rows)
    with pytest.raises(ValueError):
        await store.add("guess", label=0.0, tenant=None, route="local", prompt="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        await store.add("shadow", label=2.0, tenant=None, route="local", prompt="x")
    await store.close()
    reopened = LabelStore(tmp_path / "s.sqlite3", 10)
    assert len(reopened) == 10  # durable
    await reopened.close()


def test_judge_prompt_and_verdicts() -> None:
    req = ChatRequest.model_validate(
        {"model": "auto", "messages": [{"role": "user", "content": "What is 2+2?"}]}
    )
    firsts = {judge.local_first() for _ in range(64)}
    assert firsts == {True, False}  # the local answer is shown in both positions
    for local_is_a in (True, False):
        p = judge.pair(req, "four", "4", local_is_a=local_is_a)
        user = p.messages[1]["content"]
        assert p.local_is_a is local_is_a
        assert "What is 2+2?" in user and "four" in user
        a = user.split("[The start of assistant A's answer]\n", 1)[1]
        assert a.startswith("four" if local_is_a else "4")
    assert judge.verdict("reasons...\n[[A]]") == "A"
    assert judge.verdict("[[C]]") == "C"
    assert judge.verdict("no verdict") is None
    assert judge.verdict("[[A]] then [[B]]") is None
    assert judge.verdict("[[A]] ... final: [[A]]") == "A"
    assert judge.label_of("A", local_is_a=True) == 0.0
    assert judge.label_of("A", local_is_a=False) == 1.0
    assert judge.label_of("B", local_is_a=False) == 0.0
    assert judge.label_of("C", local_is_a=True) == 0.0


def test_recent_requests_bounded_and_per_tenant() -> None:
    now = [0.0]
    recent = RecentRequests(3, ttl_s=10, clock=lambda: now[0])
    vec = vector("hello there")
    for i in range(5):
        recent.put("a", f"r{i}", vec, route="local", private=False, prompt=None)
    assert len(recent) == 3 and recent.get("a", "r0") is None and recent.get("a", "r4")
    assert recent.get("b", "r4") is None  # another tenant's id
    now[0] = 11
    assert recent.get("a", "r4") is None  # too old


def test_hashed_weights_score_text_as_the_store_vectors_say() -> None:
    rows = [(f.format(t), 1.0) for f in FORMS for t in TAX]
    rows += [(f.format(t), 0.0) for f in FORMS for t in OTHER]
    doc = train([Example("", y, y, vector=vector(p)) for p, y in rows], hashed=True)
    assert doc["format_version"] == 2 and doc["term_hash"] == "crc32"
    scorer = LearnedScorer(doc)
    for p, _ in rows[:5]:
        # The store rounds dense features to 6 digits.
        assert scorer.raw(p)[0] == pytest.approx(scorer.raw_vector(vector(p)), rel=1e-4)


def test_canary_refuses_weights_worse_than_the_current_ones() -> None:
    rows: list[Record] = []
    rng = random.Random(3)
    for i in range(1, 121):
        tax = i % 3 == 0
        text = FORMS[i % 4].format(rng.choice(TAX if tax else OTHER))
        label = float(tax)
        if not held_out(i, 0.25):
            label = float(rng.random() < 0.5)  # the slice it trains on says nothing useful
        rows.append(Record(i, 0.0, "shadow", {"v": vector(text), "label": label}))
    # A label is its own gain (as store.example_of and read_jsonl make it): ridge fits it.
    truth = [
        Example("", float(i % 3 == 0), float(i % 3 == 0), vector=r.body["v"])
        for i, r in enumerate(rows, 1)
    ]
    current = LearnedScorer(train(truth, hashed=True))
    result = evaluate(rows, current, share=0.25, min_labels=50)
    assert not result.accepted and result.reason == "worse", result
    assert result.current is not None and result.candidate is not None
    assert result.candidate < result.current
    # Against the shipped scorer (length-led, knows nothing of tax) the truthful store wins.
    honest = [
        Record(r.id, 0.0, "shadow", {"v": r.body["v"], "label": e.target})
        for r, e in zip(rows, truth, strict=True)
    ]
    result = evaluate(honest, ComplexityScorer(), share=0.25, min_labels=50)
    assert result.accepted, result
    assert evaluate(honest[:20], ComplexityScorer(), share=0.25, min_labels=50).reason == (
        "too_few_labels"
    )


def test_judge_model_must_be_a_cloud_model() -> None:
    with pytest.raises(SettingsError, match="judge_model"):
        load_settings(learning={"judge_model": "nope"})
    with pytest.raises(SettingsError, match="shadow_rate"):
        load_settings(learning={"shadow_rate": 1.5})


def test_train_router_from_store_needs_a_store(tmp_path: Path) -> None:
    done = train_cli("--from-store", str(tmp_path / "missing.sqlite3"), "--out", "x.json")
    assert done.returncode == 2 and "no label store" in done.stderr
    done = train_cli("--out", str(tmp_path / "x.json"))
    assert done.returncode == 2 and "--from-store" in done.stderr


async def test_an_escalation_becomes_a_cascade_label_with_one_judge_call(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    # Both answers already exist: only the judge is asked, never the cloud a second time.
    await fake_cloud.set_mode("judge")
    policy = tmp_path / "cascade.yaml"
    policy.write_text(
        "version: 1\ndefault: local\nrules:\n"
        "  - name: private-data-stays-local\n    enforce: true\n    when: {pii: true}\n"
        "    route: local\n"
        "  - name: local-first\n    route: cascade\n"
        "    cascade: {to: cloud, threshold: {mean_logprob: 0.0}}\n",  # 0: always unsure
        encoding="utf-8",
    )
    gw = await gateway_factory(**learning_settings(fake_cloud, tmp_path, policy, shadow_rate=0))
    raw = await gw.client("sk-tenant-a").chat.completions.with_raw_response.create(
        model="auto",
        messages=[{"role": "user", "content": "What should I know about my tax return?"}],
        max_tokens=4,
        temperature=0.0,
    )
    assert raw.headers["x-gateway-escalated"] == "true"
    await settle(gw)
    assert fake_cloud.judge_calls == 1
    learning = gw.app[SERVICES].learning
    assert learning is not None
    rows = list(learning.store.log.iter_sync())
    assert [r.kind for r in rows] == ["cascade"]
    assert rows[0].body["label"] == 1.0  # the judge calls local tax answers bad
    assert gw.metric("edge_gateway_learning_labels_total", source="cascade") == 1
