"""Limits nobody with a key is needed to hit: connections, slow clients, big jobs and bodies.

One test (or a few) per finding of the adversarial probe in issue 21 that this module covers:
connection exhaustion, an embedding job that outlives its deadline, a model file edited in
place, the Redis embedding cache's pool, unbounded cloud embedding bodies, and the admin
guards of an open box.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.backends.local import embedded_model_path
from gateway.services import SERVICES
from tests.conftest import RunningGateway

ADMIN = "sk-admin-limits"
HELLO = [{"role": "user", "content": "Say OK."}]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- the admin API of an open box ---------------------------------------------------------------


async def test_open_box_admin_reload_is_loopback_only(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    # A page on evil.example whose name now resolves to the box (DNS rebinding) sends its own
    # Origin, which matches the Host it sends: the cross-site check alone lets it through.
    rebound = {"Host": "evil.example", "Origin": "http://evil.example"}
    for method, path in (("POST", "/admin/reload"), ("GET", "/admin/status")):
        async with http.request(method, gateway.url + path, headers=rebound) as r:
            assert r.status == 403, path
            err = (await r.json())["error"]
            assert err["code"] == "admin_loopback_only" and err["type"] == "permission_error"
    async with http.post(gateway.url + "/admin/reload") as r:  # the box itself: still fine
        assert r.status == 200
        assert (await r.json())["status"] == "reloaded"


async def test_a_nul_byte_in_a_swap_path_is_a_400_naming_the_field(
    gateway: RunningGateway, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"name": "smollm2-135m-instruct", "path": "/tmp/m\u0000.gguf", "sha256": "0" * 64}
    async with http.post(gateway.url + "/admin/models", json=body) as r:
        assert r.status == 400
        err = (await r.json())["error"]
    assert err["param"] == "path" and "NUL" in err["message"]
    assert not [rec for rec in caplog.records if rec.exc_info]


# -- a model file edited in place ---------------------------------------------------------------


async def test_a_model_edited_in_place_is_hashed_again_on_reload(
    gateway_factory: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    signer = Ed25519PrivateKey.generate()
    public = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    model = tmp_path / "edge.gguf"
    shutil.copyfile(embedded_model_path(), model)
    gw: RunningGateway = await gateway_factory(
        server={"admin_key": ADMIN},
        local={
            "n_ctx": 256,
            "parallel": 1,
            "models": [{"name": "edge", "path": str(model), "n_ctx": 256, "parallel": 1}],
            "trusted_keys": [base64.b64encode(public).decode()],
        },
    )
    admin = {"Authorization": f"Bearer {ADMIN}"}

    async def swap(sha: str) -> int:
        sig = base64.b64encode(signer.sign(bytes.fromhex(sha))).decode()
        body = {"name": "edge", "path": str(model), "sha256": sha, "signature": sig}
        async with http.post(gw.url + "/admin/models", json=body, headers=admin) as r:
            return r.status

    async def ask() -> tuple[int, str | None, dict[str, Any]]:
        body = {"model": "edge", "messages": HELLO, "max_tokens": 2, "temperature": 0}
        async with http.post(gw.base_url + "/chat/completions", json=body) as r:
            return r.status, r.headers.get("x-gateway-model-file"), await r.json()

    async def listed() -> dict[str, Any]:
        async with http.get(gw.url + "/admin/models", headers=admin) as r:
            entries = (await r.json())["data"]
        return next(e for e in entries if e["name"] == "edge")

    signed = _sha(model)
    assert await swap(signed) == 200
    status, file_id, _ = await ask()
    assert (status, file_id) == (200, signed[:12])
    # Edit one weight byte in place, then put size and mtime back as they were.
    st = model.stat()
    with model.open("r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert model.stat().st_size == st.st_size and model.stat().st_mtime_ns == st.st_mtime_ns
    edited = _sha(model)
    assert edited != signed
    fleet = gw.app[SERVICES].local
    await fleet._unload(fleet.entries["edge"], why="keep_alive")  # as the reaper would
    # Reloaded from disk: hashed again, so the bytes are no longer what was signed. It is
    # never served under the old digest.
    status, file_id, body = await ask()
    assert file_id != signed[:12], "an edited file was served under its signed digest"
    assert status == 503 and "changed on disk" in body["error"]["message"]
    entry = await listed()
    assert entry["state"] == "failed" and "changed on disk" in entry["last_error"]
    # The edited file signed and swapped in: now served and listed under its own digest.
    assert await swap(edited) == 200
    status, file_id, _ = await ask()
    assert (status, file_id) == (200, edited[:12])
    assert (await listed())["sha256"] == edited
