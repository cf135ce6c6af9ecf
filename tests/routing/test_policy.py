"""Policies: validation with file, line and field; first-match decisions; the CLI check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.routing.features import Features
from gateway.routing.policy import Router
from gateway.routing.policy_file import PolicyError, load_policy, parse_policy
from tests.conftest import ROOT


def feats(**kw: Any) -> Features:
    base: dict[str, Any] = dict(
        model="auto",
        prompt_tokens=20,
        complexity=0.1,
        complexity_reasons=(),
        needs=(),
        pii=(),
        tenant=None,
        cloud_reachable=True,
        local_queue_depth=0,
        local_queue_full=False,
        exceeds_local_context=False,
        max_tokens=None,
    )
    return Features(**{**base, **kw})


ROUTER = Router(cloud_names=["gpt", "claude"], local_names=["smol"])
DEFAULT = load_policy(ROOT / "policies" / "default.yaml", cloud_names=["gpt", "claude"])


@pytest.mark.parametrize(
    ("f", "target", "rule"),
    [
        (feats(), "local", "default"),
        (feats(prompt_tokens=3000), "gpt", "long-prompt"),
        (feats(complexity=0.9), "gpt", "complex"),
        (feats(needs=("tools",)), "gpt", "needs-cloud"),
        (feats(pii=("email",), complexity=0.9), "local", "private-data-stays-local"),
        (feats(model="cloud", pii=("card",)), "local", "private-data-stays-local"),
        (feats(model="claude"), "claude", "model"),
        (feats(model="cloud"), "gpt", "model"),
        (feats(model="local", complexity=0.99), "local", "model"),
        (feats(model="smol"), "local", "model"),
        (feats(local_queue_full=True), "gpt", "local-busy-spillover"),
        (feats(local_queue_full=True, cloud_reachable=False), "local", "default"),
    ],
)
def test_default_policy_decisions(f: Features, target: str, rule: str) -> None:
    d = ROUTER.decide(DEFAULT, f)
    assert (d.target, d.rule) == (target, rule), d.reason
    assert d.reason.startswith(f"rule={rule}")


def test_fallbacks_follow_offline_order() -> None:
    d = ROUTER.decide(DEFAULT, feats(prompt_tokens=5000))
    assert d.fallbacks == ("cache", "local")
    assert "prompt_tokens=5000 >2000" in d.reason


def test_a_privacy_rule_never_falls_back_to_the_cloud() -> None:
    """Whatever `offline.order` says, a private request the local model cannot answer is not
    handed to a cloud model (the cache holds answers already on the box: it may serve)."""
    policy = parse_policy(
        "version: 1\ndefault: local\nrules:\n"
        "  - {name: private, enforce: true, when: {pii: true}, route: local}\n"
        "offline: {order: [claude, cache, local]}\n",
        cloud_names=["gpt", "claude"],
    )
    for model in ("auto", "gpt"):
        d = ROUTER.decide(policy, feats(model=model, pii=("email",)))
        assert (d.target, d.rule, d.fallbacks) == ("local", "private", ("cache",))
    assert ROUTER.decide(policy, feats()).fallbacks == ("claude", "cache")


def test_unknown_model_raises_key_error() -> None:
    with pytest.raises(KeyError):
        ROUTER.decide(DEFAULT, feats(model="nope"))


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("version: 1\nrules: []\n", 1, "default"),
        (
            "default: local\nrules:\n  - name: a\n    route: local\n    when:\n"
            "      complexity: {gte: high}\n",
            6,
            "rules.0.when.complexity.gte",
        ),
        ("default: local\nrules:\n  - name: a\n    route: local\n    whn: {}\n", 5, "rules.0.whn"),
        (
            "default: local\noffline:\n  order: [cache, local]\n  allow_degraded: maybe\n",
            4,
            "offline.allow_degraded",
        ),
        ("default: local\nrules:\n  - name: a\n    route: mars\n", 4, "rules.0.route"),
        ("default: local\nrules: [\n", 3, "invalid YAML"),
    ],
)
def test_broken_policies_name_line_and_field(text: str, line: int, field: str) -> None:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, source="p.yaml", cloud_names=["gpt"])
    msg = str(exc.value)
    assert f"p.yaml:{line}:" in msg, msg
    assert field in msg, msg


def test_shipped_policies_are_valid() -> None:
    for path in sorted((ROOT / "policies").rglob("*.yaml")):
        load_policy(path, cloud_names=[])


def test_policy_check_cli(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "default: local\nrules:\n  - name: x\n    route: local\n"
        "    when: {prompt_tokens: {gt: many}}\n"
    )
    run = [sys.executable, "-m", "gateway", "policy", "check"]
    ok = subprocess.run(
        [*run, str(ROOT / "policies" / "default.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.startswith("ok")
    fail = subprocess.run([*run, str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert fail.returncode == 1
    assert f"{bad}:5:" in fail.stdout and "rules.0.when.prompt_tokens.gt" in fail.stdout


def test_explain_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "explain", "Say hello in French."],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert '"route": "local"' in out.stdout and '"complexity"' in out.stdout


def test_named_local_models_survive_cascade_and_unknown_names_stay_local() -> None:
    router = Router(cloud_names=["gpt"], local_names=["smol", "gemma"])
    policy = parse_policy(
        "version: 1\ndefault: cloud\nrules:\n"
        "  - {name: c, enforce: true, when: {complexity: {lte: 0.5}}, route: cascade,"
        " cascade: {to: gpt, threshold: {mean_logprob: -1}}}\n"
        "  - {name: pinned, enforce: true, when: {complexity: {gt: 0.5}}, route: cascade,"
        " model: gemma, cascade: {to: gpt, threshold: {mean_logprob: -1}}}\n",
        cloud_names=["gpt"],
    )
    asked = router.decide(policy, feats(model="gemma"))  # the client's named model is kept
    assert asked.cascade is not None and asked.model == "gemma"
    pinned = router.decide(policy, feats(complexity=0.9))  # the rule's model
    assert pinned.cascade is not None and pinned.model == "gemma"
    # A router that does not serve the rule's model (the embeddings router) still goes local.
    privacy = parse_policy(
        "version: 1\ndefault: cloud\nrules:\n"
        "  - {name: p, enforce: true, when: {pii: true}, route: local, model: big}\n",
        cloud_names=["gpt"],
    )
    d = Router(cloud_names=["gpt"], local_names=["embedder"]).decide(privacy, feats(pii=("email",)))
    assert d.target == "local" and d.rule == "p" and d.model is None
