"""deploy/: every YAML and JSON parses, alert rules pass promtool, names match real metrics.

And the deploys run as documented (issue 24): the Kubernetes manifests pass the API's own
schemas (kubernetes-validate, offline); two or more gateway replicas with a disruption budget,
probes, a preStop drain, a read-only root with one writable state volume, each pod scraped by
itself; two Redis roles, the cache evicting and the state one `noeviction` with its AOF on a
volume, and the gateway pointed at the right one; compose, the image and the systemd unit the
same; and every GATEWAY_* variable they set is a real setting.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import generate_latest

from gateway.metrics import Metrics
from gateway.settings import Settings, load_settings
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
    assert {"gateway-a", "gateway-b", "redis-cache", "redis-state", "prometheus", "grafana"} <= set(
        compose["services"]
    )
    docs = _kube_docs()
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Kustomization"} <= kinds
    container = _gateway_container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    policies = _named(docs, "ConfigMap", "edge-gateway-policies")
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


# -- issue 24: deploys that run, on replicas ---------------------------------------------------

KUBE = DEPLOY / "kubernetes"
GATEWAY_LABELS = {"app": "edge-gateway"}
# Kinds the Kubernetes API has no schema for: the kustomize file and the Prometheus Operator's
# PodMonitor (a CRD); both are checked field by field below.
NO_API_SCHEMA = {"Kustomization", "PodMonitor"}


def _kube_docs() -> list[dict[str, Any]]:
    return [d for p in sorted(KUBE.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text())]


def _named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _gateway_deployment() -> dict[str, Any]:
    return _named(_kube_docs(), "Deployment", "edge-gateway")


def _gateway_container() -> dict[str, Any]:
    [container] = _gateway_deployment()["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def _redis_config(args: list[str]) -> dict[str, str]:
    """redis-server's command line (`--name value...`) as {name: value}."""
    out: dict[str, str] = {}
    name = None
    for a in args:
        if a.startswith("--"):
            name = a[2:]
            out[name] = ""
        elif name is not None:
            out[name] = (out[name] + " " + a).strip()
    return out


def _check_cache_redis(config: dict[str, str]) -> None:
    assert config["maxmemory-policy"] == "allkeys-lru", config  # the cache may forget
    assert config.get("maxmemory"), config  # ...and must, before the container's limit


def _check_state_redis(config: dict[str, str]) -> None:
    # Limits, budgets, stored responses, feedback ids, labels: never evicted, never lost.
    assert config["maxmemory-policy"] == "noeviction", config
    assert config["appendonly"] == "yes", config
    assert config.get("appendfsync", "everysec") in ("everysec", "always"), config


def test_kubernetes_manifests_pass_the_api_schemas() -> None:
    import kubernetes_validate

    versions = ["1.29.0", kubernetes_validate.latest_version()]  # the oldest we name, the newest
    docs = _kube_docs()
    checked = 0
    for doc in docs:
        if doc["kind"] in NO_API_SCHEMA:
            continue
        for v in versions:
            # strict: an unknown or misspelt field is an error, as kubectl's server-side check
            kubernetes_validate.validate(doc, v, strict=True)
        checked += 1
    assert checked >= 10
    kustomization = next(d for d in docs if d["kind"] == "Kustomization")
    listed = set(kustomization["resources"])
    # Every manifest is applied by `kubectl apply -k`, except the two that cannot be: the
    # secret example (keys never in the repo) and the PodMonitor (needs the operator's CRD).
    assert listed == {p.name for p in KUBE.glob("*.yaml")} - {
        "kustomization.yaml",
        "secret.example.yaml",
        "podmonitor.yaml",
    }


def test_gateway_pods_replicate_drain_and_survive_disruptions() -> None:
    docs = _kube_docs()
    gateway = _gateway_deployment()
    spec = gateway["spec"]
    pod_labels = spec["template"]["metadata"]["labels"]
    assert spec["replicas"] >= 2
    assert _selects(spec["selector"]["matchLabels"], pod_labels)
    # A rolling update starts the new pod (model loaded, ready) before it stops an old one.
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    [pdb] = [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    assert _selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    assert pdb["spec"].get("minAvailable", 0) >= 1 or pdb["spec"].get("maxUnavailable") == 1
    # Nothing else the PDB selects: the Redis pods have labels of their own.
    others = [
        d
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] != "edge-gateway"
    ]
    assert others and not any(
        _selects(
            pdb["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]
        )
        for d in others
    )
    service = _named(docs, "Service", "edge-gateway")
    assert _selects(service["spec"]["selector"], pod_labels)

    container = _gateway_container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http", probe
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    # preStop: keep serving while the endpoints controller takes the pod out of the Service;
    # then SIGTERM starts the gateway's own drain, all within the grace period.
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) >= 3
    drain = load_settings().server.shutdown_grace_s
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > int(command[1]) + drain


