"""state.dir: the gateway's one writable directory, so the rest may be read-only (issue 24).

The deploys (the image, Kubernetes' `readOnlyRootFilesystem`, systemd's `ProtectSystem=strict`)
give the gateway a read-only root and one writable volume. Here the real gateway runs from a
read-only working directory, with telemetry and learning on, and must keep its files in the
state directory, nowhere else.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import load_settings
from tests.children import spawn
from tests.conftest import ROOT, GatewayProcess, free_port
from tests.fakes.otlp import FakeCollector

NOBODY = 65534  # a uid that owns nothing here: writes only where the test allows them


def test_relative_store_paths_land_under_the_state_dir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s = load_settings(state={"dir": str(state)})
    assert s.state.dir == state
    assert s.telemetry.store_path == state / "telemetry-outbox.sqlite"
    assert s.learning.store == state / "labels.sqlite3"
    # a relative path is under the state dir; an absolute one is kept as given
    s = load_settings(
        state={"dir": str(state)},
        telemetry={"store_path": "out/o.sqlite"},
        learning={"store": str(tmp_path / "elsewhere.sqlite3")},
    )
    assert s.telemetry.store_path == state / "out" / "o.sqlite"
    assert s.learning.store == tmp_path / "elsewhere.sqlite3"
    # dumped and loaded again (as a tier or a test does): the same files, not state/state/...
    again = load_settings(**s.model_dump())
    assert again.telemetry.store_path == s.telemetry.store_path
    assert again.learning.store == s.learning.store


def test_default_state_dir_is_the_checkouts_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    # A dev checkout keeps today's files (data/ under the working directory), now absolute.
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("GATEWAY_STATE__DIR", raising=False)
    s = load_settings()
    assert s.state.dir == ROOT / "data"
    assert s.telemetry.store_path == ROOT / "data" / "telemetry-outbox.sqlite"
    assert s.learning.store == ROOT / "data" / "labels.sqlite3"


def test_state_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GATEWAY_STATE__DIR", str(tmp_path))
    s = load_settings()
    assert s.learning.store == tmp_path / "labels.sqlite3"


# -- the real gateway on a read-only root -----------------------------------------------------


class _ReadOnlyGateway(GatewayProcess):
    """`python -m gateway serve` started in `cwd`, as `uid` when the test runs as root."""

    def __init__(self, *, cwd: Path, env: dict[str, str], uid: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.url}/v1"
        self.log = tempfile.TemporaryFile()
        # Root ignores file modes: drop to a uid that owns nothing, so the read-only working
        # directory (and the checkout, and the venv) really refuse its writes.
        prefix = []
        if uid is not None:
            setpriv = shutil.which("setpriv")
            assert setpriv, "setpriv (util-linux) is needed to drop root for this test"
            prefix = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        full_env = {
            **os.environ,
            # The checkout's code, not an installed copy, though the working directory is not it.
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
            "HOME": str(cwd),  # nothing may be written to a home directory either
            **env,
        }
        self.proc = spawn(
            [*prefix, sys.executable, "-m", "gateway", "serve", "--port", str(self.port)],
            cwd=cwd,
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def read_only_root() -> Iterator[tuple[Path, Path, int | None]]:
    """A read-only working directory and, beside it, the one writable state directory."""
    base = Path(tempfile.mkdtemp(prefix="egw-ro-"))
    uid = NOBODY if os.geteuid() == 0 else None
    cwd, state = base / "app", base / "state"
    cwd.mkdir()
    state.mkdir()
    if uid is not None:
        os.chown(state, uid, uid)
    state.chmod(0o700)
    cwd.chmod(0o555)  # r-x: not writable, by its owner either
    base.chmod(0o755)  # pytest's own tmp folders are 0700: the dropped uid could not enter
    try:
        yield cwd, state, uid
    finally:
        cwd.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def _post(url: str, path: str, body: dict[str, object], rid: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if rid is not None:
        headers["x-request-id"] = rid
    req = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=120) as r:
        return int(r.status)


def _wait(cond: object, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _rows(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT kind, body FROM records ORDER BY id").fetchall()


def test_gateway_on_a_read_only_root_keeps_telemetry_and_learning_in_its_state_dir(
    read_only_root: tuple[Path, Path, int | None],
) -> None:
    cwd, state, uid = read_only_root
    collector = FakeCollector(mode="down").start_in_thread()  # records stay in the outbox
    env = {
        "GATEWAY_STATE__DIR": str(state),
        "GATEWAY_CLOUD__MODELS": "[]",
        "GATEWAY_TELEMETRY__ENDPOINT": collector.endpoint,
        "GATEWAY_TELEMETRY__FLUSH_INTERVAL_S": "0.1",
        "GATEWAY_TELEMETRY__BACKOFF_BASE_S": "0.05",
        "GATEWAY_TELEMETRY__BACKOFF_MAX_S": "0.3",
        "GATEWAY_LEARNING__ENABLED": "true",
    }
    gp = _ReadOnlyGateway(cwd=cwd, env=env, uid=uid)
    try:
        if uid is not None:  # the premise: this process cannot write where it runs
            probe = subprocess.run(
                [shutil.which("setpriv") or "setpriv", f"--reuid={uid}", f"--regid={uid}",
                 "--clear-groups", "touch", str(cwd / "probe")],
                capture_output=True,
            )  # fmt: skip
            assert probe.returncode != 0 and not (cwd / "probe").exists()
        gp.wait_ready(timeout=120)
        chat = {"model": "local", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        assert _post(gp.base_url, "/chat/completions", chat, rid="ro-1") == 200
        assert _post(gp.base_url, "/feedback", {"request_id": "ro-1", "good": True}, "ro-2") == 200
        outbox = state / "telemetry-outbox.sqlite"
        labels = state / "labels.sqlite3"
        _wait(lambda: outbox.exists() and len(_rows(outbox)) == 2)
        _wait(lambda: labels.exists() and len(_rows(labels)) == 1)
        assert [json.loads(b)["request_id"] for _, b in _rows(outbox)] == ["ro-1", "ro-2"]
        [(kind, _)] = _rows(labels)
        assert kind == "feedback"
        # The uplink is back: the record leaves the state dir's outbox for the collector.
        collector.set_mode_threadsafe("up")
        _wait(lambda: collector.request_ids() == ["ro-1", "ro-2"] and _rows(outbox) == [])
    finally:
        out = gp.stop()
        collector.stop_thread()
    assert gp.proc.returncode == 0, out
    assert "running without telemetry" not in out, out
    # Nothing was written where it runs (and, as a uid owning nothing, it could write only to
    # the state dir and /tmp: the checkout and the venv are root's).
    assert list(cwd.iterdir()) == []
    assert stat.S_IMODE(cwd.stat().st_mode) == 0o555
    assert {p.name for p in state.iterdir()} >= {"telemetry-outbox.sqlite", "labels.sqlite3"}
