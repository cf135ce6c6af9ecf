"""The status page at / in a real headless browser, and the JSON behind it, /admin/status.

The browser is Debian's chromium driven by its chromedriver (`make system-deps` installs both);
selenium is told where they are and never downloads anything. The gateway runs in this test's
event loop, so every browser call runs in a thread and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest

from gateway.backends.health import Breaker, State
from gateway.http import openapi
from gateway.status import RecentDecision as Decision
from gateway.status import StatusBoard
from tests.conftest import ROOT, RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
UI_DIR = ROOT / "gateway" / "ui"
HELLO = [{"role": "user", "content": "Say hi."}]
ADMIN_KEY = "adm-secret-key-42"


class Browser:
    """A headless chromium; `run` calls into it off the event loop."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        for exe in (CHROMIUM, CHROMEDRIVER):
            if not os.access(exe, os.X_OK):
                pytest.fail(f"{exe} is missing: run `make system-deps` (chromium, chromium-driver)")
        self.profile = tempfile.mkdtemp(prefix="egw-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in (
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--window-size=1280,1800",
            f"--user-data-dir={self.profile}",
        ):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(
            service=Service(executable_path=CHROMEDRIVER), options=options
        )
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(30)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def js(self, script: str, *args: Any) -> Any:
        return await self.run(self.driver.execute_script, script, *args)

    async def wait_js(self, script: str, what: str, timeout: float = 20.0) -> Any:
        """Poll a script until it returns something truthy; fail naming `what` after timeout."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = await self.js(script)
            if last:
                return last
            await asyncio.sleep(0.1)
        text = await self.js("return document.body.innerText")
        raise AssertionError(f"timed out waiting for {what}; last={last!r}\npage:\n{text}")

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
async def browser(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Browser]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium manager: never fetch a driver
    b = await asyncio.to_thread(Browser)
    yield b
    await asyncio.to_thread(b.close)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    shutil.copy(ROOT / "policies" / "default.yaml", path)
    return path


async def _chat(http: aiohttp.ClientSession, gw: RunningGateway, model: str) -> dict[str, str]:
    body = {"model": model, "messages": HELLO, "max_tokens": 4}
    async with http.post(f"{gw.base_url}/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        return dict(r.headers)


ROUTE_ROWS = "return [...document.querySelectorAll('#recent tbody tr')].map(r => r.dataset.route)"
ROUTE_COUNT = (
    "const c = document.querySelector('#route-counts tr[data-route=\"{route}\"] td.recent');"
    "return c ? Number(c.textContent) : 0"
)
UPLINK = (
    "const r = document.querySelector('#uplink tr[data-target=\"gpt-fake\"]');"
    "return [document.getElementById('uplink-state').dataset.state, r && r.dataset.state,"
    " r && r.innerText]"
)


async def test_page_follows_traffic_uplink_and_policy(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    browser: Browser,
    http: aiohttp.ClientSession,
    policy_file: Path,
) -> None:
    gw = await gateway_factory(
        **cloud_settings(fake_cloud), policy={"file": str(policy_file), "reload_interval_s": 0.2}
    )
    await browser.run(browser.driver.get, gw.url + "/")
    await browser.wait_js(
        "return !document.getElementById('dashboard').hidden", "the dashboard to show"
    )
    state = await browser.wait_js(
        f"const s = (() => {{ {UPLINK} }})(); return s[0] === 'up' && s", "uplink up"
    )
    assert state[1] == "closed"
    await browser.js("window.__sameDocument = true")  # gone if the page ever reloads

    assert (await _chat(http, gw, "local"))["x-gateway-route"] == "local"
    assert (await _chat(http, gw, "gpt-fake"))["x-gateway-route"] == "cloud"
    rows = await browser.wait_js(
        f"const r = ({ROUTE_ROWS.removeprefix('return ')}); "
        "return r.includes('local') && r.includes('cloud') && r",
        "a local and a cloud decision in the recent list",
    )
    assert rows[:2] == ["cloud", "local"]  # newest first
    for route in ("local", "cloud"):
        count = await browser.wait_js(ROUTE_COUNT.replace("{route}", route), f"{route} count")
        assert count == 1
    recent_text = await browser.js("return document.getElementById('recent').innerText")
    assert "gpt-fake" in recent_text and "local" in recent_text
    await _try_it(browser)
    await _screenshot(browser)

    # The uplink dies: a cloud request trips the breaker and the page follows, no reload.
    await fake_cloud.set_mode("refuse")
    headers = await _chat(http, gw, "cloud")
    assert headers["x-gateway-degraded"] == "true"
    state = await browser.wait_js(
        f"const s = (() => {{ {UPLINK} }})(); return s[0] === 'down' && s", "uplink down"
    )
    assert state[1] == "open" and "cannot connect" in state[2], state
    assert await browser.js("return window.__sameDocument === true")

    # A broken edit is rejected by the file watcher; the page shows why.
    good = (ROOT / "policies" / "default.yaml").read_bytes()  # policy_file's content
    broken = good.replace(b"route: cloud", b"route: nowhere-cloud", 1)
    await asyncio.to_thread(policy_file.write_bytes, broken)
    err = await browser.wait_js(
        "const e = document.getElementById('policy-error'); return !e.hidden && e.textContent",
        "the rejected edit's error",
    )
    assert "nowhere-cloud" in err and "rejected" in err
    rules = await browser.js(
        "return [...document.querySelectorAll('#rules li')].map(li => li.dataset.rule)"
    )
    assert rules[0] == "private-data-stays-local"  # the last good policy is still shown
    assert await browser.js("return window.__sameDocument === true")


async def _try_it(browser: Browser) -> None:
    """The try-it box shows /v1/route's explanation, then on request the answer and headers."""
    d = browser.driver
    from selenium.webdriver.common.by import By

    await browser.run(lambda: d.find_element(By.ID, "try-prompt").send_keys("Say hello."))
    await browser.run(lambda: d.find_element(By.ID, "try-route").click())
    out = await browser.wait_js(
        "const t = document.getElementById('try-out').textContent;"
        "return t.includes('\"rule\"') && t",
        "the routing explanation",
    )
    assert "HTTP 200" in out and '"route": "local"' in out
    await browser.run(lambda: d.find_element(By.ID, "try-answer").click())
    out = await browser.wait_js(
        "const t = document.getElementById('try-out').textContent;"
        "return t.includes('x-gateway-route') && t",
        "the answer with its headers",
        timeout=60,
    )
    assert "x-gateway-route: local" in out and "chat.completion" in out


