"""A test run stopped midway leaves nothing running: no gateway, redis-server or node.

A run of the chaos test (a gateway process, a redis-server, the fake cloud) is stopped once
its gateway is up: with Ctrl-C (SIGINT, fixtures' teardown runs) and with SIGKILL (none
does; the children's parent-death signal ends them, tests/children.py). Every process the
run started is noted (by pid and start time) before it is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[1]), int(fields[19])) if fields[0] != "Z" else None


def _descendants(root: int) -> dict[int, tuple[int, str]]:
    """Every live process below `root`: pid -> (start time, command line)."""
    parents = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and (st := _stat(int(proc.name))) is not None:
            parents[int(proc.name)] = st
    found: dict[int, tuple[int, str]] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, started) in parents.items():
            if ppid == parent and pid not in found:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                found[pid] = (started, cmd.decode(errors="replace"))
                frontier.append(pid)
    return found


def _alive(procs: dict[int, tuple[int, str]]) -> list[str]:
    return [cmd for pid, (started, cmd) in procs.items() if (_stat(pid) or (0, -1))[1] == started]


def _wait(what: str, ok: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ok():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_run_stopped_midway_leaves_no_process(sig: signal.Signals) -> None:
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_chaos.py"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: dict[int, tuple[int, str]] = {}
    try:

        def started() -> bool:
            children.update(_descendants(run.pid))
            cmds = " | ".join(c for _, c in children.values())
            return "gateway serve" in cmds and "redis-server" in cmds

        _wait("the run never started its gateway and redis-server", started, 120)
        time.sleep(1.0)  # mid-run: requests in flight
        children.update(_descendants(run.pid))
        run.send_signal(sig)
        run.wait(60)
        _wait(f"left running: {_alive(children)}", lambda: not _alive(children), 15)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        for pid, (started_at, _) in children.items():
            if (_stat(pid) or (0, -1))[1] == started_at:
                os.kill(pid, signal.SIGKILL)
