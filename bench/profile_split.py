"""Where a request's CPU goes: py-spy's raw samples split into the gateway's stages.

Each sample is charged to the innermost stage on its stack (the access log inside the
observe middleware counts as the log, not as observe), so the shares add up to 100%:

    py-spy record -p PID -d 10 -r 150 -f raw -o pass.raw   # while wrk runs at 32 connections
    .venv/bin/python -m bench.profile_split pass.raw [more.raw ...]
"""

from __future__ import annotations

import argparse
import collections
import re

# (stage, pattern on a frame "function (file:line)"), innermost match wins.
STAGES: list[tuple[str, str]] = [
    ("aiohttp server: read, parse, write", r"aiohttp/(web_protocol|http_|web_response|base_pro)"),
    ("event loop, sockets, timers", r"asyncio/|selectors\.py"),
    ("middlewares (request id, error, auth, observe)", r"gateway/http/(middlewares|observe)"),
    ("open-box guard and keys", r"gateway/http/auth\.py"),
    ("read and validate the body", r"gateway/pipeline/body\.py|pydantic"),
    ("admission (limits, deadline)", r"gateway/http/opening\.py|gateway/limits/"),
    ("dispatch and attempt", r"gateway/dispatch\.py|gateway/pipeline/(attempt|outcome)"),
    ("privacy scan", r"gateway/routing/(privacy|pii)"),
    ("routing decision (features, scorer, rules)", r"gateway/routing/|pipeline/deciding"),
    ("cache plan, key, look-up", r"gateway/cache/"),
    ("upstream call (aiohttp client)", r"aiohttp/(client|connector|streams|payload)"),
    ("pass-through backend (body, answer)", r"gateway/backends/"),
    ("JSON (orjson, json)", r"jsonfast|json/|orjson"),
    ("response headers and body", r"gateway/http/(chat|stream|render)|gateway/render"),
    ("access log line", r"logging/|gateway/logs\.py"),
    ("metrics", r"prometheus_client"),
    ("status board", r"gateway/status\.py"),
    ("learning, telemetry", r"gateway/(learning|telemetry)/"),
]
_COMPILED = [(name, re.compile(p)) for name, p in STAGES]


def split(paths: list[str]) -> tuple[collections.Counter[str], int]:
    shares: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        with open(path) as fh:
            for line in fh:
                stack, _, n = line.rstrip().rpartition(" ")
                if not stack or not n.isdigit():
                    continue
                stage = "other"
                for frame in stack.split(";"):
                    for name, rx in _COMPILED:
                        if rx.search(frame):
                            stage = name
                            break
                shares[stage] += int(n)
                total += int(n)
    return shares, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("raw", nargs="+", help="py-spy raw (collapsed) output files")
    args = ap.parse_args()
    shares, total = split(args.raw)
    print("| stage | share of samples |\n| --- | ---: |")
    for name, n in shares.most_common():
        print(f"| {name} | {100 * n / max(total, 1):.1f}% |")
    print(f"| (samples) | {total} |")


if __name__ == "__main__":
    main()
