"""Labels of the embedded model's OWN correctness, for `python -m gateway calibrate`.

The routing data in ../shared/data/routing says whether Mixtral and GPT-4 answered right,
not the embedded 135M model: calibrate on it measures whether the local model's confidence
spots hard prompts. This script writes prompts whose answers can be checked (seeded integer
arithmetic, from one-digit sums to three-digit products), has the local model answer them
greedily, and labels each `local_ok` when the last number in the answer is right (the model
restates the operands before it answers):

    .venv/bin/python -m bench.cascade_labels --n 300 --out /tmp/arith.jsonl
    .venv/bin/python -m gateway calibrate /tmp/arith.jsonl --limit 300 --max-tokens 48

Same settings and `--max-tokens` as calibrate: greedy decoding gives calibrate the same
answers it labelled here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
from pathlib import Path

from gateway.local import LocalBackend
from gateway.schemas import ChatRequest
from gateway.settings import load_settings

NUMBER = re.compile(r"-?\d[\d,]*")
KINDS = (("+", 9), ("+", 99), ("-", 99), ("*", 9), ("+", 999), ("*", 99), ("*", 999))


def questions(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        op, top = KINDS[i % len(KINDS)]
        a, b = rng.randint(2, top), rng.randint(2, top)
        gold = a + b if op == "+" else a - b if op == "-" else a * b
        out.append((f"What is {a} {op} {b}?", gold))
    return out


def last_number(text: str) -> int | None:
    found = NUMBER.findall(text)
    return int(found[-1].replace(",", "")) if found else None


async def label(items: list[tuple[str, int]], max_tokens: int) -> list[bool]:
    settings = load_settings()
    backend = LocalBackend(settings.local)
    await backend.load()
    room = asyncio.Semaphore(settings.local.parallel)

    async def one(prompt: str, gold: int) -> bool:
        req = ChatRequest.model_validate(
            {
                "model": "local",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
        )
        async with room:
            done = await backend.complete(req, "chat")
        return last_number(done.obj["choices"][0]["message"]["content"] or "") == gold

    try:
        return list(await asyncio.gather(*(one(p, g) for p, g in items)))
    finally:
        await backend.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    items = questions(args.n, args.seed)
    ok = asyncio.run(label(items, args.max_tokens))
    lines = [
        json.dumps({"prompt": p, "local_ok": k}) + "\n" for (p, _), k in zip(items, ok, strict=True)
    ]
    args.out.write_text("".join(lines))
    print(f"{sum(ok)} of {len(ok)} answered right; wrote {args.out}")


if __name__ == "__main__":
    main()
