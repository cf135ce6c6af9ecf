"""One API key cannot retrain the router for the others (issue 21).

The poisoning sequence of the issue against a real gateway (two client keys, the real GGUF,
learning and the on-box retrain on): key A sends one-token local requests and scores them,
small talk bad and hard prompts good; key B's routing must not move. Then each rule alone:
per-key caps on stored labels and on feedback per hour, feedback-only retrains, one key's
share, the per-key weights and the held-back slice's keys.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.app import create_app
from gateway.durable import DurableLog, Record
from gateway.http.auth import tenant_id
from gateway.learning.labels import NO_KEY, LabelStore, key_of
from gateway.learning.verdict import Rules, evaluate, held_out, key_weights
from gateway.routing.complexity import ComplexityScorer
from gateway.routing.learned import LearnedScorer, vector
from gateway.routing.training import Example, gain_apgr, train
from gateway.services import SERVICES
from gateway.settings import load_settings
from tests.fakes.cloud import FakeCloud
from tests.test_learning import (
    FORMS,
    OTHER,
    TAX,
    write_policy,
)
from tests.test_learning_poison import (
    KEY_A,
    KEY_B,
    LOCAL_MODEL,
    chat,
    feedback,
    session,
    two_key_settings,
)

# -- the caps, in a running gateway --------------------------------------------------------


async def test_feedback_per_key_per_hour(
    gateway_factory: Any, fake_cloud: FakeCloud, tmp_path: Path
) -> None:
    policy = write_policy(tmp_path / "policy.yaml")
    settings = two_key_settings(fake_cloud, tmp_path, policy, feedback_per_key_per_hour=2)
    gw = await gateway_factory(**settings)
    learning = gw.app[SERVICES].learning
    assert learning is not None
    async with session(KEY_A) as a, session(KEY_B) as b:
        rids = [await chat(a, gw, f"hello number {i}", LOCAL_MODEL) for i in range(3)]
        assert [await feedback(a, gw, r, 1.0) for r in rids[:2]] == [200, 200]
        async with a.post(
            f"{gw.base_url}/feedback", json={"request_id": rids[2], "score": 1.0}
        ) as r:
            assert r.status == 429
            body = await r.json()
            assert body["error"]["code"] == "feedback_rate_limited"
            assert body["error"]["type"] == "rate_limit_error"
            assert 1 <= int(r.headers["Retry-After"]) <= 3600
        assert gw.metric("edge_gateway_learning_feedback_refused_total") == 1
        # Another key has its own hour.
        rid_b = await chat(b, gw, "hello from b", LOCAL_MODEL)
        assert await feedback(b, gw, rid_b, -1.0) == 200
        # The refused score was not spent: next hour, the same request can still be scored.
        learning._clock = lambda: 10**10
        learning._feedback_counts._clock = lambda: 10**10
        assert await feedback(a, gw, rids[2], 1.0) == 200
    assert await learning.store.counts_by_key() == {tenant_id(KEY_A): 3, tenant_id(KEY_B): 1}


async def test_one_key_only_pushes_out_its_own_labels(tmp_path: Path) -> None:
    store = LabelStore(tmp_path / "s.sqlite3", 20, per_key=5)
    for i in range(3):
        await store.add("feedback", label=0.0, tenant="bbbb", route="local", prompt=f"b{i}")
    for i in range(40):  # a busy key: far past its own cap
        await store.add("feedback", label=1.0, tenant="aaaa", route="local", prompt=f"a{i}")
    await store.add("shadow", label=1.0, tenant=None, route="local", prompt="open")
    assert await store.counts_by_key() == {"aaaa": 5, "bbbb": 3, NO_KEY: 1}
    assert store.dropped == 35
    rows = await store.rows()
    # The busy key kept its newest five; the other key lost nothing.
    assert [r.body["v"] for r in rows if key_of(r) == "aaaa"] == [
        vector(f"a{i}") for i in range(35, 40)
    ]
    assert len([r for r in rows if key_of(r) == "bbbb"]) == 3
    await store.close()


async def test_a_store_from_before_tenant_tags_is_read_and_tagged(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)  # the schema as it was: no tag column
    db.executescript(
        "CREATE TABLE records (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, "
        "kind TEXT NOT NULL, body TEXT NOT NULL);"
        "CREATE INDEX records_kind ON records (kind);"
    )
    for i, tenant in enumerate(["aaaa", "aaaa", None]):
        body = {"v": vector(f"p{i}"), "label": 1.0, "tenant": tenant, "route": "local"}
        db.execute(
            "INSERT INTO records (at, kind, body) VALUES (?, ?, ?)",
            (0.0, "feedback", json.dumps(body)),
        )
    db.commit()
    db.close()
    store = LabelStore(path, 100, per_key=2)
    assert len(store) == 3
    assert await store.counts_by_key() == {"aaaa": 2, NO_KEY: 1}
    await store.add("feedback", label=0.0, tenant="aaaa", route="local", prompt="new")
    assert await store.counts_by_key() == {"aaaa": 2, NO_KEY: 1}  # its cap holds old rows too
    await store.close()
    # The outbox's log, also a DurableLog, is untouched by tags and reads as before.
    log = DurableLog(path, 100)
    assert [r.kind for r in log.iter_sync()] == ["feedback"] * 3
    log.close_sync()


# -- the retrain rules, without a model ----------------------------------------------------


def rows_from(
    keys: dict[str, tuple[int, bool]], *, kind: str = "shadow", start: int = 1, seed: int = 3
) -> list[Record]:
    """Labelled rows per key: (count, honest). Honest keys label tax prompts 1, others 0;
    a dishonest key labels the opposite."""
    rng = random.Random(seed)
    rows: list[Record] = []
    i = start
    for key, (n, honest) in keys.items():
        for _ in range(n):
            tax = rng.random() < 0.4
            text = rng.choice(FORMS).format(rng.choice(TAX if tax else OTHER))
            label = float(tax == honest)
            body = {"v": vector(text), "label": label, "tenant": key, "route": "local"}
            rows.append(Record(i, 0.0, kind, body))
            i += 1
    return rows


TENANTS = Rules(tenants=True)


def test_key_weights_cap_each_keys_share_of_the_fit() -> None:
    w = key_weights({"a": 90, "b": 5, "c": 5}, 0.25)
    totals = {"a": 90 * w["a"], "b": 5 * w["b"], "c": 5 * w["c"]}
    # Three keys: the cap cannot be below an equal share; "a" is brought down to it.
    assert totals["a"] == pytest.approx(sum(totals.values()) / 3)
    assert w["b"] == w["c"] == 1.0
    counts = {"a": 400, "b": 100, "c": 100, "d": 100, "e": 100, "f": 100}
    w = key_weights(counts, 0.25)
    totals = {k: n * w[k] for k, n in counts.items()}
    assert totals["a"] == pytest.approx(0.25 * sum(totals.values()))
    assert all(w[k] == 1.0 for k in "bcdef")
    assert key_weights({"a": 10}, 0.25) == {"a": 1.0}
    assert key_weights({"a": 10, "b": 30}, 1.0) == {"a": 1.0, "b": 1.0}  # 1: no cap


def test_retrain_refused_when_one_key_supplies_most_labels() -> None:
    rows = rows_from({"aaaa": (70, False), "bbbb": (30, True)})
    result = evaluate(rows, ComplexityScorer(), share=0.25, min_labels=50, rules=TENANTS)
    assert not result.accepted and result.reason == "one_key", result
    assert result.top_key == "aaaa" and result.top_share == pytest.approx(0.7)
    # The threshold is a setting: 1 never refuses for that.
    loose = Rules(tenants=True, max_key_share=1.0)
    assert evaluate(rows, ComplexityScorer(), share=0.25, min_labels=50, rules=loose).reason != (
        "one_key"
    )


def test_one_operator_key_or_none_still_retrains() -> None:
    # A box with no keys, or one: one tenant, all its labels from it, and it retrains.
    for key in ("aaaa", NO_KEY):
        rows = rows_from({key: (120, True)})
        result = evaluate(rows, ComplexityScorer(), share=0.25, min_labels=50, rules=Rules())
        assert result.accepted, result
        assert result.top_share == 1.0


def test_feedback_alone_never_retrains_unless_opted_in() -> None:
    rows = rows_from({"aaaa": (120, True)}, kind="feedback")
    result = evaluate(rows, ComplexityScorer(), share=0.25, min_labels=50)
    assert not result.accepted and result.reason == "feedback_only"
    # A few judge labels next to many scores do not make it "not alone" either.
    mixed = rows + rows_from({"aaaa": (10, True)}, start=1000)
    assert evaluate(mixed, ComplexityScorer(), share=0.25, min_labels=50).reason == (
        "feedback_only"
    )
    opted = evaluate(rows, ComplexityScorer(), share=0.25, min_labels=50, rules=Rules(True))
    assert opted.accepted, opted
    # With enough judge labels, feedback joins the fit but the canary holds only judge labels.
    judged = rows_from({"aaaa": (60, True)}, start=1000)
    result = evaluate(rows + judged, ComplexityScorer(), share=0.25, min_labels=50)
    assert result.accepted, result
    assert result.held_back == sum(1 for r in judged if held_out(r.id, 0.25))
    assert result.trained_on == sum(1 for r in rows + judged if not held_out(r.id, 0.25))


def test_held_back_slice_must_hold_several_keys() -> None:
    # Enough labels from two keys, but every held-back row is one key's.
    rows = rows_from({"aaaa": (60, True)})
    rows += [
        Record(r.id + 10_000, 0.0, r.kind, {**r.body, "tenant": "bbbb"})
        for r in rows_from({"bbbb": (200, True)}, start=1)
        if not held_out(r.id + 10_000, 0.25)
    ][:60]
    assert {key_of(r) for r in rows if held_out(r.id, 0.25)} == {"aaaa"}
    result = evaluate(rows, ComplexityScorer(), share=0.25, min_labels=50, rules=TENANTS)
    assert not result.accepted and result.reason == "holdout_few_keys", result
    relaxed = Rules(tenants=True, canary_min_keys=1)
    assert evaluate(rows, ComplexityScorer(), share=0.25, min_labels=50, rules=relaxed).accepted


def flipped(rows: list[Record], poisoned: set[str]) -> list[Example]:
    """The truth behind `rows`: the poisoned keys' labels turned back."""
    return [
        Example(
            "",
            1.0 - r.body["label"] if key_of(r) in poisoned else float(r.body["label"]),
            1.0 - r.body["label"] if key_of(r) in poisoned else float(r.body["label"]),
            vector=r.body["v"],
        )
        for r in rows
    ]


