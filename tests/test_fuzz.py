"""schemathesis against the live gateway's /openapi.json: no 5xx, responses match the document."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GatewayProcess

pytestmark = pytest.mark.chaos

ENDPOINTS = ("/v1/responses", "/v1/embeddings")


def _fuzz(
    tmp_path: Path, spec: Callable[[GatewayProcess], list[str]], checks: str
) -> list[dict[str, Any]]:
    """Run schemathesis against a fresh gateway; its JSON log lines, once it has stopped.

    `spec` gives schemathesis' schema arguments for the running gateway.
    """
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert exe, "schemathesis is a dev dependency: `make test` installs it"
    # Generation clamped to a few tokens so hundreds of fuzzed requests stay quick.
    gp = GatewayProcess(
        env={"GATEWAY_LOCAL__MAX_TOKENS_LIMIT": "4", "GATEWAY_LOCAL__MAX_QUEUE": "64"}
    )
    try:
        gp.wait_ready()
        proc = subprocess.run(
            [
                exe,
                "run",
                *spec(gp),
                "--checks",
                checks,
                "--max-examples",
                "100",
                "--seed",
                "1",
                "--request-timeout",
                "60",
                "--suppress-health-check",
                "all",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            cwd=tmp_path,
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-6000:]
    finally:
        log = gp.stop()
    # aiohttp's parser logs the malformed headers schemathesis sends; our code must not fail.
    ours = [json.loads(line) for line in log.splitlines() if line.startswith('{"ts"')]
    errors = [e for e in ours if e["logger"].startswith("gateway") and e["level"] == "error"]
    assert not errors, errors[:3]
    return ours


def test_schemathesis_finds_no_server_errors(tmp_path: Path) -> None:
    _fuzz(
        tmp_path,
        lambda gp: [f"{gp.url}/openapi.json"],
        "not_a_server_error,status_code_conformance,"
        "content_type_conformance,response_schema_conformance",
    )


def test_schemathesis_on_responses_and_embeddings_with_a_served_model(tmp_path: Path) -> None:
    """The document lets `model` be any string, so most fuzzed bodies above end in a 404
    before any generation; here the model is pinned to ones the gateway serves, so the
    generated inputs, formats, tools and dimensions reach the local model (issue 17)."""

    def served_only(gp: GatewayProcess) -> list[str]:
        with urllib.request.urlopen(f"{gp.url}/openapi.json", timeout=30) as r:
            doc = json.load(r)
        served = {"type": "string", "enum": ["local", "auto"]}
        body = doc["paths"]["/v1/responses"]["post"]["requestBody"]["content"]
        body["application/json"]["schema"]["properties"]["model"] = served
        doc["components"]["schemas"]["EmbeddingRequest"]["properties"]["model"] = served
        doc["paths"] = {p: {"post": doc["paths"][p]["post"]} for p in ENDPOINTS}
        spec = tmp_path / "openapi.json"
        spec.write_text(json.dumps(doc))
        return [str(spec), "--url", gp.url]

    ours = _fuzz(
        tmp_path,
        served_only,
        "not_a_server_error,status_code_conformance,content_type_conformance",
    )
    for path in ENDPOINTS:
        answered = [
            e
            for e in ours
            if e.get("msg") == "request" and e.get("path") == path and e.get("status") == 200
        ]
        assert answered, f"no fuzzed request to {path} was answered"
