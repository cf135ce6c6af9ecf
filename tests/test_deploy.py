"""deploy/: every YAML and JSON parses, alert rules pass promtool, names match real metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client import generate_latest

from gateway.metrics import Metrics
from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"


def _promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool missing: `make test` installs it (Debian package prometheus)")
    return exe


def test_every_yaml_and_json_parses() -> None:
    files = sorted(DEPLOY.rglob("*.y*ml"))
    assert len(files) >= 10
    for path in files:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs and all(d is not None for d in docs), path
    for path in DEPLOY.rglob("*.json"):
        json.loads(path.read_text())


def test_alert_rules_pass_promtool() -> None:
    exe = _promtool()
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        proc = subprocess.run(
            [exe, *args], cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_and_kubernetes_shape() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {"gateway", "redis", "prometheus", "grafana"} <= set(compose["services"])
    docs = [
        d for p in (DEPLOY / "kubernetes").glob("*.yaml") for d in yaml.safe_load_all(p.read_text())
    ]
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Kustomization"} <= kinds
    gateway = next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "edge-gateway"
    )
    container = gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    policies = next(d for d in docs if d["kind"] == "ConfigMap")
    assert policies["data"]["default.yaml"] == (ROOT / "policies" / "default.yaml").read_text()


def test_dashboard_and_alerts_use_real_metric_names() -> None:
    exposed = set(re.findall(r"^# TYPE (\S+) ", generate_latest(Metrics().registry).decode(), re.M))
    families = {n.removesuffix("_total") for n in exposed} | exposed
    used = set()
    for path in [
        DEPLOY / "grafana" / "dashboards" / "edge-gateway.json",
        DEPLOY / "prometheus" / "alerts.yml",
    ]:
        used |= set(re.findall(r"edge_gateway_[a-z_]+", path.read_text()))
    unknown = {
        u
        for u in used
        if re.sub(r"_(bucket|sum|count)$", "", u) not in families
        and u.removesuffix("_total") not in families
    }
    assert not unknown, unknown