def test_gateway_pods_have_a_read_only_root_and_a_writable_state_volume() -> None:
    pod = _gateway_deployment()["spec"]["template"]["spec"]
    container = _gateway_container()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = _env(container)
    state_dir = env["GATEWAY_STATE__DIR"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == state_dir]
    assert not mount.get("readOnly", False)
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume  # writable, per pod
    # The gateway's own defaults put its files there, and nowhere else it writes.
    settings = load_settings(state={"dir": state_dir})
    for path in (settings.telemetry.store_path, settings.learning.store):
        assert Path(state_dir) in path.parents
    # service.instance.id: the pod's own name (downward API)
    [pod_name] = [e for e in container["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def _redis_pods(docs: list[dict[str, Any]]) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """Service name -> (the workload behind it, its redis-server config)."""
    out = {}
    for svc in (d for d in docs if d["kind"] == "Service"):
        for w in (d for d in docs if d["kind"] in ("Deployment", "StatefulSet")):
            tmpl = w["spec"]["template"]
            [c, *_] = tmpl["spec"]["containers"]
            if c["image"].startswith("redis:") and _selects(
                svc["spec"]["selector"], tmpl["metadata"]["labels"]
            ):
                out[svc["metadata"]["name"]] = (w, _redis_config(c.get("args", [])))
    return out


def test_two_redis_roles_and_the_gateway_points_at_each() -> None:
    docs = _kube_docs()
    redis = _redis_pods(docs)
    env = _env(_gateway_container())
    cache_host = str(urlsplit(env["GATEWAY_CACHE__REDIS_URL"]).hostname)
    state_hosts = {
        str(urlsplit(env[k]).hostname)
        for k in ("GATEWAY_LIMITS__REDIS_URL", "GATEWAY_STATE__REDIS_URL")
    }
    assert len(state_hosts) == 1 and cache_host not in state_hosts
    [state_host] = state_hosts
    assert set(redis) == {cache_host, state_host}
    _check_cache_redis(redis[cache_host][1])
    workload, config = redis[state_host]
    _check_state_redis(config)
    # The AOF is on a volume that outlives the pod: a claim, mounted where redis writes.
    assert workload["kind"] == "StatefulSet"
    [claim] = workload["spec"]["volumeClaimTemplates"]
    [c] = workload["spec"]["template"]["spec"]["containers"]
    [mount] = [m for m in c["volumeMounts"] if m["name"] == claim["metadata"]["name"]]
    assert mount["mountPath"] == config["dir"]
    assert int(env["GATEWAY_STATE__REPLICAS"]) == _gateway_deployment()["spec"]["replicas"]


def test_prometheus_scrapes_each_gateway_pod_not_the_service() -> None:
    pod = _gateway_deployment()["spec"]["template"]
    container = _gateway_container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true"
    assert int(notes["prometheus.io/port"]) == ports["http"]
    assert notes["prometheus.io/path"] == "/metrics"
    # Without the operator: Kubernetes service discovery by pod, kept by the pod's labels.
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus-kubernetes.yml").read_text())
    [job] = config["scrape_configs"]
    assert [sd["role"] for sd in job["kubernetes_sd_configs"]] == ["pod"]
    assert "static_configs" not in job
    keeps = {
        tuple(r["source_labels"]): r["regex"]
        for r in job["relabel_configs"]
        if r.get("action") == "keep"
    }
    assert keeps[("__meta_kubernetes_pod_label_app",)] == pod["metadata"]["labels"]["app"]
    assert keeps[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)] == "true"
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"__address__", "__metrics_path__", "pod"} <= targets
    # With the operator: a PodMonitor on the same pods' named port.
    [monitor] = [d for d in _kube_docs() if d["kind"] == "PodMonitor"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert _selects(monitor["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["http"]


def test_compose_runs_two_replicas_on_the_two_redis_roles(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    gateways = {n: s for n, s in services.items() if s.get("image") == "edge-gateway:latest"}
    assert len(gateways) >= 2
    volumes = set()
    for name, svc in gateways.items():
        env = svc["environment"]
        assert svc["read_only"] is True
        state = [v for v in svc["volumes"] if v.endswith(":" + env["GATEWAY_STATE__DIR"])]
        assert len(state) == 1, name
        volumes.add(state[0].split(":")[0])
        assert urlsplit(env["GATEWAY_CACHE__REDIS_URL"]).hostname == "redis-cache"
        assert urlsplit(env["GATEWAY_LIMITS__REDIS_URL"]).hostname == "redis-state"
        assert urlsplit(env["GATEWAY_STATE__REDIS_URL"]).hostname == "redis-state"
        assert int(env["GATEWAY_STATE__REPLICAS"]) == len(gateways)
    assert len(volumes) == len(gateways)  # one state volume each: SQLite files are never shared
    _check_cache_redis(_redis_config(services["redis-cache"]["command"]))
    state_redis = _redis_config(services["redis-state"]["command"])
    _check_state_redis(state_redis)
    assert any(v.endswith(":" + state_redis["dir"]) for v in services["redis-state"]["volumes"])
    # The balancer spreads over every replica; Prometheus scrapes each, not the balancer.
    nginx = (DEPLOY / "nginx" / "nginx.conf").read_text()
    assert set(re.findall(r"^\s*server (\S+):8080", nginx, re.M)) == set(gateways)
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = prom["scrape_configs"]
    [static] = job["static_configs"]
    assert sorted(static["targets"]) == sorted(f"{n}:8080" for n in gateways)
    # and promtool takes the scrape config (rule file paths made local for the check)
    text = (DEPLOY / "prometheus" / "prometheus.yml").read_text()
    local = tmp_path / "prometheus.yml"
    local.write_text(
        text.replace("/etc/prometheus/alerts.yml", str(DEPLOY / "prometheus" / "alerts.yml"))
    )
    proc = subprocess.run(
        [_promtool(), "check", "config", str(local)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _dockerfile_env() -> dict[str, str]:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.M):
        env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def test_image_gives_its_non_root_user_a_writable_state_volume() -> None:
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    state_dir = _dockerfile_env()["GATEWAY_STATE__DIR"]
    assert re.search(rf'^VOLUME \["{re.escape(state_dir)}"\]', text, re.M)
    assert re.search(rf"mkdir -p {re.escape(state_dir)}\b", text)
    assert re.search(rf"chown gateway:gateway {re.escape(state_dir)}\b", text)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1] == "gateway"
    # The code and policies are not the gateway user's to change.
    assert "--chown=gateway" not in text


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read(DEPLOY / "systemd" / "edge-gateway.service")
    return unit


def _unit_env(text: str) -> dict[str, str]:
    return dict(re.findall(r"^Environment=(\w+)=(\S+)$", text, re.M))


def test_systemd_unit_has_a_state_directory_under_a_read_only_system() -> None:
    text = (DEPLOY / "systemd" / "edge-gateway.service").read_text()
    service = _unit()["Service"]
    assert service["ProtectSystem"] == "strict"
    name = service["StateDirectory"]
    # %S is /var/lib for a system unit: the directory systemd made writable for the user.
    assert _unit_env(text)["GATEWAY_STATE__DIR"] == f"%S/{name}"
    read_only = service["ReadOnlyPaths"].split()
    assert not any(f"/var/lib/{name}".startswith(p) for p in read_only)


def _setting_env_names(model: Any, prefix: str = "GATEWAY") -> set[str]:
    """Every GATEWAY_* name Settings reads: sections, nested sections and their fields."""
    from pydantic import BaseModel

    names = set()
    # Walked over values, as config_doc.py does: a nested section's annotation may still be a
    # forward reference, its default is the model itself.
    for field in type(model).model_fields:
        name = f"{prefix}_{field.upper()}" if prefix == "GATEWAY" else f"{prefix}__{field.upper()}"
        names.add(name)
        value = getattr(model, field)
        if isinstance(value, BaseModel):
            names |= _setting_env_names(value, name)
    return names


def test_every_gateway_variable_the_deploys_set_is_a_real_setting() -> None:
    real = _setting_env_names(Settings.model_construct())
    assert {"GATEWAY_STATE__DIR", "GATEWAY_LOCAL__EMBEDDING__MODEL_PATH"} <= real
    named: dict[str, set[str]] = {}

    def add(where: str, names: Any) -> None:
        for n in names:
            if n.startswith("GATEWAY_"):
                named.setdefault(n, set()).add(where)

    for doc in _kube_docs():
        if doc["kind"] == "Secret":
            add("kubernetes secret", doc["stringData"])
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                add(f"kubernetes {doc['metadata']['name']}", (e["name"] for e in c.get("env", [])))
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for name, svc in compose["services"].items():
        add(f"compose {name}", svc.get("environment", {}))
    add("Dockerfile", _dockerfile_env())
    add("systemd", _unit_env((DEPLOY / "systemd" / "edge-gateway.service").read_text()))
    # ...and in the deploy guide's prose
    add("deploy/README.md", re.findall(r"\bGATEWAY_[A-Z0-9_]+", (DEPLOY / "README.md").read_text()))
    assert len(named) >= 8
    unknown = {n: sorted(w) for n, w in named.items() if n not in real}
    assert not unknown, unknown