def ranks(doc: dict[str, Any], rows: list[Record]) -> float:
    """APGR of weights `doc` on the labels of `rows`."""
    scorer = LearnedScorer(doc)
    return gain_apgr(
        [scorer.raw_vector(r.body["v"]) or 0.0 for r in rows], [r.body["label"] for r in rows]
    )


def test_key_weights_keep_the_largest_key_from_deciding_the_fit() -> None:
    # Key A (55%) labels everything inverted; B and C are honest. Unweighted, A's labels
    # outnumber theirs and the fit learns A's story; capped at an equal share, it learns theirs.
    rows = rows_from({"aaaa": (110, False), "bbbb": (45, True), "cccc": (45, True)})
    honest = rows_from({"bbbb": (60, True)}, start=5000, seed=11)  # unseen prompts of B
    # As the label store reads its rows: the gain is the label (learning/labels.py).
    examples = [
        Example("", float(r.body["label"]), float(r.body["label"]), vector=r.body["v"])
        for r in rows
    ]
    weight = key_weights({"aaaa": 110, "bbbb": 45, "cccc": 45}, 0.25)
    weighted = [
        Example(e.prompt, e.target, e.gain, vector=e.vector, weight=weight[key_of(r)])
        for e, r in zip(examples, rows, strict=True)
    ]
    plain = ranks(train(examples, hashed=True), honest)
    capped = ranks(train(weighted, hashed=True), honest)
    assert plain < 0.5 < capped, (plain, capped)


