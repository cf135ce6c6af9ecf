"""Many streams at once on the local model: the gateway's batching engine vs llama.cpp's servers.

Same GGUF, threads and prompts; greedy, `--max-tokens` per stream, streamed, at 1, 2, 4, 8
and 16 concurrent streams: aggregate tokens/s and TTFT p50/p99 for
  (a) the gateway (local.parallel 8),
  (b) llama.cpp's `llama-server -np 8` (`make llama-server` builds it from the llama.cpp
      source vendored in the installed llama-cpp-python's sdist),
  (c) `python -m llama_cpp.server` (one sequence at a time).
The servers run one at a time on 127.0.0.1, rounds alternating between them, so machine
noise hits all alike. Every request starts with a unique line, so no server reuses a cached
prompt between requests: the table measures batching, not prompt caching.

Then: RSS of the gateway at parallel 1, 4 and 8, and the second-turn TTFT of a ~1,500-token
conversation with and without prefix reuse (n_ctx 4096 per slot).

    .venv/bin/python -m bench.local_concurrency --rounds 3 [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    PY,
    ROOT,
    Proc,
    free_port,
    have_llama_cpp_server,
    machine,
    plain_cpu_llama,
)
from gateway.local import embedded_model_path

LLAMA_SERVER = ROOT / ".bench" / "llama-server"
LEVELS = (1, 2, 4, 8, 16)
TOPICS = [
    "a lighthouse keeper and a storm",
    "a robot learning to paint",
    "a village that forgot its name",
    "two rival bakers",
    "a dragon afraid of heights",
    "a detective cat in Paris",
    "the last train of the night",
    "a garden on Mars",
    "a clockmaker's apprentice",
    "a whale that sang opera",
    "a lost map in a library",
    "a snowman in summer",
    "a pirate who hated water",
    "an astronaut's first day home",
    "a bridge between two kingdoms",
    "a violin found in an attic",
]
_CONTENT = re.compile(rb'"content":\s?"(?!")')
SECTION = "## 6. Local concurrency: continuous batching"


def messages(i: int) -> list[dict[str, str]]:
    # The unique first line defeats every server's prompt cache between requests.
    return [
        {
            "role": "user",
            "content": f"Request {uuid.uuid4().hex[:8]}.\nWrite a long, detailed story about "
            f"{TOPICS[i % len(TOPICS)]}.",
        }
    ]


async def one_stream(
    s: aiohttp.ClientSession, url: str, msgs: list[dict[str, str]], max_tokens: int
) -> tuple[float, float, int]:
    """(ttft seconds, end seconds, content chunks), times from the request's start."""
    body = {
        "model": "local",
        "messages": msgs,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
    }
    t0 = time.perf_counter()
    first = None
    n = 0
    async with s.post(f"{url}/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.content:
            # A byte test, not json.loads: the client shares the two cores with the servers.
            if _CONTENT.search(line):
                n += 1
                if first is None:
                    first = time.perf_counter() - t0
    end = time.perf_counter() - t0
    return (first if first is not None else end), end, n


async def level(url: str, streams: int, max_tokens: int) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=600)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(timeout=timeout, connector=conn) as s:
        t0 = time.perf_counter()
        rs = await asyncio.gather(
            *[one_stream(s, url, messages(i), max_tokens) for i in range(streams)]
        )
        wall = time.perf_counter() - t0
    ttfts = sorted(r[0] for r in rs)
    tokens = sum(r[2] for r in rs)
    return {
        "tokens_per_s": tokens / wall,
        "ttft_p50_ms": statistics.median(ttfts) * 1000,
        "ttft_p99_ms": _pct(ttfts, 0.99) * 1000,
        "tokens": tokens,
        "wall_s": wall,
    }


