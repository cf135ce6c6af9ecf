"""What the shared state costs per request (issue 24): one gateway with its state and limits in
process, the same with both on a state Redis, and two replicas on that Redis, in one run.

    .venv/bin/python -m bench.state_overhead [--seconds 5] [--runs 3]
    .venv/bin/python -m bench.state_overhead --short   # every step, briefly (figures not fit
                                                       # to quote)

Starts its own redis-server on loopback (noeviction, AOF every second: the shipped state role),
the fake upstream (bench/upstream.py) and four gateways, all stopped on exit. Two requests, each
with an API key under per-key limits (requests and tokens per minute, far above what the run
sends, so every request is admitted and settled):

- chat: a cloud pass-through chat completion with `max_tokens` (reserved at admission,
  settled after);
- responses: POST /v1/responses with `store: true`, then a GET of the id it returned (wrk's
  Lua chains them; the req/s and latencies count POSTs and GETs together).

wrk runs two threads in every case; for the two replicas each thread holds its connections on
one replica (a round-robin balancer's spread). Both of a thread's requests then reach the same
replica; that the other replica reads what this one stored is tests/test_replicas.py's job, the
cost of the round trip to Redis is the same either way. Configurations alternate within each
round, and the figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import PY, ROOT, Proc, WrkResult, free_port, machine, wrk

KEY = "sk-bench-state-0123456789"
# Far above what a run sends: the limiter does all its work, and nothing is refused.
LIMITS = {
    "GATEWAY_LIMITS__REQUESTS_PER_MINUTE": "100000000",
    "GATEWAY_LIMITS__TOKENS_PER_MINUTE": "1000000000",
}
CHAT = {
    "model": "up",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "max_tokens": 64,
}
RESPONSE = {
    "model": "up",
    "input": "What is the capital of France?",
    "store": True,
    "max_output_tokens": 64,
}
CONFIGS = ("1 replica, in process", "1 replica, state Redis", "2 replicas, state Redis")


def _gateway(upstream: int, env: dict[str, str]) -> tuple[Proc, int]:
    port = free_port()
    full = {
        "GATEWAY_CLOUD__MODELS": json.dumps(
            [
                {
                    "name": "up",
                    "model": "openai/gpt-4o-mini",
                    "api_base": f"http://127.0.0.1:{upstream}/v1",
                }
            ]
        ),
        "GATEWAY_SERVER__API_KEYS": json.dumps([KEY]),
        "GATEWAY_SERVER__LOG_LEVEL": "WARNING",
        "GATEWAY_LOCAL__PARALLEL": "1",  # four gateways share a small box
        **LIMITS,
        **env,
    }
    return Proc([PY, "-m", "gateway", "serve", "--port", str(port)], env=full), port


def _script(ports: list[int], kind: str) -> str:
    """wrk Lua: each thread on one of `ports` in turn; `kind` chat or responses."""
    lines = [
        f"local ports = {{{', '.join(str(p) for p in ports)}}}",
        "local n = 0",
        "function setup(thread)",
        "  n = n + 1",
        '  thread.addr = wrk.lookup("127.0.0.1", tostring(ports[(n - 1) % #ports + 1]))[1]',
        "end",
        'wrk.headers["Content-Type"] = "application/json"',
        f'wrk.headers["Authorization"] = "Bearer {KEY}"',
        'wrk.headers["Cache-Control"] = "no-cache, no-store"',
    ]
    if kind == "chat":
        return "\n".join(
            [
                *lines,
                'wrk.method = "POST"',
                'wrk.path = "/v1/chat/completions"',
                f"wrk.body = {json.dumps(json.dumps(CHAT))}",
            ]
        )
    # POST a stored response, GET it back on the thread's next request. wrk.body stays unset:
    # wrk.format would send it with the GETs too.
    return "\n".join(
        [
            *lines,
            f"local post_body = {json.dumps(json.dumps(RESPONSE))}",
            "local pending, seen = {}, {}",
            "request = function()",
            "  local id = table.remove(pending)",
            '  if id then return wrk.format("GET", "/v1/responses/" .. id) end',
            '  return wrk.format("POST", "/v1/responses", nil, post_body)',
            "end",
            "response = function(status, headers, body)",
            '  local id = body:match(\'"id"%s*:%s*"(resp_%x+)"\')',
            "  if id and not seen[id] then seen[id] = true; table.insert(pending, id) end",
            "end",
        ]
    )


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return dict(json.loads(r.read()))


def _check(port: int) -> None:
    """One of each request by hand: a wrong setup fails here, not as wrk's error count."""
    base = f"http://127.0.0.1:{port}/v1"
    _post(base + "/chat/completions", CHAT)
    rid = _post(base + "/responses", RESPONSE)["id"]
    req = urllib.request.Request(
        base + f"/responses/{rid}", headers={"Authorization": f"Bearer {KEY}"}
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        assert json.loads(r.read())["id"] == rid


@contextlib.contextmanager
def _processes(tmp: Path) -> Iterator[dict[str, list[int]]]:
    redis = shutil.which("redis-server")
    if redis is None:
        raise SystemExit("redis-server is missing (make system-deps installs it)")
    rport, up = free_port(), free_port()
    with contextlib.ExitStack() as stack:
        r = stack.enter_context(
            Proc(
                [
                    redis,
                    "--port", str(rport),
                    "--bind", "127.0.0.1",
                    "--dir", str(tmp),
                    "--save", "",
                    "--appendonly", "yes",
                    "--appendfsync", "everysec",
                    "--maxmemory-policy", "noeviction",
                ]
            )
        )  # fmt: skip
        upstream = stack.enter_context(Proc([PY, "-m", "bench.upstream", "--port", str(up)]))
        url = f"redis://127.0.0.1:{rport}/0"
        shared = {"GATEWAY_LIMITS__REDIS_URL": url, "GATEWAY_STATE__REDIS_URL": url}
        plan: dict[str, list[dict[str, str]]] = {
            CONFIGS[0]: [{}],
            CONFIGS[1]: [{**shared, "GATEWAY_STATE__KEY_PREFIX": "bench1"}],
            CONFIGS[2]: [
                {**shared, "GATEWAY_STATE__KEY_PREFIX": "bench2", "GATEWAY_STATE__REPLICAS": "2"}
            ]
            * 2,
        }
        ports: dict[str, list[int]] = {}
        gateways: list[tuple[Proc, int]] = []
        for name, envs in plan.items():
            started = []
            for e in envs:  # each one stopped on exit from the moment it exists
                proc, port = _gateway(up, e)
                started.append((stack.enter_context(proc), port))
            gateways += started
            ports[name] = [p for _, p in started]
        _wait_redis(r, rport)
        upstream.wait_http(f"http://127.0.0.1:{up}/v1/models")
        for proc, port in gateways:
            proc.wait_http(f"http://127.0.0.1:{port}/readyz", timeout=300)
            _check(port)
        yield ports


def _wait_redis(proc: Proc, port: int) -> None:
    for _ in range(200):
        if proc.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited; log in {proc.log.name}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.05)
    raise TimeoutError("redis-server not up")


