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

from gateway.local import embedded_model_path
from gateway.services import SERVICES
from tests.conftest import RunningGateway, until

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


# -- connections: caps and slow clients ---------------------------------------------------------

HALF_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty"
HALF_BODY = (
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Content-Length: 4000\r\n\r\n" + b'{"model": "local", "messages": [' + b" " * 200
)


def _raise_fd_limit(need: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        top = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (top, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < need:
        pytest.skip(f"needs {need} open files, the hard limit is {hard}")


async def test_half_sent_requests_cannot_exhaust_the_server() -> None:
    """1,500 half-sent requests from one address against `python -m gateway serve`.

    The per-address cap holds 1,000 of them and refuses the rest at once; /healthz is probed
    from 127.0.0.2 (Linux routes all of 127/8 to lo), another client address, as an
    orchestrator's probe comes from its own address rather than the attacker's. Every
    connection is closed by the server within its timeout, and the log says so in a few
    lines, not a traceback per connection.
    """
    import asyncio
    import json
    import time

    from tests.conftest import GatewayProcess

    _raise_fd_limit(8192)  # 1,500 sockets here; the gateway inherits the limit too
    header_s, body_s = 2.0, 3.0
    gp = GatewayProcess(
        env={
            "GATEWAY_SERVER__MAX_CONNECTIONS": "1200",
            "GATEWAY_SERVER__MAX_CONNECTIONS_PER_ADDRESS": "1000",
            "GATEWAY_SERVER__HEADER_TIMEOUT_S": str(header_s),
            "GATEWAY_SERVER__BODY_TIMEOUT_S": str(body_s),
        }
    )
    try:
        gp.wait_ready(timeout=120)
        before = len(gp.output().splitlines())
        worst = 0.0
        probes = 0
        stop = asyncio.Event()

        async def probe() -> None:
            nonlocal worst, probes
            conn = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), force_close=True)
            async with aiohttp.ClientSession(connector=conn) as s:
                while not stop.is_set():
                    t0 = time.monotonic()
                    async with s.get(
                        gp.url + "/healthz", timeout=aiohttp.ClientTimeout(total=10)
                    ) as r:
                        assert r.status == 200
                    worst = max(worst, time.monotonic() - t0)
                    probes += 1
                    await asyncio.sleep(0.05)

        async def attack(i: int) -> tuple[float, bytes]:
            """Send half a request; how long until the server closed, and what it said."""
            reader, writer = await asyncio.open_connection("127.0.0.1", gp.port)
            opened = time.monotonic()
            writer.write(HALF_HEAD if i % 2 else HALF_BODY)
            said = b""
            try:
                async with asyncio.timeout(max(header_s, body_s) + 30):
                    while chunk := await reader.read(65536):
                        said += chunk
            except ConnectionResetError:
                pass
            closed = time.monotonic() - opened
            writer.close()
            return closed, said

        prober = asyncio.create_task(probe())
        tasks = []
        for i in range(1500):
            tasks.append(asyncio.create_task(attack(i)))
            if i % 100 == 99:
                await asyncio.sleep(0.05)  # the listen backlog is 128: no SYN retransmits
        results = await asyncio.gather(*tasks)
        stop.set()
        await prober
    finally:
        out = gp.stop()
    lines = out.splitlines()[before:]
    assert probes >= 5
    assert worst < 0.5, f"/healthz took {worst:.2f} s under the flood"
    refused = [r for r in results if r[1].startswith(b"HTTP/1.1 503")]
    timed_out = [r for r in results if b" 408 " in r[1][:20]]
    assert len(refused) >= 300, len(refused)  # past the per-address cap of 1,000
    assert len(refused) + len(timed_out) + sum(1 for r in results if not r[1]) == 1500
    for closed, said in results:
        # The server closed every one: half a header within header_timeout_s, half a body
        # within body_timeout_s (the 408 is JSON naming the setting), the rest at once.
        assert closed < max(header_s, body_s) + 5.0, (closed, said[:80])
    assert any(b"body_timeout" in said for _, said in timed_out)
    assert any(b"header_timeout" in said for _, said in timed_out)
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert not [r for r in records if "exc" in r or r["level"] in ("error", "critical")]
    assert not [line for line in lines if "Traceback" in line]
    server = [r for r in records if r["logger"] == "gateway.http.server"]
    assert 3 <= len(server) <= 12, server  # one line per burst of each kind, not per connection
    # The app logs one request line for each half-sent body that reached it (a 408), no more.
    assert len(records) <= len(server) + sum(1 for r in records if r["msg"] == "request") + 5
    assert sum(1 for r in records if r["msg"] == "request") <= 1000