def _pct(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (with 16 streams, p99 is the slowest)."""
    k = max(0, min(len(sorted_values) - 1, round(q * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def _gateway(port: int, env: dict[str, str]) -> Proc:
    return Proc(
        [PY, "-m", "gateway", "serve", "--port", str(port)],
        env={"GATEWAY_SERVER__LOG_LEVEL": "WARNING", "GATEWAY_LOCAL__MAX_QUEUE": "64", **env},
    )


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def _servers(
    n_ctx: int, threads: int, parallel: int
) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (command, environment, health path); the port is filled in as {port}."""
    model = str(embedded_model_path())
    out: dict[str, tuple[list[str], dict[str, str], str]] = {
        "edge-gateway": (
            [PY, "-m", "gateway", "serve", "--port", "{port}"],
            {
                "GATEWAY_SERVER__LOG_LEVEL": "WARNING",
                "GATEWAY_LOCAL__MAX_QUEUE": "64",
                "GATEWAY_LOCAL__PARALLEL": str(parallel),
                "GATEWAY_LOCAL__N_CTX": str(n_ctx),
                "GATEWAY_LOCAL__N_THREADS": str(threads),
            },
            "/readyz",
        )
    }
    if LLAMA_SERVER.exists():
        out[f"llama-server -np {parallel}"] = (
            [
                str(LLAMA_SERVER),
                *("-m", model, "-np", str(parallel), "-c", str(n_ctx * parallel)),
                *("-t", str(threads), "--host", "127.0.0.1", "--port", "{port}", "--no-webui"),
            ],
            {},
            "/health",
        )
    if not have_llama_cpp_server():
        return out
    out["llama_cpp.server"] = (
        [
            *(PY, "-m", "llama_cpp.server", "--model", model),
            *("--n_ctx", str(n_ctx), "--n_threads", str(threads)),
            *("--host", "127.0.0.1", "--port", "{port}"),
            # By default a new request interrupts the stream in progress; queue instead.
            *("--interrupt_requests", "False"),
        ],
        {},
        "/v1/models",
    )
    return out


def concurrency(
    rounds: int,
    max_tokens: int,
    n_ctx: int,
    threads: int,
    parallel: int,
    levels: tuple[int, ...] = LEVELS,
) -> dict[str, Any]:
    """One server at a time (an idle llama.cpp thread pool still polls for a while, which
    would steal the two cores from the server being measured); rounds alternate servers."""
    servers = _servers(n_ctx, threads, parallel)
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {n: {k: [] for k in levels} for n in servers}
    for r in range(rounds):
        for name, (cmd, env, health) in servers.items():
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            with Proc([a.replace("{port}", str(port)) for a in cmd], env=env) as proc:
                proc.wait_http(url + health, timeout=180)
                asyncio.run(level(url, 2, 16))  # warm-up
                for streams in levels:
                    row = asyncio.run(level(url, streams, max_tokens))
                    runs[name][streams].append(row)
                    print(
                        f"round {r + 1} {name:<22} {streams:>2} streams: "
                        f"{row['tokens_per_s']:6.1f} tok/s  TTFT p50 {row['ttft_p50_ms']:7.0f}"
                        f"  p99 {row['ttft_p99_ms']:7.0f} ms",
                        flush=True,
                    )
    return {name: {k: _median_row(v) for k, v in by.items()} for name, by in runs.items()}


def memory(parallels: tuple[int, ...] = (1, 4, 8)) -> dict[int, float]:
    out = {}
    for p in parallels:
        port = free_port()
        with _gateway(port, {"GATEWAY_LOCAL__PARALLEL": str(p)}) as g:
            url = f"http://127.0.0.1:{port}"
            g.wait_http(url + "/readyz")
            asyncio.run(level(url, p, 16))  # every slot used once
            time.sleep(0.5)
            out[p] = g.rss_mb()
    return out


CONVERSATION_TURNS = 14


def conversation() -> list[dict[str, str]]:
    """A chat history of about 1,500 tokens: a system prompt and alternating turns."""
    msgs = [
        {
            "role": "system",
            "content": "You are a patient assistant for a small bakery's staff. Answer briefly, "
            "use the shop's terms, and never invent prices. " * 4,
        }
    ]
    for t in range(CONVERSATION_TURNS):
        msgs.append(
            {
                "role": "user",
                "content": f"Question {t + 1}: how should we store the sourdough batch number "
                f"{t + 1} overnight, and what should the closing shift check before leaving "
                "the kitchen? Please be specific about temperatures and covers.",
            }
        )
        msgs.append(
            {
                "role": "assistant",
                "content": f"For batch {t + 1}: cover the tubs with damp cloths, keep them at "
                "4 to 6 degrees in the walk-in fridge, label them with the time, and check that "
                "the ovens are off, the proofer is empty and the back door is locked.",
            }
        )
    return msgs


async def _ttft(url: str, msgs: list[dict[str, str]]) -> float:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as s:
        ttft, _, _ = await one_stream(s, url, msgs, 8)
    return ttft


def second_turn(runs: int) -> dict[str, Any]:
    """TTFT of turn 1 (cold) and turn 2 (resending turn 1) with prefix reuse on and off."""
    out: dict[str, Any] = {}
    for reuse in (True, False):
        port = free_port()
        env = {
            "GATEWAY_LOCAL__PARALLEL": "4",
            "GATEWAY_LOCAL__N_CTX": "4096",
            "GATEWAY_LOCAL__PREFIX_REUSE": "true" if reuse else "false",
        }
        firsts, seconds = [], []
        with _gateway(port, env) as g:
            url = f"http://127.0.0.1:{port}"
            g.wait_http(url + "/readyz")
            asyncio.run(_ttft(url, [{"role": "user", "content": "warm up"}]))
            for _ in range(runs):
                history = conversation()
                history[0]["content"] = f"Session {uuid.uuid4().hex[:8]}. " + history[0]["content"]
                firsts.append(asyncio.run(_ttft(url, history)))
                turn2 = [
                    *history,
                    {"role": "assistant", "content": "Noted."},
                    {"role": "user", "content": "And the croissant dough?"},
                ]
                seconds.append(asyncio.run(_ttft(url, turn2)))
        out["prefix reuse on" if reuse else "prefix reuse off"] = {
            "turn1_ttft_ms": statistics.median(firsts) * 1000,
            "turn2_ttft_ms": statistics.median(seconds) * 1000,
        }
    out["prompt_tokens"] = _prompt_tokens()
    return out


def _prompt_tokens() -> int:
    llama = plain_cpu_llama(model_path=str(embedded_model_path()), n_ctx=256, verbose=False)
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    eos = llama.detokenize([llama.token_eos()], special=True).decode()
    bos = llama.detokenize([llama.token_bos()], special=True).decode()
    fmt = Jinja2ChatFormatter(
        template=llama.metadata["tokenizer.chat_template"], eos_token=eos, bos_token=bos
    )(messages=conversation())
    return len(llama.tokenize(fmt.prompt.encode(), add_bos=False, special=True))


def render(res: dict[str, Any]) -> str:
    a = res["args"]
    table = res["concurrency"]
    names = list(table)
    lines = [
        SECTION,
        "",
        f"Measured {res['date']} on {res['machine']}. SmolLM2-135M-Instruct Q4_1, "
        f"{a['threads']} threads, greedy, max_tokens {a['max_tokens']}, streamed (aiohttp "
        f"clients), {a['n_ctx']} tokens of context per sequence; median of {a['rounds']} "
        "rounds, one server at a time, rounds alternating. Every request starts with a unique "
        "line, so no server reuses a cached prompt: this measures batching. Aggregate tokens/s = "
        "content chunks of all streams / wall time of the level.",
        "",
        "```",
        f".venv/bin/python -m bench.local_concurrency --rounds {a['rounds']} --max-tokens "
        f"{a['max_tokens']} --write   # after `make llama-server`",
        "```",
        "",
        "| server | streams | tokens/s | TTFT p50 ms | TTFT p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in names:
        for k, r in sorted(_by(table[name]).items()):
            lines.append(
                f"| {name} | {k} | {r['tokens_per_s']:.1f} | {r['ttft_p50_ms']:.0f} | "
                f"{r['ttft_p99_ms']:.0f} |"
            )
    gw = _by(table["edge-gateway"])
    peer = next((n for n in names if n.startswith("llama-server")), None)
    lines.append("")
    if peer is not None:
        ls = _by(table[peer])
        lines += [
            f"At 8 streams: gateway / {peer} aggregate tokens/s = "
            f"**{gw[8]['tokens_per_s'] / ls[8]['tokens_per_s']:.2f}x** (target >= 0.9); "
            f"gateway at 8 streams / itself at 1 = "
            f"**{gw[8]['tokens_per_s'] / gw[1]['tokens_per_s']:.2f}x** (target >= 1); "
            f"TTFT p50 ratio **{gw[8]['ttft_p50_ms'] / ls[8]['ttft_p50_ms']:.2f}x**, p99 ratio "
            f"**{gw[8]['ttft_p99_ms'] / ls[8]['ttft_p99_ms']:.2f}x** (targets <= 1.25).",
        ]
    mem = res["memory"]
    lines += [
        "",
        "Gateway RSS after every slot served one request (default n_ctx 2048 per slot; KV "
        "cache f16, 22.5 KiB per token of context for this model):",
        "",
        "| local.parallel | KV reserved MiB | RSS MB |",
        "| ---: | ---: | ---: |",
    ]
    for p, mb in mem.items():
        lines.append(f"| {p} | {int(p) * 2048 * 23040 / 2**20:.0f} | {mb:.0f} |")
    st = res["second_turn"]
    on, off = st["prefix reuse on"], st["prefix reuse off"]
    lines += [
        "",
        f"Second turn of a {st['prompt_tokens']}-token conversation (system prompt and "
        f"{CONVERSATION_TURNS} exchanges, unique per run; turn 2 resends it plus two short "
        "messages), n_ctx 4096 per slot, parallel 4, median TTFT of "
        f"{a['turn_runs']} conversations, `local.prefix_reuse` on and off:",
        "",
        "| prefix reuse | turn 1 TTFT ms | turn 2 TTFT ms | turn 2 / turn 1 |",
        "| --- | ---: | ---: | ---: |",
        f"| on | {on['turn1_ttft_ms']:.0f} | {on['turn2_ttft_ms']:.0f} | "
        f"{on['turn2_ttft_ms'] / on['turn1_ttft_ms']:.2f} |",
        f"| off | {off['turn1_ttft_ms']:.0f} | {off['turn2_ttft_ms']:.0f} | "
        f"{off['turn2_ttft_ms'] / off['turn1_ttft_ms']:.2f} |",
        "",
    ]
    return "\n".join(lines)


def _by(rows: dict[Any, Any]) -> dict[int, dict[str, float]]:
    return {int(k): v for k, v in rows.items()}


def write_section(text: str, path: Path = ROOT / "docs" / "BENCHMARKS.md") -> None:
    """Replace (or append) this benchmark's section, leaving the others as they are."""
    doc = path.read_text()
    start = doc.find(SECTION)
    if start == -1:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        nxt = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text + ("\n" + doc[nxt + 1 :] if nxt != -1 else "")
    path.write_text(doc.rstrip("\n") + "\n")


def measure(
    rounds: int = 3,
    max_tokens: int = 128,
    n_ctx: int = 2048,
    threads: int = 2,
    parallel: int = 8,
    turn_runs: int = 5,
    *,
    short: bool = False,
) -> dict[str, Any]:
    """`short`: two stream counts and one gateway size, to check the bench runs end to end."""
    levels, sizes = ((1, parallel), (parallel,)) if short else (LEVELS, (1, 4, 8))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "args": {
            "rounds": rounds,
            "max_tokens": max_tokens,
            "n_ctx": n_ctx,
            "threads": threads,
            "parallel": parallel,
            "turn_runs": turn_runs,
        },
        "concurrency": concurrency(rounds, max_tokens, n_ctx, threads, parallel, levels),
        "memory": memory(sizes),
        "second_turn": second_turn(turn_runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--n-ctx", type=int, default=2048, help="per sequence")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--turn-runs", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="update docs/BENCHMARKS.md")
    args = ap.parse_args()
    res = measure(
        args.rounds, args.max_tokens, args.n_ctx, args.threads, args.parallel, args.turn_runs
    )
    out = ROOT / "bench" / "results" / "local_concurrency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))
    text = render(json.loads(out.read_text()))
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
