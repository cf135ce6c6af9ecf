"""Every benchmark, each with its peers in the same run; writes docs/BENCHMARKS.md.

    make bench            # or: .venv/bin/python -m bench.run_all [--seconds 10] [--runs 7]
    make bench BENCH_SHORT=1   # or: ... -m bench.run_all --short: every step, briefly, to check
                               # the benches run end to end (figures not fit to quote)

Needs wrk and redis-server (Debian packages), the LiteLLM proxy in .venv-litellm
(`make bench` installs it) and llama-cpp-python's server extras.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import shutil
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import classifier_latency, local_concurrency, local_tokens
from bench.common import PY, ROOT, Proc, WrkResult, free_port, have_llama_cpp_server, machine, wrk

LITELLM = ROOT / ".venv-litellm" / "bin" / "litellm"
QUESTION = {
    "model": "up",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}
# The cache's default mode stores only deterministic answers (`temperature: 0`).
CACHED_QUESTION = {**QUESTION, "temperature": 0}
NO_CACHE = {"Cache-Control": "no-cache, no-store"}
HIT_ROW = "edge-gateway cache hit (in-process LRU)"
BARE_ROW = "bare aiohttp proxy (floor)"


def _gateway(port: int, extra_env: dict[str, str], upstream: int) -> Proc:
    env = {
        "GATEWAY_CLOUD__MODELS": json.dumps(
            [
                {
                    "name": "up",
                    "model": "openai/gpt-4o-mini",
                    "api_base": f"http://127.0.0.1:{upstream}/v1",
                }
            ]
        ),
        "GATEWAY_SERVER__LOG_LEVEL": "WARNING",
        **extra_env,
    }
    return Proc([PY, "-m", "gateway", "serve", "--port", str(port)], env=env)


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()


def proxy_overhead(
    seconds: int, results: dict[str, Any], *, litellm: bool = True, rounds: int = 3
) -> None:
    """The pass-through and a cache hit beside their floor: the upstream direct and a bare
    aiohttp proxy (bench/bare_proxy.py) on the same box in the same run, `rounds` times in
    turn (medians), the gateway as shipped: default log level, metrics on."""
    up, gw_port, ll_port, bare_port = free_port(), free_port(), free_port(), free_port()
    cfg = ROOT / "bench" / ".litellm.yaml"
    cfg.write_text(
        "model_list:\n  - model_name: up\n    litellm_params:\n      model: openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{up}/v1\n      api_key: sk-bench\n"
    )
    master = "sk-bench-master-key-0123456789abcdef"
    peer = (
        Proc(
            [
                str(LITELLM),
                "--config",
                str(cfg),
                "--host",
                "127.0.0.1",
                "--port",
                str(ll_port),
                "--num_workers",
                "1",
            ],
            env={
                "LITELLM_MASTER_KEY": master,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
            },
        )
        if litellm
        else contextlib.nullcontext()
    )
    base = f"http://127.0.0.1:{up}"
    with (
        Proc([PY, "-m", "bench.upstream", "--port", str(up)]) as upstream,
        Proc([PY, "-m", "bench.bare_proxy", "--port", str(bare_port), "--upstream", base]) as bare,
        # As shipped: the default log level (a JSON line per request) and metrics on.
        _gateway(gw_port, {"GATEWAY_SERVER__LOG_LEVEL": "INFO"}, up) as gateway,
        peer as proxy,
    ):
        upstream.wait_http(f"{base}/v1/models")
        gateway.wait_http(f"http://127.0.0.1:{gw_port}/readyz")
        results["memory"]["gateway (model loaded, idle)"] = gateway.rss_mb()
        gw_url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        targets: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
            "upstream direct": (f"{base}/v1/chat/completions", {}, QUESTION),
            BARE_ROW: (f"http://127.0.0.1:{bare_port}/v1/chat/completions", {}, QUESTION),
            "edge-gateway": (gw_url, NO_CACHE, QUESTION),
            # The same gateway's in-process LRU (no Redis here): a hit beside a pass-through.
            HIT_ROW: (gw_url, {}, CACHED_QUESTION),
        }
        bare.wait_http(f"http://127.0.0.1:{bare_port}/healthz", timeout=30)
        if proxy is not None:
            proxy.wait_http(f"http://127.0.0.1:{ll_port}/health/liveliness", timeout=180)
            results["memory"]["LiteLLM proxy (idle)"] = proxy.rss_mb()
            targets["LiteLLM proxy"] = (
                f"http://127.0.0.1:{ll_port}/v1/chat/completions",
                {"Authorization": f"Bearer {master}"},
                QUESTION,
            )
        for url, headers, body in targets.values():  # warm-up: a first may take seconds
            _post(url, body, headers)  # (and stores the entry the hit row reads)
            with contextlib.suppress(RuntimeError):
                wrk(url, body, connections=1, seconds=2, headers=headers)
        runs: dict[str, dict[int, list[WrkResult]]] = {n: {1: [], 32: []} for n in targets}
        for r in range(rounds):
            # Each round in turn, the order reversed every other round: drift on a shared box
            # then falls on every target alike, not on whichever always ran last.
            order = list(targets.items()) if r % 2 == 0 else list(targets.items())[::-1]
            for conns in (1, 32):
                for name, (url, headers, body) in order:
                    runs[name][conns].append(
                        wrk(url, body, connections=conns, seconds=seconds, headers=headers)
                    )
        rows = {n: {c: _median(rs) for c, rs in by.items()} for n, by in runs.items()}
        results["memory"]["gateway (after cloud load)"] = gateway.rss_mb()
        if proxy is not None:
            results["memory"]["LiteLLM proxy (after load)"] = proxy.rss_mb()
    cfg.unlink()
    results["proxy"] = {n: {c: vars(r) for c, r in by.items()} for n, by in rows.items()}
    results["proxy_rounds"] = rounds


def _median(rs: list[WrkResult]) -> WrkResult:
    """The round with the median req/s (its own percentiles with it), errors summed."""
    mid = sorted(rs, key=lambda w: w.rps)[len(rs) // 2]
    return WrkResult(
        mid.connections,
        statistics.median(w.p50_ms for w in rs),
        statistics.median(w.p99_ms for w in rs),
        statistics.median(w.rps for w in rs),
        sum(w.requests for w in rs),
        sum(w.errors for w in rs),
    )


def cache_hits(seconds: int, results: dict[str, Any]) -> None:
    redis_port, up, gw_port = free_port(), free_port(), free_port()
    redis = shutil.which("redis-server")
    if redis is None:
        raise SystemExit("redis-server is missing (make bench installs it)")
    with (
        Proc([redis, "--port", str(redis_port), "--save", "", "--appendonly", "no"]),
        Proc([PY, "-m", "bench.upstream", "--port", str(up)]) as upstream,
        _gateway(
            gw_port, {"GATEWAY_CACHE__REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"}, up
        ) as gateway,
    ):
        upstream.wait_http(f"http://127.0.0.1:{up}/v1/models")
        gateway.wait_http(f"http://127.0.0.1:{gw_port}/readyz")
        url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        req = urllib.request.Request(
            url,
            data=json.dumps(CACHED_QUESTION).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req) as r:  # prime the entry
            state = r.headers["x-gateway-cache"]
            assert state == "miss", f"the priming request was a cache {state}, not a miss"
        time.sleep(0.2)
        with urllib.request.urlopen(req) as r:
            assert r.headers["x-gateway-route"] == "cache", "priming did not store"
        rows = {c: wrk(url, CACHED_QUESTION, connections=c, seconds=seconds) for c in (1, 32)}
        with urllib.request.urlopen(f"http://127.0.0.1:{gw_port}/metrics") as r:
            metrics = r.read().decode()
        hits = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith('edge_gateway_cache_requests_total{result="hit"}')
        )
        results["memory"]["gateway (after cache load)"] = gateway.rss_mb()
    results["cache"] = {c: vars(r) for c, r in rows.items()}
    results["cache_hits_counted"] = hits


def local_path(runs: int, max_tokens: int, results: dict[str, Any]) -> None:
    gw_port, ls_port = free_port(), free_port()
    from gateway.local import embedded_model_path
    from gateway.settings import LocalSettings

    cfg = LocalSettings()
    peer_cmd = [
        PY,
        "-m",
        "llama_cpp.server",
        "--model",
        str(embedded_model_path()),
        "--n_ctx",
        str(cfg.n_ctx),
        "--n_threads",
        str(cfg.n_threads),
        "--n_batch",
        str(cfg.n_batch),
        "--host",
        "127.0.0.1",
        "--port",
        str(ls_port),
    ]
    with contextlib.ExitStack() as stack:
        gateway = stack.enter_context(
            Proc(
                [PY, "-m", "gateway", "serve", "--port", str(gw_port)],
                env={"GATEWAY_SERVER__LOG_LEVEL": "WARNING"},
            )
        )
        # llama_cpp.server needs llama-cpp-python's [server] extra (bench-deps installs it).
        server = stack.enter_context(Proc(peer_cmd)) if have_llama_cpp_server() else None
        gateway.wait_http(f"http://127.0.0.1:{gw_port}/readyz")
        gw_url, ls_url = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{ls_port}"
        if server is not None:
            server.wait_http(f"{ls_url}/v1/models")
        local_tokens.direct_runs(1, 16)
        asyncio.run(local_tokens.gateway_runs(gw_url, 1, 16))
        if server is not None:
            asyncio.run(local_tokens.gateway_runs(ls_url, 1, 16))
        direct: list[Any] = []
        through: list[Any] = []
        peer: list[Any] = []
        for _ in range(runs):  # alternate, so drift hits all three alike
            direct += local_tokens.direct_runs(1, max_tokens)
            through += asyncio.run(local_tokens.gateway_runs(gw_url, 1, max_tokens))
            if server is not None:
                peer += asyncio.run(local_tokens.gateway_runs(ls_url, 1, max_tokens))
        results["memory"]["gateway (after local load)"] = gateway.rss_mb()
        if server is not None:
            results["memory"]["llama_cpp.server (after local load)"] = server.rss_mb()

    def summary(rs: list[Any]) -> dict[str, float]:
        return {
            "tokens_per_s": statistics.median(r[0] for r in rs),
            "ttft_ms": statistics.median(r[1] for r in rs) * 1000,
            "tokens": statistics.median(r[2] for r in rs),
        }

    results["local"] = {
        "llama-cpp-python direct": summary(direct),
        "edge-gateway": summary(through),
        **({"llama_cpp.server": summary(peer)} if peer else {}),
        "runs": runs,
        "max_tokens": max_tokens,
    }


def idle_memory(results: dict[str, Any]) -> None:
    port = free_port()
    with Proc(
        [PY, "-m", "gateway", "serve", "--port", str(port)],
        env={"GATEWAY_SERVER__LOG_LEVEL": "WARNING"},
    ) as gateway:
        gateway.wait_http(f"http://127.0.0.1:{port}/healthz")
        results["memory"]["gateway (just started)"] = gateway.rss_mb()
        gateway.wait_http(f"http://127.0.0.1:{port}/readyz")
        time.sleep(1)
        results["memory"]["gateway (model loaded, no cloud)"] = gateway.rss_mb()


def _versions() -> str:
    names = ["aiohttp", "llama_cpp_python", "litellm", "redis", "tiktoken", "prometheus_client"]
    out = []
    for n in names:
        try:
            out.append(f"{n} {importlib.metadata.version(n)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(out)


def render(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Measured {results['date']} on {results['machine']}. Versions: {results['versions']}"
        + (
            f"; LiteLLM proxy {results['litellm_proxy_version']}"
            if results.get("litellm_proxy_version")
            else ""
        )
        + ".",
        "Every table was measured in one run with its peers side by side, on a shared, noisy "
        "2-core machine: read the ratios, not the absolute numbers.",
        "",
        (
            "Short mode (`make bench BENCH_SHORT=1`, `--short`): a check that every step runs,"
            " not figures to quote. Raw numbers: `bench/results/short.json`."
            if args.short
            else f"Reproduce: `make bench` (= `.venv/bin/python -m bench.run_all --seconds "
            f"{args.seconds} --runs {args.runs}`). Raw numbers: `bench/results/latest.json`."
        ),
        "",
        "## 1. Proxy overhead on the cloud path",
        "",
        "A fake OpenAI upstream (`bench/upstream.py`) called directly, through a bare aiohttp "
        "proxy (`bench/bare_proxy.py`: read, forward on one pooled session, relay; the floor "
        "for this design), through edge-gateway as shipped (default log level, metrics on; "
        "pass-through fast path, `Cache-Control: no-cache, no-store`; and a cache hit) and "
        f"through the LiteLLM proxy (one worker), loaded by `wrk -t1 -cN -d{args.seconds}s`; "
        f"{results.get('proxy_rounds', 1)} rounds in turn, medians. `x floor`: req/s over the "
        "bare proxy's; at 1 connection, the overhead over the upstream (p50) over the bare "
        "proxy's.",
        "",
        "| path | conns | p50 ms | p99 ms | req/s | x floor | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    proxy = results["proxy"]
    floor = proxy.get(BARE_ROW)
    up1 = proxy["upstream direct"][1]
    for conns in (1, 32):
        for name, by in proxy.items():
            r = by[conns]
            ratio = ""
            if floor is not None and name not in ("upstream direct", BARE_ROW):
                if conns == 1:
                    over = floor[1]["p50_ms"] - up1["p50_ms"]
                    ratio = f"{(r['p50_ms'] - up1['p50_ms']) / over:.2f}" if over > 0 else ""
                else:
                    ratio = f"{r['rps'] / floor[32]['rps']:.2f}"
            lines.append(
                f"| {name} | {conns} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                f"{r['rps']:.0f} | {ratio} | {r['errors']} |"
            )
    gw1 = proxy["edge-gateway"][1]
    ll = proxy.get("LiteLLM proxy")
    lines += [
        "",
        f"- Overhead added at p50, 1 connection: edge-gateway **{gw1['p50_ms'] - up1['p50_ms']:.2f}"
        " ms**"
        + (f", bare aiohttp proxy {floor[1]['p50_ms'] - up1['p50_ms']:.2f} ms" if floor else "")
        + (f", LiteLLM proxy {ll[1]['p50_ms'] - up1['p50_ms']:.2f} ms." if ll else "."),
    ]
    if floor is not None:
        lines.append(
            "- Throughput at 32 connections over the bare aiohttp proxy: pass-through "
            f"**{proxy['edge-gateway'][32]['rps'] / floor[32]['rps']:.2f}x**"
            + (
                f", cache hit **{proxy[HIT_ROW][32]['rps'] / floor[32]['rps']:.2f}x**."
                if HIT_ROW in proxy
                else "."
            )
        )
    if HIT_ROW in proxy:
        hit = proxy[HIT_ROW][32]["rps"] / proxy["edge-gateway"][32]["rps"]
        lines.append(
            "- A cache hit (in-process LRU, `temperature: 0`) at 32 connections / the "
            f"pass-through: **{hit:.2f}x**."
        )
    if ll:
        lines.append(
            "- Throughput at 32 connections: edge-gateway / LiteLLM proxy = "
            f"**{proxy['edge-gateway'][32]['rps'] / ll[32]['rps']:.1f}x**."
        )
    lines += [
        "",
        "## 2. Cache hits with a real Redis",
        "",
        "The same request repeated (the first stored it); `wrk -t1`, no Cache-Control header.",
        "",
        "| conns | p50 ms | p99 ms | req/s | errors |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for conns, r in results["cache"].items():
        lines.append(
            f"| {conns} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:.0f} | {r['errors']} |"
        )
    total = sum(r["requests"] for r in results["cache"].values())
    lines += [
        "",
        f"Hits counted by the gateway's own metric: {results['cache_hits_counted']:.0f} of "
        f"{total} completed requests (the difference: the priming hit and requests still in "
        "flight when wrk stopped).",
        "",
        "## 3. Local path with the embedded model",
        "",
        f"SmolLM2-135M-Instruct Q4_1, same prompt, greedy, max_tokens "
        f"{results['local']['max_tokens']}, streamed; median of {results['local']['runs']} "
        "runs, the three paths alternating. Tokens/s counts content chunks after the first.",
        "",
        "| path | tokens/s | TTFT ms | ratio to direct |",
        "| --- | ---: | ---: | ---: |",
    ]
    direct_tps = results["local"]["llama-cpp-python direct"]["tokens_per_s"]
    for name in ("llama-cpp-python direct", "edge-gateway", "llama_cpp.server"):
        if name not in results["local"]:
            continue  # a peer not installed (the short run without bench-deps)
        r = results["local"][name]
        lines.append(
            f"| {name} | {r['tokens_per_s']:.1f} | {r['ttft_ms']:.1f} | "
            f"{r['tokens_per_s'] / direct_tps:.3f} |"
        )
    c = results["classifier"]
    lines += [
        "",
        "## 4. Classifier latency",
        "",
        f"Over {c['n']} prompts (GSM8K, MT-Bench and synthetic chat, 10 to 20,000 chars), "
        "one call each, `time.perf_counter` around the call.",
        "",
        "| what | median ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in c["rows"].items():
        lines.append(f"| {name} | {r['median_ms']:.4f} | {r['p99_ms']:.4f} | {r['max_ms']:.4f} |")
    lines += [
        "",
        "## 5. Memory (RSS)",
        "",
        "| process and moment | RSS MB |",
        "| --- | ---: |",
    ]
    for name, mb in results["memory"].items():
        lines.append(f"| {name} | {mb:.0f} |")
    lines += ["", "Routing quality (APGR) is in [ROUTING.md](ROUTING.md).", ""]
    if "concurrency" in results:
        lines += [local_concurrency.render(results["concurrency"])]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument(
        "--rounds", type=int, default=3, help="wrk rounds of the proxy step, in turn (medians)"
    )
    ap.add_argument(
        "--only", choices=["proxy", "cache", "local", "classifier", "memory", "concurrency"]
    )
    ap.add_argument(
        "--short",
        action="store_true",
        help="every step briefly (2 s wrk runs, one round, 16 tokens, the LiteLLM proxy only if"
        " installed) to show the benches run end to end; writes bench/results/short.md, never"
        " docs/BENCHMARKS.md",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.short:
        args.seconds, args.runs, args.max_tokens, args.rounds = 2, 1, 16, 1
    out_md: Path = args.out or (
        ROOT / "bench" / "results" / "short.md" if args.short else ROOT / "docs" / "BENCHMARKS.md"
    )
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "versions": _versions(),
        "memory": {},
        "short": args.short,
    }
    if LITELLM.exists():
        ver = Path(LITELLM).parent / "python"
        import subprocess

        results["litellm_proxy_version"] = subprocess.run(
            [str(ver), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    elif not args.short and args.only is None:  # one step alone runs without the peer
        raise SystemExit(f"{LITELLM} is missing: `make bench-deps` installs the LiteLLM proxy")
    steps = {
        "memory": lambda: idle_memory(results),
        "proxy": lambda: proxy_overhead(
            args.seconds, results, litellm=LITELLM.exists(), rounds=args.rounds
        ),
        "cache": lambda: cache_hits(args.seconds, results),
        "local": lambda: local_path(args.runs, args.max_tokens, results),
        "classifier": lambda: results.__setitem__("classifier", classifier_latency.measure()),
        "concurrency": lambda: results.__setitem__(
            "concurrency",
            local_concurrency.measure(rounds=1, max_tokens=args.max_tokens, turn_runs=1, short=True)
            if args.short
            else local_concurrency.measure(rounds=3, max_tokens=args.max_tokens),
        ),
    }
    for name, step in steps.items():
        if args.only in (None, name):
            print(f">> {name}", file=sys.stderr, flush=True)
            step()
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    # One step alone writes its own file: latest.json stays the last whole run.
    name = "short" if args.short else (args.only or "latest")
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))
    if args.only is None:
        # Sections 7 onward come from their own benches (overhead_ab, model_memory, embeddings),
        # each with its command: kept as they are, not dropped by this rewrite.
        kept = ""
        if out_md.exists():
            old = out_md.read_text()
            at = old.find("\n## 7.")
            kept = old[at:] if at >= 0 else ""
        out_md.write_text(render(results, args).rstrip() + "\n" + kept)
        print(f"wrote {out_md}", file=sys.stderr)
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
