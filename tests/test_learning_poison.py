"""The issue's poisoning sequence: one API key's feedback must not move another key's routing.

A real gateway with two client keys, the real GGUF, learning and the on-box retrain on. Key A
sends 48 one-token local requests and scores them (small talk -1, hard prompts +1), the 48th
label starts a retrain; key B's `/v1/route` decisions and a real answer's route are checked
before and after (issue 21). Before the fix the retrain accepted weights fitted on A's labels
(its held-back slice came from the same labels) and B's small talk went to the cloud.
The rules one by one are in test_learning_tenants.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.http.auth import tenant_id
from gateway.services import SERVICES
from tests.conftest import RunningGateway
from tests.fakes.cloud import FakeCloud
from tests.test_learning import learning_settings, train_cli, until, write_policy

KEY_A, KEY_B, ADMIN = "sk-tenant-a", "sk-tenant-b", "sk-admin-21"
LOCAL_MODEL = "smollm2-135m-instruct"

SMALL_TALK = [
    "hi",
    "hello there",
    "good morning",
    "thanks a lot",
    "how are you?",
    "nice to meet you",
    "see you later",
    "have a nice day",
    "what's up?",
    "good night",
    "cheers mate",
    "hey, how is it going?",
]
TOPICS = [
    "a B-tree index",
    "the Raft consensus protocol",
    "garbage collection in the JVM",
    "TCP congestion control",
    "a Fourier transform",
    "public key cryptography",
    "a compiler's register allocator",
    "database isolation levels",
    "the CAP theorem",
    "gradient descent",
    "a lock-free queue",
    "virtual memory paging",
]
HARD = (
    "Explain in careful detail, with a worked example, a short proof sketch and a complexity "
    "analysis, how {} works, compare it with two alternatives an engineer might pick instead, "
    "and list the failure modes that should be tested before it is shipped to production."
)
# Key B's own questions: never sent by key A.
B_SMALL_TALK = ["hey there", "good afternoon", "thank you!", "bye for now"]
B_HARD = [HARD.format(t) for t in ("a hash table", "the Paxos algorithm", "a bloom filter")]


def two_key_settings(cloud: FakeCloud, tmp: Path, policy: Path, **learning: Any) -> dict[str, Any]:
    settings = learning_settings(
        cloud,
        tmp,
        policy,
        shadow_rate=0,  # only the clients speak: feedback is the whole attack
        retrain_every=48,
        retrain_min_labels=40,
        **learning,
    )
    settings["server"] = {"api_keys": [KEY_A, KEY_B], "admin_key": ADMIN}
    return settings


def seed_weights(tmp: Path) -> Path:
    """Hashed, length-led starting weights: long prompts to the cloud, short ones local."""
    seed = tmp / "seed.jsonl"
    seed.write_text(
        "".join(
            json.dumps({"prompt": "report " * k, "local_ok": k < 20}) + "\n" for k in range(2, 42)
        ),
        encoding="utf-8",
    )
    weights = tmp / "router.json"
    done = train_cli(str(seed), "--hashed", "--no-terms", "--out", str(weights))
    assert done.returncode == 0, done.stderr
    return weights


def session(key: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {key}"}, timeout=aiohttp.ClientTimeout(total=120)
    )


async def chat(s: aiohttp.ClientSession, gw: RunningGateway, text: str, model: str) -> str:
    """The request id of a one-token answer."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 1,
        "temperature": 0.0,
    }
    async with s.post(f"{gw.base_url}/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        await r.read()
        return r.headers["x-request-id"]


async def routes(s: aiohttp.ClientSession, gw: RunningGateway) -> dict[str, str]:
    """`/v1/route` for key B's small talk and hard prompts."""
    out = {}
    for text in B_SMALL_TALK + B_HARD:
        body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
        async with s.post(f"{gw.base_url}/route", json=body) as r:
            assert r.status == 200, await r.text()
            out[text] = (await r.json())["route"]
    return out


async def answer_route(s: aiohttp.ClientSession, gw: RunningGateway, text: str) -> str:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}], "max_tokens": 2}
    async with s.post(f"{gw.base_url}/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        await r.read()
        return r.headers["x-gateway-route"]


async def feedback(s: aiohttp.ClientSession, gw: RunningGateway, rid: str, score: float) -> int:
    async with s.post(f"{gw.base_url}/feedback", json={"request_id": rid, "score": score}) as r:
        await r.read()
        return r.status


# -- Done when 3: the poisoning sequence ---------------------------------------------------


@pytest.mark.parametrize("opt_in", [False, True], ids=["defaults", "feedback_opted_in"])
async def test_one_key_feedback_cannot_move_another_keys_routing(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path, opt_in: bool
) -> None:
    weights = seed_weights(tmp_path)
    policy = write_policy(tmp_path / "policy.yaml", weights.name)
    extra = {"retrain_on_feedback": True} if opt_in else {}
    gw = await gateway_factory(**two_key_settings(fake_cloud, tmp_path, policy, **extra))
    learning = gw.app[SERVICES].learning
    assert learning is not None
    before_weights = weights.read_bytes()
    async with session(KEY_A) as a, session(KEY_B) as b:
        before = await routes(b, gw)
        # The starting router sends hard prompts to the cloud and keeps small talk local.
        assert {before[t] for t in B_SMALL_TALK} == {"local"}, before
        assert {before[t] for t in B_HARD} == {"cloud"}, before
        assert await answer_route(b, gw, B_SMALL_TALK[0]) == "local"

        # Key A: 48 one-token local answers (24 small talk, 24 hard prompts), each scored:
        # small talk bad (-1: "should have gone to the cloud"), hard prompts good (+1).
        asked = [(t, -1.0) for t in SMALL_TALK] + [(HARD.format(t), 1.0) for t in TOPICS]
        asked += [(f"{t} :)", -1.0) for t in SMALL_TALK]
        asked += [(HARD.format(t) + " Be precise.", 1.0) for t in TOPICS]
        assert len(asked) == 48
        for i in range(0, len(asked), 4):  # four at a time: the local model's slots
            batch = asked[i : i + 4]
            rids = await asyncio.gather(*(chat(a, gw, t, LOCAL_MODEL) for t, _ in batch))
            for rid, (_, score) in zip(rids, batch, strict=True):
                assert await feedback(a, gw, rid, score) == 200
        # The 48th label started the on-box retrain: wait for its verdict.
        await until(lambda: learning.retrainer.last is not None, timeout=120)
        await until(lambda: learning.retrainer.task is None, timeout=120)
        # Key B's routing is what it was: /v1/route and the route of a real answer.
        assert await routes(b, gw) == before
        assert await answer_route(b, gw, B_SMALL_TALK[1]) == "local"

        last = learning.retrainer.last
        assert last is not None
        assert not last.accepted, last
        # Without the opt-in feedback alone never retrains; with it, key A supplies every
        # label on a box with two keys, and that alone refuses the retrain.
        reason = "one_key" if opt_in else "feedback_only"
        assert last.reason == reason, last
        assert gw.metric("edge_gateway_learning_retrains_total", result="refused", reason=reason)
        assert weights.read_bytes() == before_weights

        # Shown where the retrain status is shown: /admin/status (tenant ids, never keys).
        async with session(ADMIN) as admin:
            async with admin.get(f"{gw.url}/admin/status") as r:
                assert r.status == 200
                status = await r.json()
        shown = status["learning"]["last_retrain"]
        assert shown["result"] == "refused" and shown["reason"] == reason
        assert shown["top_key"] == tenant_id(KEY_A) and shown["top_key_share"] == 1.0
        assert KEY_A not in json.dumps(status)
        if opt_in:
            assert gw.metric("edge_gateway_learning_retrain_top_key_share") == 1.0
