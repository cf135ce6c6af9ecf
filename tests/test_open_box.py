"""A box without client keys is not a proxy for every web page its user opens (issue 33).

A page of another site can POST `text/plain` to a loopback port without a CORS preflight,
and a page whose DNS name was rebound to 127.0.0.1 sends its own name as Host with a
matching Origin. On an open box `/v1` refuses both, as `/admin` already did, and takes
request bodies only as JSON; the (fake) cloud is never called for a refused request.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.conftest import RunningGateway, cloud_settings
from tests.fakes.cloud import FakeCloud

CHAT = {"model": "gpt-fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


async def post(
    http: aiohttp.ClientSession, gw: RunningGateway, headers: dict[str, str], body: Any = CHAT
) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body)
    async with http.post(f"{gw.base_url}/chat/completions", data=data, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_an_open_box_refuses_other_sites_and_rebound_names(
    gateway_factory: Any, fake_cloud: FakeCloud, http: aiohttp.ClientSession
) -> None:
    gw: RunningGateway = await gateway_factory(
        **cloud_settings(fake_cloud), server={"allowed_hosts": ["edge-box.lan"]}
    )
    json_type = {"Content-Type": "application/json"}
    # A cross-site form or fetch: text/plain needs no preflight; the browser says where from.
    status, body = await post(
        http, gw, {"Content-Type": "text/plain", "Origin": "https://evil.example"}
    )
    assert status == 403 and body["error"]["code"] == "cross_site_request", body
    status, body = await post(http, gw, {**json_type, "Sec-Fetch-Site": "cross-site"})
    assert status == 403 and body["error"]["code"] == "cross_site_request", body
    # DNS rebinding: the page's own name as Host, and a matching Origin.
    rebound = {**json_type, "Host": "evil.example", "Origin": "http://evil.example"}
    status, body = await post(http, gw, rebound)
    assert status == 403 and body["error"]["code"] == "host_not_allowed", body
    async with http.get(f"{gw.base_url}/models", headers={"Host": "evil.example"}) as r:
        assert r.status == 403
    # No Origin at all but not JSON: refused by media type.
    status, body = await post(http, gw, {"Content-Type": "text/plain"})
    assert status == 415 and body["error"]["code"] == "unsupported_media_type", body
    assert fake_cloud.received == []  # nothing refused reached the cloud

    # What an open box is for still works: JSON from loopback, an IP, a listed name.
    for host in (None, f"127.0.0.1:{gw.port}", f"localhost:{gw.port}", "edge-box.lan"):
        headers = {**json_type, **({"Host": host} if host else {})}
        status, body = await post(http, gw, headers)
        assert status == 200, (host, body)
    assert len(fake_cloud.received) == 4


async def test_a_box_with_keys_keeps_its_own_rules(
    gateway_factory: Any, fake_cloud: FakeCloud, http: aiohttp.ClientSession
) -> None:
    """With keys the key is the guard: any Host name serves a valid key (a LAN name, a load
    balancer's)."""
    gw: RunningGateway = await gateway_factory(
        **cloud_settings(fake_cloud), server={"api_keys": ["sk-box"]}
    )
    headers = {
        "Content-Type": "application/json",
        "Authorization": "Bearer sk-box",
        "Host": "gateway.internal",
    }
    status, body = await post(http, gw, headers)
    assert status == 200, body
