"""Shared pieces of the benchmarks: child processes on loopback, wrk runs, RSS readings."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on and this run has not handed out before: two calls in a row
    may otherwise get the same port back from the kernel (the first is closed again at once),
    and two servers of one step then race for it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class Proc:
    """A child process whose output goes to a temp file; stopped on exit."""

    def __init__(
        self, args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            args,
            env={**os.environ, **(env or {})},
            cwd=cwd or ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_http(self, url: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited; log in {self.log.name}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{url} not up; log in {self.log.name}")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class WrkResult:
    connections: int
    p50_ms: float
    p99_ms: float
    rps: float
    requests: int
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str,
    body: dict[str, object],
    *,
    connections: int,
    seconds: int,
    headers: dict[str, str] | None = None,
    threads: int = 1,
    script: str | None = None,
) -> WrkResult:
    """POST `body` to `url` with wrk: latency percentiles, requests/s and error count.

    `script`, when given, is the whole Lua script in place of the one made from `body` and
    `headers` (a benchmark that spreads requests over hosts or chains them)."""
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is missing: apt-get install wrk (make bench does)")
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    lua = "\n".join(
        ['wrk.method = "POST"', f"wrk.body = {json.dumps(json.dumps(body))}"]
        + [f'wrk.headers["{k}"] = "{v}"' for k, v in hdrs.items()]
    )
    if script is not None:
        lua = script
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua)
    out = subprocess.run(
        [exe, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", fh.name, url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    ).stdout
    os.unlink(fh.name)
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)[ \t]*$", out, re.M))
    if len(pct) < 2:
        raise RuntimeError(f"wrk gave no latency distribution for {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (
        sum(int(x) for x in sock.groups()) if sock else 0
    )
    return WrkResult(connections, _ms(pct["50"]), _ms(pct["99"]), rps, total, errors)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {sys.version.split()[0]}"


def have_llama_cpp_server() -> bool:
    """llama-cpp-python's `[server]` extra is installed (`make bench-deps` installs it); a
    fresh `make setup` has no FastAPI, and the short run then leaves that peer out."""
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("fastapi", "sse_starlette", "uvicorn"))


def plain_cpu_llama(**kwargs: Any) -> Any:
    """llama-cpp-python's `Llama` on the plain CPU buffer, as the gateway loads its models
    (gateway/local/model.py: no extra buffer types, whose AMX matmul crashes on batches): a
    peer in the same run uses the same kernels. Its constructor takes no such option, so the
    default parameters it asks llama.cpp for are amended for this one call."""
    import llama_cpp.llama_cpp as lib
    from llama_cpp import Llama

    original = lib.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    try:
        return Llama(**kwargs)
    finally:
        lib.llama_model_default_params = original