async def _screenshot(browser: Browser) -> None:
    """UI_SCREENSHOT=docs/ui.png makes this run refresh the README's screenshot."""
    target = os.environ.get("UI_SCREENSHOT")
    if target:
        await browser.run(browser.driver.save_screenshot, str(ROOT / target))


async def test_admin_key_page_asks_for_the_key_and_shows_no_data(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    browser: Browser,
    http: aiohttp.ClientSession,
) -> None:
    gw = await gateway_factory(**cloud_settings(fake_cloud), server={"admin_key": ADMIN_KEY})
    await _chat(http, gw, "local")
    await browser.run(browser.driver.get, gw.url + "/")
    await browser.wait_js("return !document.getElementById('key-prompt').hidden", "the key prompt")
    await asyncio.sleep(0.5)  # a poll or two more: still nothing shown
    shown = await browser.js(
        "return [document.getElementById('dashboard').hidden,"
        " document.querySelectorAll('#recent tbody tr, #uplink tbody tr').length,"
        " document.body.innerText]"
    )
    assert shown[0] is True and shown[1] == 0
    assert "gpt-fake" not in shown[2] and "private-data-stays-local" not in shown[2]

    from selenium.webdriver.common.by import By

    d = browser.driver
    await browser.run(lambda: d.find_element(By.ID, "key-input").send_keys("wrong-key"))
    await browser.run(lambda: d.find_element(By.ID, "key-save").click())
    await browser.wait_js(
        "return document.getElementById('key-message').textContent.includes('not accepted')",
        "the wrong key to be refused",
    )
    await browser.run(lambda: d.find_element(By.ID, "key-input").send_keys(ADMIN_KEY))
    await browser.run(lambda: d.find_element(By.ID, "key-save").click())
    await browser.wait_js(
        ROUTE_COUNT.replace("{route}", "local") + " === 1", "the data behind the key"
    )
    source = await browser.js("return document.documentElement.outerHTML")
    assert ADMIN_KEY not in source  # kept in session storage, never written into the page


# -- the JSON, the access rules and the assets, without a browser ------------------------------