def measure(seconds: int, runs: int, conns: tuple[int, ...]) -> dict[str, Any]:
    samples: dict[str, dict[str, dict[int, list[WrkResult]]]] = {
        k: {c: {n: [] for n in conns} for c in CONFIGS} for k in ("chat", "responses")
    }
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp, _processes(Path(tmp)) as ports:
        for kind in samples:  # warm-up: first requests of a kind may take a while
            for name in CONFIGS:
                url = f"http://127.0.0.1:{ports[name][0]}/"
                with contextlib.suppress(RuntimeError):
                    wrk(
                        url,
                        {},
                        connections=2,
                        threads=2,
                        seconds=1,
                        script=_script(ports[name], kind),
                    )
        for r in range(runs):
            order = CONFIGS[r % 3 :] + CONFIGS[: r % 3]  # who goes first rotates
            for kind in samples:
                for n in conns:
                    for name in order:
                        url = f"http://127.0.0.1:{ports[name][0]}/"
                        samples[kind][name][n].append(
                            wrk(
                                url,
                                {},
                                connections=n,
                                threads=2,
                                seconds=seconds,
                                script=_script(ports[name], kind),
                            )
                        )
    return {
        kind: {
            name: {
                n: {
                    "p50_ms": statistics.median(s.p50_ms for s in got),
                    "p99_ms": statistics.median(s.p99_ms for s in got),
                    "rps": statistics.median(s.rps for s in got),
                    "errors": sum(s.errors for s in got),
                    "requests": sum(s.requests for s in got),
                }
                for n, got in by.items()
            }
            for name, by in by_config.items()
        }
        for kind, by_config in samples.items()
    }


def render(res: dict[str, Any], conns: tuple[int, ...]) -> str:
    out = []
    for kind, by_config in res.items():
        out += [
            f"**{kind}**",
            "",
            "| configuration | conns | p50 ms | p99 ms | req/s | errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for n in conns:
            for name in CONFIGS:
                m = by_config[name][n]
                out.append(
                    f"| {name} | {n} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['rps']:.0f}"
                    f" | {m['errors']} |"
                )
        out.append("")
        base = by_config[CONFIGS[0]]
        for name in CONFIGS[1:]:
            for n in conns:
                m, b = by_config[name][n], base[n]
                out.append(
                    f"- {name} vs in process, {n} conns: p50 {m['p50_ms'] - b['p50_ms']:+.2f} ms,"
                    f" p99 {m['p99_ms'] - b['p99_ms']:+.2f} ms, req/s x{m['rps'] / b['rps']:.2f}"
                )
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5, help="wrk duration of each measurement")
    ap.add_argument("--runs", type=int, default=3, help="rounds; figures are medians over them")
    ap.add_argument("--short", action="store_true", help="every step, 1 s, one round")
    args = ap.parse_args()
    seconds, runs, conns = (1, 1, (2,)) if args.short else (args.seconds, args.runs, (2, 32))
    # A SIGTERM unwinds like Ctrl-C, so every child process is stopped.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    load = os.getloadavg()
    t0 = time.time()
    res = measure(seconds, runs, conns)
    load_after = os.getloadavg()
    header = (
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(t0))} on {machine()};"
        f" wrk -t2, {seconds} s per measurement, median of {runs} round(s); load average"
        f" {load[0]:.2f} before, {load_after[0]:.2f} after."
    )
    print(header + "\n\n" + render(res, conns))
    errors = sum(m["errors"] for by in res.values() for c in by.values() for m in c.values())
    if errors:  # a refused or failed request measures something else: say so, loudly
        raise SystemExit(f"{errors} requests failed (non-2xx or socket errors)")
    out = (
        ROOT
        / "bench"
        / "results"
        / ("short.state_overhead.json" if args.short else "state_overhead.json")
    )
    out.write_text(json.dumps({"header": header, "results": res}, indent=2) + "\n")


if __name__ == "__main__":
    main()
