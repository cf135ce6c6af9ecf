"""train-router, learned weights in a policy, and eval-router pooling: all on synthetic data."""

from __future__ import annotations

import argparse
import gzip
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.routing.features import FeatureExtractor
from gateway.routing.learned import FEATURE_VERSION, LearnedScorer, WeightsError
from gateway.routing.live_policy import PolicyStore
from gateway.routing.policy import Router
from gateway.routing.policy_file import PolicyError, load_policy
from gateway.schemas import ChatRequest
from gateway.tools import eval_router as evaluate
from gateway.tools import train_router as train
from gateway.tools.eval_router import apgr
from tests.conftest import ROOT

TOPICS_HARD = ["tensor", "lattice", "eigen", "manifold"]
TOPICS_EASY = ["garden", "kitchen", "weather", "holiday"]


def _prompt(rng: random.Random, hard: bool) -> str:
    words = TOPICS_HARD if hard else TOPICS_EASY
    filler = " ".join(rng.choice(["the", "a", "of", "about", "please", "tell"]) for _ in range(8))
    # Length says nothing here: hard and easy prompts have the same length distribution.
    return f"{filler} {rng.choice(words)} question {rng.randint(0, 9)} " + "x" * rng.randint(0, 80)


def synthetic_rows(n: int, seed: int) -> list[tuple[str, bool, bool]]:
    """(prompt, weak ok, strong ok): the weak model fails the 'hard' topic words mostly."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        hard = rng.random() < 0.4
        weak = rng.random() < (0.3 if hard else 0.9)
        strong = weak or rng.random() < 0.85
        rows.append((_prompt(rng, hard), weak, strong))
    return rows


def write_csv(path: Path, rows: list[tuple[str, bool, bool]]) -> Path:
    lines = ["prompt,small,big"] + [f'"{p}",{w},{s}' for p, w, s in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[tuple[str, bool, bool]]) -> Path:
    path.write_text(
        "".join(json.dumps({"prompt": p, "local_ok": w}) + "\n" for p, w, _ in rows),
        encoding="utf-8",
    )
    return path


def _train(*argv: str) -> int:
    p = argparse.ArgumentParser()
    train.configure_parser(p)
    return train.run(p.parse_args(list(argv)))


def _eval(*argv: str) -> int:
    p = argparse.ArgumentParser()
    evaluate.configure_parser(p)
    return evaluate.run(p.parse_args(list(argv)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("w")
    f = write_csv(d / "train.csv", synthetic_rows(600, seed=1))
    out = d / "router.json"
    assert _train(str(f), "--weak", "small", "--strong", "big", "--out", str(out)) == 0
    return out


def test_both_input_formats(tmp_path: Path) -> None:
    rows = synthetic_rows(20, seed=2)
    csv_ex = train.read_examples(write_csv(tmp_path / "a.csv", rows), "small", "big")
    jsonl_ex = train.read_examples(write_jsonl(tmp_path / "a.jsonl", rows))
    assert [e.prompt for e in csv_ex] == [e.prompt for e in jsonl_ex] == [r[0] for r in rows]
    assert [e.target for e in csv_ex] == [float(s and not w) for _, w, s in rows]
    assert [e.target for e in jsonl_ex] == [float(not w) for _, w, _ in rows]
    scored = tmp_path / "s.jsonl"
    scored.write_text('{"prompt": "a", "score": 0.25}\n\n{"prompt": "b", "score": 1}\n')
    assert [e.target for e in train.read_examples(scored)] == [0.25, 1.0]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "a"}', "local_ok"),
        ('{"prompt": "a", "local_ok": "yes"}', "true or false"),
        ('{"prompt": "a", "score": 2}', "[0, 1]"),
        ('{"text": "a", "local_ok": true}', "prompt"),
        ("not json", "invalid JSON"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "ok", "local_ok": true}\n' + line + "\n")
    with pytest.raises(ValueError) as exc:
        train.read_examples(f)
    assert f"{f}:2:" in str(exc.value) and message in str(exc.value)


def test_learned_weights_beat_length_on_fresh_data(weights: Path) -> None:
    scorer = LearnedScorer.load(weights)
    rows = synthetic_rows(400, seed=9)
    prompts, weak, strong = ([r[i] for r in rows] for i in range(3))
    learned, _ = apgr([scorer.score(p).score for p in prompts], weak, strong)
    length, _ = apgr([float(len(p)) for p in prompts], weak, strong)
    assert learned > length + 0.1, (learned, length)
    c = scorer.score("please tell the tensor question")
    assert 0 <= c.score <= 1 and "learned terms" in c.reasons


def test_same_data_and_seed_give_the_same_bytes(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "t.jsonl", synthetic_rows(300, seed=4))
    outs = []
    for name in ("a.json.gz", "b.json.gz", "c.json"):
        assert _train(str(f), "--seed", "7", "--out", str(tmp_path / name)) == 0
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    assert gzip.decompress(outs[0]) == outs[2]
    doc = json.loads(outs[2])
    assert doc["feature_version"] == FEATURE_VERSION and doc["format_version"] == 1
    assert doc["training"]["seed"] == 7 and doc["trained_on"]["prompts"] == 300


def test_weights_of_another_feature_version_are_refused(weights: Path, tmp_path: Path) -> None:
    doc = json.loads(weights.read_text())
    doc["feature_version"] = FEATURE_VERSION + 1
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    with pytest.raises(WeightsError, match="feature version"):
        LearnedScorer.load(old)
    policy = tmp_path / "p.yaml"
    policy.write_text("default: local\nscorer:\n  weights: old.json\n")
    with pytest.raises(PolicyError) as exc:
        load_policy(policy)
    msg = str(exc.value)
    assert f"{policy}:3:" in msg and "scorer.weights" in msg and str(old) in msg
    assert "retrain" in msg
    policy.write_text("default: local\nscorer: {weights: missing.json}\n")
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(policy)
    (tmp_path / "junk.json").write_text("{}")
    policy.write_text("default: local\nscorer: {weights: junk.json}\n")
    with pytest.raises(PolicyError, match="not a weights file"):
        load_policy(policy)


def _policy_with(tmp_path: Path, weights: Path) -> Path:
    (tmp_path / "w").mkdir(exist_ok=True)
    (tmp_path / "w" / "router.json").write_bytes(weights.read_bytes())
    p = tmp_path / "policy.yaml"
    p.write_text(
        "default: local\nscorer: {weights: w/router.json}\n"
        "rules:\n  - name: complex\n    when: {complexity: {gte: 0.6}}\n    route: cloud\n"
    )
    return p


def _decide(policy_scorer: object | None, text: str) -> str:
    from gateway.routing.complexity import ComplexityScorer

    ext = FeatureExtractor(scorer=ComplexityScorer(), local_n_ctx=2048)
    req = ChatRequest.model_validate(
        {"model": "auto", "messages": [{"role": "user", "content": text}]}
    )
    f = ext.extract(
        req,
        tenant=None,
        cloud_reachable=True,
        local_queue_depth=0,
        local_queue_full=False,
        scorer=policy_scorer,  # type: ignore[arg-type]
    )
    policy = load_policy(ROOT / "policies" / "default.yaml", cloud_names=["gpt"])
    return Router(cloud_names=["gpt"], local_names=[]).decide(policy, f).rule


def test_the_policy_scorer_changes_a_routing_decision(weights: Path, tmp_path: Path) -> None:
    policy = load_policy(_policy_with(tmp_path, weights), cloud_names=["gpt"])
    assert policy.scorer is not None
    text = "please tell about the tensor lattice eigen manifold question 3"
    assert _decide(None, text) == "default"  # the shipped scorer: short, nothing special
    assert _decide(policy.scorer, text) == "complex"  # the learned one knows these words
    assert _decide(policy.scorer, "please tell about the garden question 3") == "default"


def test_policy_with_weights_hot_reloads(weights: Path, tmp_path: Path) -> None:
    path = _policy_with(tmp_path, weights)
    store = PolicyStore(path, cloud_names=[])
    first = store.current.scorer
    assert first is not None
    text = "please tell the tensor question"
    before = first.score(text).score
    # Retrained weights that think the opposite, written under a new name, policy pointed there.
    doc = json.loads(weights.read_text())
    doc["terms"] = {k: -v for k, v in doc["terms"].items()}
    (tmp_path / "w" / "v2.json").write_text(json.dumps(doc))
    path.write_text(path.read_text().replace("router.json", "v2.json"))
    assert store.changed()
    store.reload()
    after = store.current.scorer
    assert after is not None and after is not first
    assert after.score(text).score < before
    # A broken weights file keeps the last good policy.
    (tmp_path / "w" / "v3.json").write_text("{")
    path.write_text(path.read_text().replace("v2.json", "v3.json"))
    with pytest.raises(PolicyError, match=r"v3\.json"):
        store.reload()
    assert store.current.scorer is after


def test_policy_check_accepts_weights(weights: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "policy", "check", str(_policy_with(tmp_path, weights))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("ok")


def test_eval_router_pools_files_and_notes_an_odd_one(
    weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_csv(tmp_path / "a.csv", synthetic_rows(200, seed=11))
    b = write_jsonl(tmp_path / "b.jsonl", synthetic_rows(100, seed=12))
    # The strong model is worse here: no figures of its own, but pooled, and not fatal.
    odd = write_csv(tmp_path / "odd.csv", [(p, s, w) for p, w, s in synthetic_rows(50, seed=13)])
    args = [str(a), str(b), str(odd), "--weak", "small", "--strong", "big"]
    assert _eval(*args, "--weights", str(weights)) == 0
    out = capsys.readouterr().out
    assert f"note: {odd}: the strong model is not better" in out
    assert "== combined (350 prompts)" in out and f"== {a}" not in out
    for label in ("scorer", "weights", "random", "prompt-length"):
        assert out.count(f"{label}: APGR=") == 1, out
    assert _eval(*args, "--per-file") == 0
    out = capsys.readouterr().out
    assert out.count("scorer: APGR=") == 3 and "weights:" not in out  # a, b and combined
    assert f"== {odd} (50 prompts)\nnote: the strong model is not better" in out
    assert _eval(*args, "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    assert "note" in doc[str(odd)] and doc["combined"]["prompts"] == 350


def test_eval_router_refuses_bad_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_csv(tmp_path / "a.csv", synthetic_rows(50, seed=3))
    bad = tmp_path / "w.json"
    bad.write_text(json.dumps({"format": "edge-gateway-router-weights", "format_version": 1}))
    assert _eval(str(a), "--weak", "small", "--strong", "big", "--weights", str(bad)) == 2
    assert "feature version" in capsys.readouterr().err


def test_train_router_cli_errors_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    same = write_jsonl(tmp_path / "s.jsonl", [(f"p{i}", True, True) for i in range(30)])
    assert _train(str(same), "--out", str(tmp_path / "x.json")) == 2
    assert "same label" in capsys.readouterr().err
    assert _train(str(tmp_path / "none.csv"), "--out", str(tmp_path / "x.json")) == 2
    assert "none.csv" in capsys.readouterr().err


def test_weights_replaced_in_place_reload_with_the_policy(weights: Path, tmp_path: Path) -> None:
    path = _policy_with(tmp_path, weights)
    store = PolicyStore(path, cloud_names=[])
    assert not store.changed()
    first = store.current.scorer
    doc = json.loads(weights.read_text())
    doc["terms"] = {k: -v for k, v in doc["terms"].items()}
    (tmp_path / "w" / "router.json").write_text(json.dumps(doc))  # same name, new content
    assert store.changed()  # the watcher reloads on it, like on a policy edit
    store.reload()
    assert store.current.scorer is not first
    assert not store.changed()
