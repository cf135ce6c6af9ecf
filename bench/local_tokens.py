"""Tokens/s and time to first token: llama-cpp-python called directly vs through the gateway.

Same GGUF, prompt, n_ctx, threads and sampling (greedy, so both generate the same tokens).
Runs alternate between the two, so machine noise hits both alike; medians and the ratio print.

    .venv/bin/python -m bench.local_tokens --runs 7 --max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import aiohttp

from bench.common import plain_cpu_llama
from gateway.local import embedded_model_path
from gateway.settings import LocalSettings

# A non-empty content delta, with or without a space after the colon (servers differ).
PROMPT = "Write a long, detailed story about a lighthouse keeper and a storm."
MESSAGES = [{"role": "user", "content": PROMPT}]


@functools.cache
def _direct_model() -> tuple[Any, list[int]]:
    """One Llama for all direct runs, and the prompt tokens exactly as the gateway builds them."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    cfg = LocalSettings()
    llama = plain_cpu_llama(
        model_path=str(embedded_model_path()),
        n_ctx=cfg.n_ctx,
        n_threads=cfg.n_threads,
        n_batch=cfg.n_batch,
        verbose=False,
    )
    eos = llama.detokenize([llama.token_eos()], special=True).decode()
    bos = llama.detokenize([llama.token_bos()], special=True).decode()
    fmt = Jinja2ChatFormatter(
        template=llama.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=bos
    )(messages=MESSAGES)
    tokens = llama.tokenize(fmt.prompt.encode(), add_bos=not fmt.added_special, special=True)
    return llama, tokens


def direct_runs(runs: int, max_tokens: int) -> list[tuple[float, float, int]]:
    """(tokens/s after first token, ttft seconds, tokens) per run, llama-cpp-python in-process,
    with the same prompt tokens and sampling the gateway's worker uses."""
    llama, tokens = _direct_model()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        first = None
        n = 0
        for chunk in llama.create_completion(
            prompt=tokens, max_tokens=max_tokens, temperature=0.0, top_p=1.0, stream=True
        ):
            if chunk["choices"][0]["text"]:
                n += 1
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        assert first is not None
        out.append(((n - 1) / (end - first), first - t0, n))
    return out


async def gateway_runs(url: str, runs: int, max_tokens: int) -> list[tuple[float, float, int]]:
    from bench.local_concurrency import one_stream  # the same streaming client, one request

    out = []
    async with aiohttp.ClientSession() as s:
        for _ in range(runs):
            first, end, n = await one_stream(s, url, MESSAGES, max_tokens)
            assert n > 0
            out.append(((n - 1) / (end - first), first, n))
    return out


def _wait_ready(url: str) -> None:
    import urllib.request

    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gateway did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--port", type=int, default=0, help="0: any free port")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    from bench.common import free_port

    args.port = args.port or free_port()
    url = f"http://127.0.0.1:{args.port}"
    gw = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(args.port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(url)
        direct: list[Any] = []
        through: list[Any] = []
        # Warm both once, then alternate single runs so drift affects both sides equally.
        direct_runs(1, 16)
        asyncio.run(gateway_runs(url, 1, 16))
        for _ in range(args.runs):
            direct += direct_runs(1, args.max_tokens)
            through += asyncio.run(gateway_runs(url, 1, args.max_tokens))
    finally:
        gw.terminate()
        gw.wait()

    d_tps = statistics.median(r[0] for r in direct)
    g_tps = statistics.median(r[0] for r in through)
    d_ttft = statistics.median(r[1] for r in direct) * 1000
    g_ttft = statistics.median(r[1] for r in through) * 1000
    result = {
        "runs": args.runs,
        "max_tokens": args.max_tokens,
        "direct_tokens_per_s": round(d_tps, 1),
        "gateway_tokens_per_s": round(g_tps, 1),
        "ratio": round(g_tps / d_tps, 3),
        "direct_ttft_ms": round(d_ttft, 1),
        "gateway_ttft_ms": round(g_ttft, 1),
        "tokens_direct": [r[2] for r in direct],
        "tokens_gateway": [r[2] for r in through],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'path':<22}{'tokens/s (median)':>20}{'TTFT ms (median)':>20}")
    print(f"{'llama-cpp-python':<22}{d_tps:>20.1f}{d_ttft:>20.1f}")
    print(f"{'gateway':<22}{g_tps:>20.1f}{g_ttft:>20.1f}")
    print(
        f"gateway/direct tokens/s ratio: {g_tps / d_tps:.3f}  (runs={args.runs}, "
        f"max_tokens={args.max_tokens})"
    )


if __name__ == "__main__":
    main()