async def test_caps_and_timeouts_hold_in_process_too(
    gateway_factory: Any, http: aiohttp.ClientSession
) -> None:
    import asyncio

    gw: RunningGateway = await gateway_factory(
        server={
            "max_connections_per_address": 2,
            "header_timeout_s": 0.5,
            "keepalive_timeout_s": 1.5,
        }
    )

    async def read_all(reader: asyncio.StreamReader) -> bytes:
        async with asyncio.timeout(10):
            return await reader.read()

    # A kept-alive connection, idle after its answer, is closed after keepalive_timeout_s.
    r1, w1 = await asyncio.open_connection("127.0.0.1", gw.port)
    w1.write(b"GET /healthz HTTP/1.1\r\nHost: box\r\n\r\n")
    # One that sends half a request line holds the second place of this address.
    r2, w2 = await asyncio.open_connection("127.0.0.1", gw.port)
    w2.write(b"GET /hea")
    # Both accepted (counted open) before the third knocks: read from the registry, since a
    # /metrics request would itself be a connection from this address.
    await until(lambda: gw.metric("edge_gateway_connections_open") >= 2, "two open connections")
    r3, w3 = await asyncio.open_connection("127.0.0.1", gw.port)
    refused = await read_all(r3)
    assert refused.startswith(b"HTTP/1.1 503") and b"too_many_connections" in refused
    idle = await read_all(r2)
    assert idle.startswith(b"HTTP/1.1 408") and b"header_timeout" in idle
    kept = await read_all(r1)
    assert kept.startswith(b"HTTP/1.1 200") and kept.count(b"HTTP/1.1") == 1
    for w in (w1, w2, w3):
        w.close()
    async with http.get(gw.url + "/metrics") as r:
        text = await r.text()
    assert 'edge_gateway_connections_dropped_total{reason="address_limit"} 1.0' in text
    assert 'edge_gateway_connections_dropped_total{reason="header_timeout"} 1.0' in text


# -- the Redis embedding cache ------------------------------------------------------------------


async def test_a_2048_input_batch_is_cached_in_batched_redis_calls(
    gateway_factory: Any, fake_cloud: Any, redis_server: Any
) -> None:
    import openai

    from tests.conftest import cloud_settings

    settings = cloud_settings(fake_cloud)
    settings["cloud"]["embedding_models"] = [
        fake_cloud.model_entry(name="embed-fake", model="openai/text-embedding-3-small")
    ]
    gw: RunningGateway = await gateway_factory(
        cache={"redis_url": redis_server.url, "key_prefix": "egw:batch:"}, **settings
    )
    inputs = [f"catalogue entry number {i}" for i in range(2048)]
    c = openai.AsyncOpenAI(base_url=gw.base_url, api_key="sk-batch", max_retries=0, timeout=120)
    first = await c.embeddings.with_raw_response.create(model="embed-fake", input=inputs)
    assert first.headers["x-gateway-cache-inputs"] == "0/2048"
    service = gw.app[SERVICES].embeddings
    assert service is not None and service.cache is not None
    await service.cache.cache.drain()
    assert len(redis_server.client().keys("egw:batch:emb:*")) == 2048
    second = await c.embeddings.with_raw_response.create(model="embed-fake", input=inputs)
    assert second.headers["x-gateway-cache-inputs"] == "2048/2048"
    assert second.headers["x-gateway-route"] == "cache"
    assert service.cache.cache.up
    async with aiohttp.ClientSession() as s, s.get(gw.url + "/metrics") as r:
        text = await r.text()
    assert "edge_gateway_cache_up 1.0" in text
    assert "edge_gateway_cache_errors_total{" not in text or all(
        line.endswith(" 0.0")
        for line in text.splitlines()
        if line.startswith("edge_gateway_cache_errors_total{")
    )
    await c.close()


# -- the local embedding worker -----------------------------------------------------------------


