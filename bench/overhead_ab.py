"""Pass-through overhead A/B: median latency through two checkouts of the gateway, same upstream.

No wrk or LiteLLM proxy needed: one sequential aiohttp client, 1,500 requests per target after
50 warm-ups, Cache-Control no-cache/no-store so every request reaches the upstream. Compare the
current tree with an older commit (`git worktree add /tmp/base REV`):

    .venv/bin/python -m bench.overhead_ab --base /tmp/base
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
NO_CACHE = {"Cache-Control": "no-cache, no-store"}


def free() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def lat(url: str, body: dict[str, Any], n: int) -> float:
    out: list[float] = []
    async with aiohttp.ClientSession() as s:
        for _ in range(50):
            async with s.post(url, json=body, headers=NO_CACHE) as r:
                await r.read()
        for _ in range(n):
            t0 = time.perf_counter()
            async with s.post(url, json=body, headers=NO_CACHE) as r:
                await r.read()
                assert r.status == 200, r.status
            out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1000


def wait(url: str) -> None:
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("not ready " + url)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--base", type=Path, help="an older checkout to compare with")
    ap.add_argument("--requests", type=int, default=1500)
    args = ap.parse_args()
    up = free()
    upp = subprocess.Popen([PY, "-m", "bench.upstream", "--port", str(up)], cwd=ROOT)
    try:
        wait(f"http://127.0.0.1:{up}/v1/models")
        body = {
            "model": "gpt",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "temperature": 0,
        }
        url = f"http://127.0.0.1:{up}/v1/chat/completions"
        res = {"direct": asyncio.run(lat(url, body, args.requests))}
        targets = [("this tree", ROOT)] + ([("base", args.base)] if args.base else [])
        for name, root in targets:
            res[name] = _through(root, up, body, args.requests)
    finally:
        upp.terminate()
    for k, v in res.items():
        extra = "" if k == "direct" else f"  overhead {v - res['direct']:.3f} ms"
        print(f"{k:12s} p50 {v:.3f} ms{extra}")


def _through(root: Path, up: int, body: dict[str, Any], n: int) -> float:
    port = free()
    model = {"name": "gpt", "model": "openai/gpt-4o-mini", "api_base": f"http://127.0.0.1:{up}/v1"}
    env = {
        **os.environ,
        "GATEWAY_CLOUD__MODELS": json.dumps([model]),
        "GATEWAY_SERVER__LOG_LEVEL": "WARNING",
    }
    g = subprocess.Popen(
        [PY, "-m", "gateway", "serve", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait(f"http://127.0.0.1:{port}/readyz")
        return asyncio.run(lat(f"http://127.0.0.1:{port}/v1/chat/completions", body, n))
    finally:
        g.terminate()
        g.wait(30)


if __name__ == "__main__":
    main()