async def _get(
    http: aiohttp.ClientSession, url: str, **headers: str
) -> tuple[int, str, dict[str, str]]:
    async with http.get(url, headers=headers) as r:
        return r.status, await r.text(), dict(r.headers)


async def test_status_json_has_no_secrets(
    gateway_factory: Any, fake_cloud: FakeCloud, http: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(**cloud_settings(fake_cloud), server={"admin_key": ADMIN_KEY})
    await _chat(http, gw, "gpt-fake")
    status, text, headers = await _get(
        http, gw.url + "/admin/status", Authorization=f"Bearer {ADMIN_KEY}"
    )
    assert status == 200 and headers["Cache-Control"] == "no-store"
    for secret in (ADMIN_KEY, "sk-fake-cloud-secret-123", fake_cloud.base_url, "FAKE_CLOUD_KEY"):
        assert secret not in text
    body = json.loads(text)
    schema = openapi.document()["paths"]["/admin/status"]["get"]["responses"]["200"]
    jsonschema.validate(body, schema["content"]["application/json"]["schema"])
    assert body["uplink"]["targets"][0]["name"] == "gpt-fake"
    assert body["recent"][0]["route"] == "cloud" and body["recent"][0]["prompt"] is None
    assert body["traffic"]["hour"]["routes"] == {"cloud": 1}
    assert body["recent_bound"] == 200
    for path in ("/admin/status", "/"):
        assert (await _get(http, gw.url + path))[0] == (401 if path != "/" else 200)


async def test_without_an_admin_key_only_loopback_hosts_get_in(
    gateway_factory: Any, http: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory()
    assert (await _get(http, gw.url + "/admin/status"))[0] == 200
    assert (await _get(http, f"http://localhost:{gw.port}/"))[0] == 200
    # A page on another site whose name now resolves to 127.0.0.1 (DNS rebinding) is refused.
    for path in ("/", "/admin/status", "/ui/app.js"):
        status, text, _ = await _get(http, gw.url + path, Host="gateway.example.com")
        assert status in (403, 404), (path, status)
    status, text, _ = await _get(http, gw.url + "/", Host="gateway.example.com")
    assert status == 403 and "SSH tunnel" in text


async def test_client_keys_alone_keep_status_closed(
    gateway_factory: Any, http: aiohttp.ClientSession
) -> None:
    gw = await gateway_factory(server={"api_keys": ["sk-client-1"]})
    assert (await _get(http, gw.url + "/"))[0] == 200  # the page itself holds no data
    assert (await _get(http, gw.url + "/admin/status"))[0] == 401
    status, _, _ = await _get(http, gw.url + "/admin/status", Authorization="Bearer sk-client-1")
    assert status == 403


async def test_assets_are_local_small_and_a_fixed_list(
    gateway: RunningGateway, http: aiohttp.ClientSession
) -> None:
    total = 0
    for name in ("app.js", "style.css"):
        status, text, headers = await _get(http, f"{gateway.url}/ui/{name}")
        assert status == 200 and "default-src 'none'" in headers["Content-Security-Policy"]
        total += len(text.encode())
    status, page, _ = await _get(http, gateway.url + "/")
    total += len(page.encode())
    assert total < 200 * 1024
    assert total == sum(p.stat().st_size for p in UI_DIR.iterdir() if p.is_file())
    for text in [page, *(p.read_text() for p in UI_DIR.iterdir())]:
        # No external asset: the only absolute URL is the SVG namespace, which is never fetched.
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, urls
    for bad in ("../status.py", "%2e%2e%2fstatus.py", "index.htm", "x.js"):
        assert (await _get(http, f"{gateway.url}/ui/{bad}"))[0] == 404


# -- units ----------------------------------------------------------------------------------------


def test_breaker_remembers_its_last_transition_and_why() -> None:
    b = Breaker("c", failures=1, retry_after_s=float("inf"))
    assert b.changed_at is None and b.change_reason == ""
    before = time.time()
    b.failure("refused", unreachable=True)
    assert b.state == State.OPEN and b.change_reason == "refused"
    assert b.changed_at is not None and b.changed_at >= before
    b.success()
    assert b.state == State.CLOSED and b.change_reason == "target answered again"


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        return self.t


def _decision(clock: Clock, route: str = "local", **kw: Any) -> Decision:
    base: dict[str, Any] = {
        "time": clock.t,
        "path": "/v1/chat/completions",
        "model": "auto",
        "route": route,
        "rule": "default",
        "reason": "default",
        "degraded": False,
        "cache": None,
        "failover": None,
        "status": 200,
        "latency_ms": 500.0,
        "prompt_tokens": 10,
        "completion_tokens": 20,
        "prompt": "secret prompt",
        "answer": "secret answer",
    }
    return Decision(**{**base, **kw})


def test_status_board_is_bounded_and_private_by_default() -> None:
    clock = Clock()
    board = StatusBoard(recent=3, clock=clock)
    for _ in range(5):
        board.add(_decision(clock))
    assert len(board.recent) == 3 and board.total_requests == 5
    assert all(d.prompt is None and d.answer is None for d in board.recent)
    assert board.local_tokens_per_s() == 40.0  # 20 tokens in 0.5 s
    board.add(_decision(clock, route="cache", cache="hit"))
    board.add(_decision(clock, route="cloud", cache="miss"))
    cache = board.cache_summary()
    assert cache["hit_rate"] == 0.5 and cache["tokens_saved_hour"] == 30
    clock.t += 10 * 60
    traffic = board.traffic()
    assert traffic["recent"]["requests"] == 0 and traffic["hour"]["routes"]["local"] == 5
    assert len(traffic["per_minute"]) == 60
    clock.t += 3600
    for _ in range(100):  # an hour and more of traffic keeps one bucket a minute
        clock.t += 60
        board.add(_decision(clock))
    assert board.traffic()["hour"]["requests"] == 60 and len(board._minutes) == 60


def test_status_board_shows_text_only_when_asked() -> None:
    clock = Clock()
    board = StatusBoard(show_prompts=True, clock=clock)
    board.add(_decision(clock, prompt="p" * 2000))
    d = board.recent[0]
    assert d.prompt == "p" * 500 and d.answer == "secret answer"


CURVE_NOTE = "return document.getElementById('curve-note').textContent"
CURVE_DRAWN = (
    "const s = document.querySelector('#chart-curve svg');"
    "const dot = document.getElementById('curve-threshold');"
    "return s && dot && [s.dataset.series,"
    " [...s.querySelectorAll('path[data-series]')].map(p => p.dataset.series),"
    " Number(dot.dataset.share), Number(dot.dataset.complexity),"
    " document.getElementById('curve-note').textContent]"
)


async def test_page_draws_the_routing_curve_of_the_box_labels(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    browser: Browser,
    http: aiohttp.ClientSession,
    policy_file: Path,
    tmp_path: Path,
) -> None:
    from gateway.services import SERVICES
    from tests.routing.test_train import synthetic_rows

    gw = await gateway_factory(
        **cloud_settings(fake_cloud),
        policy={"file": str(policy_file)},
        learning={
            "enabled": True,
            "store": str(tmp_path / "labels.sqlite3"),
            "shadow_rate": 0,
            "curve_min_labels": 40,
        },
    )
    await browser.run(browser.driver.get, gw.url + "/")
    note = await browser.wait_js(
        f"const t = (() => {{ {CURVE_NOTE} }})(); return t.includes('No curve yet') && t",
        "the curve's note before there are labels",
    )
    assert "0 of the 40 labels" in note
    learning = gw.app[SERVICES].learning
    assert learning is not None
    for prompt, weak_ok, _ in synthetic_rows(60, seed=8):
        label = 0.0 if weak_ok else 1.0
        await learning.store.add("shadow", label=label, tenant=None, route="local", prompt=prompt)
    async with http.get(f"{gw.url}/admin/routing-curve") as r:
        assert r.status == 200
        body = await r.json()
    schema = openapi.document()["paths"]["/admin/routing-curve"]["get"]["responses"]["200"]
    jsonschema.validate(body, schema["content"]["application/json"]["schema"])
    assert body["ready"] is True and body["labels"] == 60 and body["scorer"] == "shipped"
    await browser.run(browser.driver.get, gw.url + "/")
    series, paths, share, complexity, text = await browser.wait_js(
        CURVE_DRAWN, "the routing curve with the policy's threshold"
    )
    assert series == "policy scorer,prompt-length,random" and paths == series.split(",")
    assert complexity == 0.55  # policies/default.yaml: complexity >= 0.55 goes to the cloud
    assert share == body["threshold"]["share"] and 0 <= share <= 1
    assert "60 labels" in text and "complexity >= 0.55" in text
