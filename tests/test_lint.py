"""ruff and mypy stay clean: run as tests so `make test` guards them."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff() -> None:
    r = _run(sys.executable, "-m", "ruff", "check", "gateway", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run(sys.executable, "-m", "ruff", "format", "--check", "gateway", "tests", "bench")
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy() -> None:
    r = _run(sys.executable, "-m", "mypy")
    assert r.returncode == 0, r.stdout + r.stderr
