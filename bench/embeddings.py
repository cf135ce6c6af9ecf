"""Local embedding throughput: the gateway's /v1/embeddings beside llama.cpp's server.

Both serve the same GGUF (the embedded SmolLM2-135M unless --model), mean pooling, the same
threads and batch size. One client sends requests one after another, each with `batch` unique
inputs (about 20 tokens each, so no server can reuse anything); inputs per second is inputs /
wall time of the level, the median over rounds, servers alternating per round. The gateway's
per-input cache is bypassed (`Cache-Control: no-cache, no-store`). The vectors of both servers
for the same texts are compared too (cosine), to show both compute the same thing.

Both are also put against llama.cpp's raw prompt-processing rate for the model: `llama-bench`
(built from the same vendored source by `make llama-server`) with the same threads and batch and
a prompt the size of a 16-input request, run before and after the rounds; a server's share is
its tokens per second (inputs/s times the tokens an input has) over that rate.

    .venv/bin/python -m bench.embeddings --rounds 3 --write   # after `make llama-server`
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import PY, ROOT, Proc, free_port, machine
from gateway.local.model import embedded_model_path

BATCHES = (1, 16, 64)
SECTION = "## 9. Local embedding throughput: the gateway beside `llama-server --embedding`"


def _text(i: int, run: str) -> str:
    return f"Work order {run}-{i}: replace the mechanical seal on pump P-{i % 97} and log it."


def _post(url: str, inputs: list[str]) -> list[list[float]]:
    return _post_usage(url, inputs)[0]


def _post_usage(url: str, inputs: list[str]) -> tuple[list[list[float]], int]:
    body = json.dumps({"model": "local", "input": inputs, "encoding_format": "float"}).encode()
    req = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": "application/json", "Cache-Control": "no-cache, no-store"},
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        obj = json.loads(r.read())
    vectors = [d["embedding"] for d in sorted(obj["data"], key=lambda d: d["index"])]
    return vectors, int(obj.get("usage", {}).get("prompt_tokens", 0))


def _pp_rate(bench: Path, model: str, threads: int, n_batch: int, tokens: int) -> float | None:
    """llama-bench's prompt-processing tokens/s for a `tokens`-token prompt (None: no binary)."""
    if not bench.is_file():
        return None
    out = subprocess.run(
        [
            str(bench),
            *("-m", model, "-p", str(tokens), "-n", "0", "-r", "3", "-o", "json"),
            *("-t", str(threads), "-b", str(n_batch), "-ub", str(n_batch)),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(out)[0]["avg_ts"])


def _level(url: str, batch: int, inputs: int, run: str) -> float:
    """Inputs per second for `inputs` inputs sent `batch` at a time."""
    texts = [_text(i, run) for i in range(inputs)]
    started = time.perf_counter()
    for k in range(0, inputs, batch):
        _post(url, texts[k : k + batch])
    return inputs / (time.perf_counter() - started)


def _servers(model: str, threads: int, n_batch: int, llama_server: Path) -> dict[str, Any]:
    gw_port, ls_port = free_port(), free_port()
    return {
        "edge-gateway": (
            [PY, "-m", "gateway", "serve", "--port", str(gw_port)],
            {
                "GATEWAY_SERVER__LOG_LEVEL": "WARNING",
                "GATEWAY_LOCAL__EMBEDDING__MODEL_PATH": model,
                "GATEWAY_LOCAL__EMBEDDING__POOLING": "mean",
                "GATEWAY_LOCAL__EMBEDDING__N_THREADS": str(threads),
                "GATEWAY_LOCAL__EMBEDDING__N_BATCH": str(n_batch),
                # A KV stream of n_batch cells per input, 16 side by side: llama-server -np 16.
                "GATEWAY_LOCAL__EMBEDDING__N_CTX": str(16 * n_batch),
                "GATEWAY_LOCAL__N_THREADS": str(threads),
                "GATEWAY_LOCAL__PARALLEL": "1",
            },
            f"http://127.0.0.1:{gw_port}",
            "/readyz",
        ),
        "llama-server --embedding": (
            [
                str(llama_server),
                *("-m", model, "--embedding", "--pooling", "mean"),
                *("-t", str(threads), "-b", str(n_batch), "-ub", str(n_batch)),
                # Slots embed inputs side by side; 16 of 512 tokens each.
                *("-np", "16", "-c", str(16 * n_batch)),
                *("--host", "127.0.0.1", "--port", str(ls_port), "--no-webui"),
            ],
            {},
            f"http://127.0.0.1:{ls_port}",
            "/health",
        ),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    model = str(args.model or embedded_model_path())
    servers = _servers(model, args.threads, args.n_batch, args.llama_server)
    # A 16-input request of these texts is about 330 tokens: the prompt llama-bench times.
    pp = [_pp_rate(args.llama_bench, model, args.threads, args.n_batch, 16 * 21)]
    procs = {name: Proc(cmd, env=env) for name, (cmd, env, _, _) in servers.items()}
    try:
        for name, (_, _, base, health) in servers.items():
            procs[name].wait_http(base + health)
        urls = {name: base + "/v1/embeddings" for name, (_, _, base, _) in servers.items()}
        for url in urls.values():  # warm-up: loads the gateway's embedding model
            _post(url, [_text(i, "warm") for i in range(8)])
        probe = [_text(i, "probe") for i in range(8)]
        a, b = (np.asarray(_post(u, probe)) for u in urls.values())
        _, probe_tokens = _post_usage(urls["edge-gateway"], probe)
        cosines = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        rates: dict[str, dict[int, list[float]]] = {n: {k: [] for k in BATCHES} for n in urls}
        for r in range(args.rounds):
            order = list(urls) if r % 2 == 0 else list(reversed(urls))
            for name in order:
                for batch in BATCHES:
                    rates[name][batch].append(
                        _level(urls[name], batch, args.inputs, f"r{r}b{batch}{name[:2]}")
                    )
        rss = {name: p.rss_mb() for name, p in procs.items()}
    finally:
        for p in procs.values():
            p.stop()
    pp.append(_pp_rate(args.llama_bench, model, args.threads, args.n_batch, 16 * 21))
    rates_pp = [x for x in pp if x is not None]
    return {
        "date": dt.date.today().isoformat(),
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "median": {
            n: {k: statistics.median(v) for k, v in per.items()} for n, per in rates.items()
        },
        "runs": rates,
        "cosine_min": float(cosines.min()),
        "rss_mb": rss,
        "width": int(a.shape[1]),
        "tokens_per_input": probe_tokens / len(probe),
        "llama_bench_pp": rates_pp,
    }


def render(res: dict[str, Any], command: str) -> str:
    med = res["median"]
    gw, ls = med["edge-gateway"], med["llama-server --embedding"]
    a = res["args"]
    lines = [
        SECTION,
        "",
        f"Measured {res['date']} on {res['machine']}. SmolLM2-135M-Instruct Q4_1 (width "
        f"{res['width']}), mean pooling, {a['threads']} threads, batch {a['n_batch']} tokens, "
        f"inputs of about 20 tokens, each unique; one client, requests one after another, "
        f"{a['inputs']} inputs per level, median of {a['rounds']} rounds, servers alternating. "
        "The gateway's cache is bypassed (`Cache-Control: no-cache, no-store`). llama-server "
        f"runs `--embedding --pooling mean -np 16 -c {16 * int(a['n_batch'])}`, its slots "
        "embedding a request's inputs side by side.",
        "",
        "```",
        command,
        "```",
        "",
        "| inputs per request | gateway inputs/s | llama-server inputs/s | gateway / server |",
        "| ---: | ---: | ---: | ---: |",
    ]
    for k in BATCHES:
        g, s = gw[k], ls[k]
        lines.append(f"| {k} | {g:.1f} | {s:.1f} | {g / s:.2f}x |")
    lines += [
        "",
        f"Same vectors: the lowest cosine between the two servers' vectors for 8 texts is "
        f"{res['cosine_min']:.5f}. RSS after the run: gateway {res['rss_mb']['edge-gateway']:.0f}"
        f" MB (chat model loaded too), llama-server "
        f"{res['rss_mb']['llama-server --embedding']:.0f} MB.",
        "",
    ]
    if res["llama_bench_pp"]:
        pp = statistics.median(res["llama_bench_pp"])
        tpi = res["tokens_per_input"]
        runs = ", ".join(f"{x:.0f}" for x in res["llama_bench_pp"])
        lines += [
            f"llama.cpp's raw rate, `llama-bench -p {16 * 21} -n 0 -t {a['threads']} -b "
            f"{a['n_batch']} -ub {a['n_batch']}` before and after the rounds: {runs} tokens/s. "
            f"At {tpi:.1f} tokens an input, 16 inputs per request: the gateway "
            f"{gw[16] * tpi / pp:.0%} of it, llama-server {ls[16] * tpi / pp:.0%}.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--inputs", type=int, default=128, help="inputs per level and round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--model", type=Path, default=None, help="GGUF (default: embedded SmolLM2)")
    ap.add_argument("--llama-server", type=Path, default=ROOT / ".bench" / "llama-server")
    ap.add_argument("--llama-bench", type=Path, default=ROOT / ".bench" / "llama-bench")
    ap.add_argument("--write", action="store_true", help="append the section to BENCHMARKS.md")
    args = ap.parse_args()
    res = run(args)
    command = ".venv/bin/python -m bench.embeddings " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if k not in ("write", "model") and v is not None
    )
    text = render(res, command)
    print(text)
    print(json.dumps(res["runs"], indent=1))
    if args.write:
        doc = ROOT / "docs" / "BENCHMARKS.md"
        body = doc.read_text()
        if SECTION in body:  # replace the section in place; the sections after it stay
            start = body.index(SECTION)
            end = body.find("\n## ", start + len(SECTION))
            rest = body[end:] if end >= 0 else ""
            body = body[:start] + text.rstrip() + "\n" + rest
            doc.write_text(body)
        else:
            doc.write_text(body.rstrip() + "\n\n" + text)


if __name__ == "__main__":
    main()