async def test_an_abandoned_local_embedding_job_frees_the_worker(
    gateway_factory: Any,
) -> None:
    import asyncio
    import random
    import time

    # Long enough for B's tiny embedding on a busy CI box (seconds), short against A's job:
    # 1,900 decodes of 500 tokens take many minutes even on a fast box.
    timeout_s = 20.0
    gw: RunningGateway = await gateway_factory(
        server={"request_timeout_s": timeout_s},
        # One thread: on a box busier than its cores, two threads meet at a barrier after
        # every graph node and a 4-token decode takes seconds.
        local={"embedding": {"max_request_tokens": 1_000_000, "n_threads": 1}},
    )
    service = gw.app[SERVICES].embeddings
    assert service is not None
    local = service.local
    await local.embed(["warm up"])  # the model loads on first use: not on the clock below
    rng = random.Random(7)
    big = [[rng.randrange(100, 40_000) for _ in range(500)] for _ in range(1900)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        headers_a = {"Authorization": "Bearer sk-key-a"}
        async with s.post(
            gw.base_url + "/embeddings", json={"model": "local", "input": big}, headers=headers_a
        ) as r:
            assert r.status == 504
            assert (await r.json())["error"]["code"] == "request_timeout"
        timed_out = time.monotonic()
        # Key B's small request, sent as A's deadline passes: it gets the worker.
        headers_b = {"Authorization": "Bearer sk-key-b"}
        async with s.post(
            gw.base_url + "/embeddings",
            json={"model": "local", "input": "a small question"},
            headers=headers_b,
        ) as r:
            assert r.status == 200, await r.text()
            assert len((await r.json())["data"]) == 1
    waited = time.monotonic() - timed_out
    assert waited < timeout_s  # B was answered within its own deadline, not after A's job
    for _ in range(100):
        if local.pending == 0:
            break
        await asyncio.sleep(0.05)
    assert local.pending == 0 and local.abandoned == 1
    assert local.decode_calls < 1900  # the warm-up, part of A, B: never all of A
    # A client that walks away once its job is running stops the job the same way.
    async with aiohttp.ClientSession() as s:
        walker = asyncio.create_task(
            s.post(gw.base_url + "/embeddings", json={"model": "local", "input": big})
        )
        for _ in range(400):
            if local.pending == 1:
                break
            await asyncio.sleep(0.05)
        assert local.pending == 1
        started = local.decode_calls
        await until(lambda: local.decode_calls > started, "the walker's job to run")
        walker.cancel()  # the connection closes with the task
        with pytest.raises(asyncio.CancelledError):
            await walker
    for _ in range(100):
        if local.pending == 0:
            break
        await asyncio.sleep(0.05)
    assert local.pending == 0 and local.abandoned == 2


async def test_local_embedding_requests_are_capped_in_tokens(
    gateway_factory: Any, http: aiohttp.ClientSession
) -> None:
    gw: RunningGateway = await gateway_factory(local={"embedding": {"max_request_tokens": 1000}})
    ids = [[1000 + 400 * j + i for i in range(400)] for j in range(3)]
    async with http.post(gw.base_url + "/embeddings", json={"model": "local", "input": ids}) as r:
        assert r.status == 400
        err = (await r.json())["error"]
    assert err["code"] == "too_many_tokens" and err["param"] == "input"
    assert "local.embedding.max_request_tokens" in err["message"] and "1200" in err["message"]
    async with http.post(
        gw.base_url + "/embeddings", json={"model": "local", "input": ids[:2]}
    ) as r:
        assert r.status == 200


# -- cloud embedding bodies ---------------------------------------------------------------------


async def _big_upstream(width: int, n_vectors: int) -> tuple[Any, str]:
    """An OpenAI-compatible /embeddings upstream answering `n_vectors` of `width` floats."""
    import json

    from aiohttp import web

    from tests.conftest import free_port

    row = json.dumps([round(0.001 * (k % 997) - 0.5, 9) for k in range(width)])
    body = (
        '{"object":"list","data":['
        + ",".join(
            f'{{"object":"embedding","index":{i},"embedding":{row}}}' for i in range(n_vectors)
        )
        + '],"model":"big","usage":{"prompt_tokens":7,"total_tokens":7}}'
    ).encode()

    async def embeddings(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}/v1"


async def test_cloud_embedding_bodies_are_bounded_and_parsed_off_the_loop(
    gateway_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import json
    import threading
    import time

    from gateway.embeddings import cloud as cloud_module

    monkeypatch.setenv("BIG_KEY", "sk-big-upstream")
    n = 1024
    upstream, base = await _big_upstream(width=3072, n_vectors=n)  # ~80 MB of floats
    entry = {"model": "openai/text-embedding-3-large", "api_base": base, "api_key_env": "BIG_KEY"}
    try:
        gw: RunningGateway = await gateway_factory(
            cloud={"embedding_models": [{"name": "big", **entry}]}  # the default cap: 128 MiB
        )
        threads: list[str] = []
        real = cloud_module.parse_large

        def spy(*args: Any) -> Any:
            threads.append(threading.current_thread().name)
            return real(*args)

        monkeypatch.setattr(cloud_module, "parse_large", spy)
        worst = 0.0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal worst
            while not done.is_set():
                t0 = time.perf_counter()
                await asyncio.sleep(0.01)
                worst = max(worst, time.perf_counter() - t0 - 0.01)

        tick = asyncio.create_task(ticker())
        inputs = [f"text {i}" for i in range(n)]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
            # base64 out: the answer's own encoding stays cheap, the upstream's floats are
            # what is measured.
            wanted = {"model": "big", "input": inputs, "encoding_format": "base64"}
            async with s.post(gw.base_url + "/embeddings", json=wanted) as r:
                assert r.status == 200, await r.text()
                raw = await r.read()
            done.set()  # before this test's own json.loads of the answer, on this loop
            await tick
            body = json.loads(raw)
            assert len(body["data"]) == n
            assert len(base64.b64decode(body["data"][0]["embedding"])) == 4 * 3072
            # json.loads of it on the loop stalls it for seconds; parsed in a thread vector by
            # vector, only the box's own scheduling noise is left.
            assert worst < 1.0, f"the event loop stalled {worst:.2f} s"
            assert threads and threads[0] != threading.main_thread().name
            # Past the cap: a 502 naming the setting, nothing parsed.
            gw2: RunningGateway = await gateway_factory(
                cloud={
                    "embedding_models": [{"name": "big", **entry}],
                    "max_embedding_response_bytes": 1024 * 1024,
                }
            )
            async with s.post(
                gw2.base_url + "/embeddings", json={"model": "big", "input": inputs}
            ) as r:
                assert r.status == 502
                err = (await r.json())["error"]
            assert err["code"] == "upstream_response_too_large"
            assert "cloud.max_embedding_response_bytes" in err["message"]
    finally:
        await upstream.cleanup()
