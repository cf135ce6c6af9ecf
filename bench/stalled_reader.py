"""Turn 2 after a stalled reader: TTFT of a conversation's next turn sent while turn 1's answer
is still streaming, unread and not closed, against turn 1's own (cold) TTFT.

Turn 1: the conversation of `bench.local_concurrency.conversation()` (unique per run), streamed
with max_tokens 400; the client reads its first token and stops reading without closing. At
once it sends turn 2 (the history, a short assistant message and a new question) and times its
first token; `cached_tokens` from a non-streamed probe of the same turn says how much of the
history was reused. Gateway at local.parallel 4, n_ctx 4096 per slot.

    .venv/bin/python -m bench.stalled_reader --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from typing import Any

import aiohttp

from bench.common import Proc, free_port, machine
from bench.local_concurrency import _CONTENT, _gateway, conversation


async def _first_token(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    t0 = time.perf_counter()
    async with s.post(url, json={**body, "stream": True}) as r:
        r.raise_for_status()
        async for line in r.content:
            if _CONTENT.search(line):
                return time.perf_counter() - t0
    return time.perf_counter() - t0


async def one(base: str) -> dict[str, float]:
    url = f"{base}/v1/chat/completions"
    history = conversation()
    history[0]["content"] = f"Session {uuid.uuid4().hex[:8]}. " + history[0]["content"]
    body = {"model": "local", "temperature": 0, "messages": history}
    turn2 = [
        *history,
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "And the croissant dough?"},
    ]
    timeout = aiohttp.ClientTimeout(total=600)
    async with (
        aiohttp.ClientSession(timeout=timeout) as reader,
        aiohttp.ClientSession(timeout=timeout) as sender,
    ):
        t0 = time.perf_counter()
        stalled = await reader.post(url, json={**body, "stream": True, "max_tokens": 400})
        async for line in stalled.content:  # one token, then no more reading
            if _CONTENT.search(line):
                break
        ttft1 = time.perf_counter() - t0
        ttft2 = await _first_token(sender, url, {**body, "messages": turn2, "max_tokens": 8})
        async with sender.post(url, json={**body, "messages": turn2, "max_tokens": 1}) as r:
            usage = json.loads(await r.read())["usage"]
        stalled.close()
    return {
        "turn1_ttft_ms": ttft1 * 1000,
        "turn2_ttft_ms": ttft2 * 1000,
        "prompt_tokens": usage["prompt_tokens"],
        "cached_tokens": usage["prompt_tokens_details"]["cached_tokens"],
    }


def measure(runs: int) -> dict[str, Any]:
    port = free_port()
    env = {"GATEWAY_LOCAL__PARALLEL": "4", "GATEWAY_LOCAL__N_CTX": "4096"}
    rows = []
    g: Proc
    with _gateway(port, env) as g:
        base = f"http://127.0.0.1:{port}"
        g.wait_http(base + "/readyz")
        asyncio.run(one(base))  # warm-up
        for _ in range(runs):
            rows.append(asyncio.run(one(base)))
            print(json.dumps(rows[-1]), flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    med["turn2_over_turn1"] = med["turn2_ttft_ms"] / med["turn1_ttft_ms"]
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "median": med}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    print(json.dumps(measure(ap.parse_args().runs), indent=2))


if __name__ == "__main__":
    main()
