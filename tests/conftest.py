"""Shared fixtures: real gateways on loopback, the real model, the official OpenAI SDK."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.http.server import GatewayRunner
from gateway.local import LocalBackend
from gateway.settings import LocalSettings, Settings, load_settings

# A real Redis Cluster and a Sentinel-watched master + replica, for every module that asks.
from tests.children import spawn
from tests.redis_servers import own_redis_sentinel, redis_cluster, redis_sentinel  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningGateway:
    """A gateway app served on a loopback port inside the test's event loop."""

    def __init__(self, app: web.Application, runner: web.AppRunner, port: int) -> None:
        self.app = app
        self.runner = runner
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.url}/v1"

    async def settled(self) -> None:
        """Wait for what an answer leaves running after it was sent: the cache's stores and
        the limits' settlements (instead of sleeping and hoping they are done)."""
        from gateway.services import LIMITER, SERVICES

        cache = self.app[SERVICES].dispatcher.cache
        if cache is not None:
            await cache.drain()
        semantic = self.app[SERVICES].dispatcher.semantic
        if semantic is not None:
            await semantic.drain()  # questions indexed after their answers were stored
        await self.app[LIMITER].drain()

    def client(self, key: str = "sk-client", *, timeout: float = 120.0) -> openai.AsyncOpenAI:
        """The openai SDK on this gateway: no retries (a test sees the first answer)."""
        return openai.AsyncOpenAI(
            base_url=self.base_url, api_key=key, max_retries=0, timeout=timeout
        )

    def metric(self, name: str, **labels: str) -> float:
        """A sample of this gateway's own registry (0 when absent), read without a request."""
        from gateway.services import SERVICES

        value = self.app[SERVICES].metrics.registry.get_sample_value(name, labels)
        return float(value or 0.0)


async def until(
    cond: Callable[[], bool], what: str = "a condition", *, timeout: float = 60.0
) -> None:
    """Poll `cond` (state inside the gateway, a fake, a counter) until it holds; fail after
    `timeout` seconds naming `what`. Generous: it only matters when something is wrong."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(f"{url}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} never became ready")


def make_settings(**overrides: Any) -> Settings:
    """Settings from the repo's config with test-friendly overrides (nested dicts)."""
    return load_settings(**overrides)


@pytest.fixture(scope="session")
def spec_check() -> Iterator[Any]:
    """Every answer an in-process gateway sends on OpenAI's paths, checked against OpenAI's
    published response schemas (tests/spec/); `.violations` says what broke them, by test."""
    from tests.spec.capture import teed
    from tests.spec.conformance import Conformance

    conformance = Conformance()
    with teed(conformance):
        yield conformance
    for path in _SPEC_FILES:
        with contextlib.suppress(OSError):
            os.unlink(path)


# Gateway processes' violation files -> how much of each was read.
_SPEC_FILES: dict[str, int] = {}


def _process_violations() -> list[str]:
    new = []
    for path, offset in list(_SPEC_FILES.items()):
        try:
            with open(path, encoding="utf-8") as f:
                f.seek(offset)
                text = f.read()
        except FileNotFoundError:
            del _SPEC_FILES[path]
            continue
        lines = text.splitlines(keepends=True)
        done = [line for line in lines if line.endswith("\n")]  # a line being written waits
        _SPEC_FILES[path] = offset + sum(len(line.encode()) for line in done)
        new += [json.loads(line) for line in done]
    return new


@pytest.fixture(autouse=True)
def _answers_conform(spec_check: Any) -> Iterator[None]:
    """A test during which a gateway (in process or not) sent an answer the spec rejects
    fails, naming it."""
    before = len(spec_check.violations)
    _process_violations()  # what came before this test is not its own
    yield
    new = [v for _, v in spec_check.violations[before:]] + _process_violations()
    if new:
        lines = "\n".join(f"  {v}" for v in new[:10])
        pytest.fail(f"{len(new)} answer(s) break OpenAI's published spec:\n{lines}")


@pytest.fixture
async def gateway_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[RunningGateway] = []

    async def start(settings: Settings | None = None, **overrides: Any) -> RunningGateway:
        app = create_app(settings or make_settings(**overrides))
        runner = GatewayRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        port = free_port()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        gw = RunningGateway(app, runner, port)
        started.append(gw)
        await wait_ready(gw.url)
        return gw

    yield start
    for gw in started:
        await gw.runner.cleanup()


@pytest.fixture
async def gateway(gateway_factory: Callable[..., Any]) -> RunningGateway:
    return await gateway_factory()  # type: ignore[no-any-return]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as s:
        yield s


class GatewayProcess:
    """The gateway started as a user would, `python -m gateway serve`, in its own process."""

    def __init__(self, env: dict[str, str] | None = None, args: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        full_env = {**os.environ, **(env or {})}
        # A file, not a pipe: a chatty gateway must never block on a full pipe.
        self.log = tempfile.TemporaryFile()
        # Its answers are checked against OpenAI's spec as an in-process gateway's are: what
        # breaks it lands in this file, read after every test.
        fd, self.violations = tempfile.mkstemp(prefix="spec-", suffix=".jsonl")
        os.close(fd)
        _SPEC_FILES[self.violations] = 0
        full_env["GATEWAY_SPEC_VIOLATIONS"] = self.violations
        self.proc = spawn(
            [
                sys.executable,
                "-m",
                "tests.spec.gateway",
                "serve",
                "--port",
                str(self.port),
                *(args or []),
            ],
            cwd=ROOT,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.output()
                raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{out}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise TimeoutError("gateway process never became ready")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        out = self.output()
        self.log.close()
        return out

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def local_only_gateway() -> Iterator[GatewayProcess]:
    """A `python -m gateway serve` with no cloud model: the local model answers everything.

    For module-scoped fixtures (`yield from local_only_gateway()`) of the suites that drive
    the local path through real clients.
    """
    gp = GatewayProcess(env={"GATEWAY_CLOUD__MODELS": "[]"})
    try:
        gp.wait_ready()
        yield gp
    finally:
        gp.stop()


@pytest.fixture(scope="module")
def gateway_process() -> Iterator[GatewayProcess]:
    gp = GatewayProcess()
    try:
        gp.wait_ready()
        yield gp
    finally:
        gp.stop()


@pytest.fixture
async def fake_cloud(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    from tests.fakes.cloud import FakeCloud

    monkeypatch.setenv("FAKE_CLOUD_KEY", "sk-fake-cloud-secret-123")
    cloud = await FakeCloud().start()
    yield cloud
    await cloud.stop()


def cloud_settings(cloud: Any, **cloud_overrides: Any) -> dict[str, Any]:
    """Overrides for make_settings() that put the fake cloud behind the gateway."""
    return {"cloud": {"models": [cloud.model_entry()], "probe_interval_s": 0.2, **cloud_overrides}}


class RedisServer:
    """A real redis-server on a loopback port, owned by the test session (or one test)."""

    def __init__(self) -> None:
        import shutil

        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed: run `make test` (it installs it)")
        self.exe = exe
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.proc = spawn(
            [
                self.exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.02)
        raise TimeoutError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server a test may kill and restart."""
    server = RedisServer().start()
    yield server
    server.kill()


# Local backends a test starts with its own settings, closed after it (the engine tests).
Factory = Callable[..., Awaitable[LocalBackend]]


@pytest.fixture
async def backend_factory() -> AsyncIterator[Factory]:
    started: list[LocalBackend] = []

    async def start(**settings: Any) -> LocalBackend:
        b = LocalBackend(LocalSettings(**settings))
        await b.load()
        started.append(b)
        return b

    yield start
    for b in started:
        await b.close()