def test_new_weights_must_not_rank_any_keys_labels_worse() -> None:
    # Two keys collude (40% and 30%, each under the share that refuses outright), labelling
    # everything inverted; B (30%) is honest. The held-back slice is mostly theirs, so the
    # overall canary prefers their candidate; B's own held-back labels refuse it.
    rows = rows_from({"aaaa": (80, False), "cccc": (60, False), "bbbb": (60, True)})
    current = LearnedScorer(train(flipped(rows, {"aaaa", "cccc"}), hashed=True))
    result = evaluate(rows, current, share=0.25, min_labels=50, rules=TENANTS)
    assert not result.accepted and result.reason == "worse_for_a_key", result
    assert result.worse_for == "bbbb"
    assert result.candidate is not None and result.current is not None
    assert result.candidate > result.current  # the mixed slice alone would have accepted it
    # On a one-tenant box the same labels would be accepted: there is no one else to protect.
    assert evaluate(rows, current, share=0.25, min_labels=50, rules=Rules()).accepted


@pytest.mark.parametrize(
    ("keys", "tenants"),
    [
        ([], False),
        (["sk-operator"], False),
        (["sk-operator", "sk-operator"], False),
        (["sk-a", "sk-b"], True),
    ],
    ids=["open_box", "one_key", "one_key_twice", "two_keys"],
)
async def test_the_per_key_retrain_rules_need_two_keys(
    tmp_path: Path, keys: list[str], tenants: bool
) -> None:
    # An open box or a box with one key is one tenant: its operator retrains it as before.
    settings = load_settings(
        server={"api_keys": keys},
        learning={"enabled": True, "store": str(tmp_path / "labels.sqlite3")},
    )
    app = create_app(settings)
    learning = app[SERVICES].learning
    assert learning is not None
    try:
        rules = learning.retrainer.rules
        assert rules.tenants is tenants
        assert rules.feedback_alone is False  # the default: feedback never retrains alone
        assert (rules.max_key_share, rules.key_weight_share, rules.canary_min_keys) == (
            0.5,
            0.25,
            2,
        )
        assert learning.store.per_key == 10_000
    finally:
        await learning.close()


def test_a_feedback_label_keeps_its_feature_version() -> None:
    # The recent-requests window re-packs the vector; without its version a feedback label
    # reads as version 1 and is never trained on.
    from gateway.learning.labels import trains_router
    from gateway.learning.recent import RecentRequests
    from gateway.routing.learned import FEATURE_VERSION, vector, vector_version

    recent = RecentRequests(8, 60.0)
    recent.put(
        None, "r1", vector("explain a bloom filter"), route="local", private=False, prompt=None
    )
    issued = recent.get(None, "r1")
    assert issued is not None and vector_version(issued.vec()) == FEATURE_VERSION
    row = Record(1, 0.0, "feedback", {"v": issued.vec(), "label": 1.0, "route": "local"})
    assert trains_router(row)
