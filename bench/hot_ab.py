"""Hot-path A/B: checkouts (or event loops) alternately against one fake upstream, with wrk.

Per variant and round: the upstream direct and the pass-through at 1 connection (p50, so the
overhead is their difference), the pass-through at 32 (req/s), and `temperature: 0` cache
hits from the in-process LRU at 1 and 32; and each round, the floor: a bare aiohttp proxy
(bench/bare_proxy.py) at 1 and 32, so every figure is also a ratio to it. The gateways run as
shipped (default log level, metrics on). Medians over the rounds, and the load average:

    .venv/bin/python -m bench.hot_ab --variant before=/tmp/base --variant after=. \\
        --variant after-uvloop=.:uvloop --rounds 2 --seconds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import urllib.request
from pathlib import Path

from bench.common import PY, Proc, free_port, wrk

QUESTION = {
    "model": "up",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "temperature": 0,
}
NO_CACHE = {"Cache-Control": "no-cache, no-store"}
# What each figure measures: connections, headers (no-cache for a pass-through).
FIGURES = {
    "pass1": (1, NO_CACHE),
    "pass32": (32, NO_CACHE),
    "hit1": (1, {}),
    "hit32": (32, {}),
}


def _command(port: int, loop: str) -> list[str]:
    if loop != "uvloop":
        return [PY, "-m", "gateway", "serve", "--port", str(port)]
    boot = (
        "import asyncio, runpy, sys, uvloop;"
        " asyncio.set_event_loop_policy(uvloop.EventLoopPolicy());"
        f" sys.argv = ['gateway', 'serve', '--port', '{port}'];"
        " runpy.run_module('gateway', run_name='__main__', alter_sys=True)"
    )
    return [PY, "-c", boot]


def _post(url: str, headers: dict[str, str]) -> None:
    req = urllib.request.Request(
        url,
        data=json.dumps(QUESTION).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", action="append", required=True, help="name=checkout[:uvloop]")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument(
        "--log-level", default="INFO", help="the gateway's (INFO: as shipped, a line a request)"
    )
    ap.add_argument("--figures", default=",".join(FIGURES), help="which of " + ", ".join(FIGURES))
    args = ap.parse_args()
    variants = [v.split("=", 1) for v in args.variant]
    figures = {k: FIGURES[k] for k in args.figures.split(",")}
    res: dict[str, dict[str, list[float]]] = {
        n: {k: [] for k in ("up1", *figures)} for n, _ in variants
    }
    loads: list[float] = []
    up = free_port()
    bare_port = free_port()
    base = f"http://127.0.0.1:{up}"
    floor: dict[str, list[float]] = {"bare1": [], "bare32": []}
    with (
        Proc([PY, "-m", "bench.upstream", "--port", str(up)]) as upstream,
        Proc([PY, "-m", "bench.bare_proxy", "--port", str(bare_port), "--upstream", base]) as bare,
    ):
        upstream.wait_http(f"http://127.0.0.1:{up}/v1/models")
        bare.wait_http(f"http://127.0.0.1:{bare_port}/healthz")
        direct = f"http://127.0.0.1:{up}/v1/chat/completions"
        bare_url = f"http://127.0.0.1:{bare_port}/v1/chat/completions"
        for r in range(args.rounds):
            # ABBA: the variant measured first in a round has the quieter box (a run that
            # always put the same one first measured it 10% faster at cache hits than an
            # identical copy of the other); alternating the order cancels that out.
            for name, spec in variants if r % 2 == 0 else variants[::-1]:
                tree, _, loop = spec.partition(":")
                port = free_port()
                env = {
                    "GATEWAY_CLOUD__MODELS": json.dumps(
                        [{"name": "up", "model": "openai/gpt-4o-mini", "api_base": direct[:-17]}]
                    ),
                    "GATEWAY_SERVER__LOG_LEVEL": args.log_level,
                }
                with Proc(_command(port, loop), env=env, cwd=Path(tree).resolve()) as gateway:
                    gateway.wait_http(f"http://127.0.0.1:{port}/readyz")
                    url = f"http://127.0.0.1:{port}/v1/chat/completions"
                    _post(url, NO_CACHE)
                    _post(url, {})  # stores the entry the hits read
                    time.sleep(0.3)
                    wrk(url, QUESTION, connections=1, seconds=2, headers=NO_CACHE)  # warm-up
                    got = res[name]
                    got["up1"].append(
                        wrk(direct, QUESTION, connections=1, seconds=args.seconds).p50_ms
                    )
                    for key, (conns, headers) in figures.items():
                        w = wrk(
                            url, QUESTION, connections=conns, seconds=args.seconds, headers=headers
                        )
                        if w.errors:
                            raise SystemExit(f"{name} {key}: {w.errors} errors")
                        got[key].append(w.p50_ms if conns == 1 else w.rps)
                    # The floor, measured between this variant's runs: a bare aiohttp proxy.
                    for key, conns in (("bare1", 1), ("bare32", 32)):
                        w = wrk(bare_url, QUESTION, connections=conns, seconds=args.seconds)
                        floor[key].append(w.p50_ms if conns == 1 else w.rps)
                loads.append(os.getloadavg()[0])
                print(r, name, {k: v[-1] for k, v in res[name].items()}, f"load {loads[-1]:.1f}")
    print("medians (1 connection: p50 ms; 32 connections: req/s)")
    up1_all = [x for d in res.values() for x in d["up1"]]
    bare_over = statistics.median(floor["bare1"]) - statistics.median(up1_all)
    bare32 = statistics.median(floor["bare32"])
    print("bare aiohttp proxy", {"overhead_ms": round(bare_over, 3), "pass32": round(bare32)})
    for name, d in res.items():
        m = {k: round(statistics.median(v), 3) for k, v in d.items()}
        if d.get("pass1"):
            m["overhead_ms"] = round(
                statistics.median(p - q for p, q in zip(d["pass1"], d["up1"], strict=True)), 3
            )
        if d.get("pass32"):
            m["pass32/bare32"] = round(m["pass32"] / bare32, 2)
        if d.get("hit32"):
            m["hit32/bare32"] = round(m["hit32"] / bare32, 2)
        if d.get("pass1") and bare_over > 0:
            m["overhead/bare"] = round(m["overhead_ms"] / bare_over, 2)
        if d.get("hit32") and d.get("pass32"):
            m["hit32/pass32"] = round(
                statistics.median(h / p for h, p in zip(d["hit32"], d["pass32"], strict=True)), 2
            )
        print(name, m)
    print("load averages", [round(x, 1) for x in loads])


if __name__ == "__main__":
    main()
