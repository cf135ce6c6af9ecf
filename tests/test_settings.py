"""Settings: code defaults, then the YAML file, then GATEWAY_* env; bad ones stop start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings
from gateway.tools.config_doc import render
from tests.conftest import ROOT


def test_config_file_documents_every_setting_with_its_default() -> None:
    assert (ROOT / "config" / "gateway.yaml").read_text() == render(), (
        "config/gateway.yaml is stale: run `python -m gateway config > config/gateway.yaml`"
    )


def test_precedence_env_over_yaml_over_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "g.yaml"
    cfg.write_text("server:\n  port: 9001\nlocal:\n  n_ctx: 1024\n")
    s = load_settings(cfg)
    assert s.server.port == 9001 and s.local.n_ctx == 1024 and s.local.n_threads == 2
    monkeypatch.setenv("GATEWAY_SERVER__PORT", "9002")
    monkeypatch.setenv(
        "GATEWAY_CLOUD__MODELS",
        '[{"name": "gpt", "model": "openai/gpt-4o-mini", "api_key_env": "K"}]',
    )
    s = load_settings(cfg)
    assert s.server.port == 9002
    assert s.cloud.models[0].name == "gpt"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GATEWAY_LOCAL__N_CTX": "lots"}, "GATEWAY_LOCAL__N_CTX"),
        ({"GATEWAY_SERVER__PORT": "70000"}, "server.port"),
        ({"GATEWAY_LOCAL__MODEL_PATH": "/nonexistent.gguf"}, "local.model_path"),
        ({"GATEWAY_CLOUD__MODELS": '[{"name": "x"}]'}, "GATEWAY_CLOUD__MODELS"),
        ({"GATEWAY_CLOUD__MODELS": "not json"}, "cloud"),
        ({"GATEWAY_SERVER__PROT": "1"}, "server.prot"),
    ],
)
def test_bad_setting_stops_startup_naming_it(env: dict[str, str], named: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--port", "0"],
        cwd=ROOT,
        env={**_clean_env(), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert named in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
