"""The telemetry outbox: routing records kept on the box and shipped as OTLP/HTTP JSON logs.

The shipper itself runs against a fake OpenTelemetry Collector (tests/fakes/otlp.py) in the
test's loop; the gateway tests put real requests (fake cloud, real local model) through a
real gateway, in-process and as a process that is stopped and started again.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from gateway.metrics import Metrics
from gateway.settings import SettingsError, TelemetrySettings, load_settings
from gateway.telemetry import Outbox
from gateway.telemetry.otlp import any_value
from tests.conftest import GatewayProcess, cloud_settings, until
from tests.fakes.cloud import FakeCloud
from tests.fakes.otlp import FakeCollector

MARKER = "zebra-quokka-7731"  # in every prompt; must never reach the collector


@pytest.fixture
async def collector() -> AsyncIterator[FakeCollector]:
    c = await FakeCollector().start()
    yield c
    await c.stop()


def fast(c: FakeCollector, tmp_path: Path, **kw: Any) -> TelemetrySettings:
    base: dict[str, Any] = {
        "endpoint": c.endpoint,
        "store_path": tmp_path / "outbox.sqlite",
        "flush_interval_s": 0.05,
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.1,
        "timeout_s": 2.0,
    }
    return TelemetrySettings(**{**base, **kw})


def check_otlp(batch: dict[str, Any]) -> None:
    """The batch is an ExportLogsServiceRequest in OTLP's JSON mapping."""
    # opentelemetry-proto's own message: an unknown or misspelt field fails to parse.
    json_format.Parse(json.dumps(batch), ExportLogsServiceRequest())

    def keys(node: Any) -> None:  # the JSON mapping's field names are lowerCamelCase
        if isinstance(node, dict):
            for k, v in node.items():
                assert re.fullmatch(r"[a-z][a-zA-Z]*", k), k
                keys(v)
        elif isinstance(node, list):
            for v in node:
                keys(v)

    keys(batch)
    for rl in batch["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for lr in sl["logRecords"]:
                ts = lr["timeUnixNano"]
                assert isinstance(ts, str) and ts.isdigit()  # int64: a decimal string
                assert abs(int(ts) / 1e9 - time.time()) < 600
                assert lr["severityText"] in ("INFO", "WARN", "ERROR")
                assert isinstance(lr["severityNumber"], int)
                assert "stringValue" in lr["body"]


def rec(n: int) -> dict[str, Any]:
    return {"time_unix_nano": time.time_ns(), "request_id": f"r{n}", "route": "local"}


async def started(settings: TelemetrySettings, **kw: Any) -> tuple[Outbox, Metrics]:
    metrics = Metrics()
    box = Outbox(settings, metrics, **kw)
    await box.start()
    return box, metrics


def sample(m: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    v = m.registry.get_sample_value(name, labels or {})
    return 0.0 if v is None else v


# -- the shipper against the fake collector ----------------------------------------------------


async def test_ships_in_order_once_in_batches(collector: FakeCollector, tmp_path: Path) -> None:
    box, m = await started(fast(collector, tmp_path, batch_size=4))
    for i in range(10):
        box.add(rec(i))
    await until(lambda: len(collector.records()) == 10)
    assert collector.request_ids() == [f"r{i}" for i in range(10)]
    assert all(
        len(b["resourceLogs"][0]["scopeLogs"][0]["logRecords"]) <= 4 for b in collector.batches
    )
    for b in collector.batches:
        check_otlp(b)
    await until(lambda: box.depth() == 0)
    assert sample(m, "edge_gateway_telemetry_shipped_records_total") == 10
    assert set(collector.encodings) == {"gzip"}  # the default
    assert sample(m, "edge_gateway_telemetry_last_success_timestamp_seconds") > time.time() - 60
    await box.close()
    assert collector.request_ids() == [f"r{i}" for i in range(10)]  # nothing sent twice


async def test_outage_of_any_length_then_all_arrive_once_in_order(
    collector: FakeCollector, tmp_path: Path
) -> None:
    await collector.set_mode("down")
    box, m = await started(fast(collector, tmp_path, batch_size=3))
    for i in range(7):
        box.add(rec(i))
    await until(
        lambda: (
            sample(m, "edge_gateway_telemetry_send_failures_total", {"cause": "unreachable"}) >= 5
        )
    )
    assert box.depth() == 7 and collector.batches == []
    await collector.set_mode("unavailable")  # back, but shedding load (503, Retry-After: 0)
    await until(
        lambda: sample(m, "edge_gateway_telemetry_send_failures_total", {"cause": "5xx"}) >= 3
    )
    for i in range(7, 9):
        box.add(rec(i))
    assert collector.batches == []
    await collector.set_mode("up")
    await until(lambda: len(collector.records()) == 9)
    await until(lambda: box.depth() == 0)
    assert collector.request_ids() == [f"r{i}" for i in range(9)]
    assert sample(m, "edge_gateway_telemetry_shipped_records_total") == 9
    assert sample(m, "edge_gateway_telemetry_dropped_records_total", {"reason": "cap"}) == 0
    await box.close()


async def test_a_refused_batch_is_dropped_and_counted_not_retried_forever(
    collector: FakeCollector, tmp_path: Path
) -> None:
    await collector.set_mode("reject")
    box, m = await started(fast(collector, tmp_path, batch_size=5))
    for i in range(3):
        box.add(rec(i))
    await until(lambda: box.depth() == 0)
    assert sample(m, "edge_gateway_telemetry_dropped_records_total", {"reason": "rejected"}) == 3
    assert collector.attempts == 1  # a 400 is final: no retries
    await collector.set_mode("up")
    box.add(rec(3))
    await until(lambda: collector.request_ids() == ["r3"])  # the queue is not blocked
    await box.close()


async def test_cap_drops_the_oldest_and_counts(collector: FakeCollector, tmp_path: Path) -> None:
    await collector.set_mode("down")
    box, m = await started(fast(collector, tmp_path, cap=4))
    dropped = "edge_gateway_telemetry_dropped_records_total"
    for i in range(6):
        box.add(rec(i))
        # The writer stores them one by one: each on disk (or dropped for it) before the next.
        await until(
            lambda i=i: (
                box.log is not None
                and len(box.log) + sample(m, dropped, {"reason": "cap"}) == i + 1
            ),
            f"record {i} to be written",
        )
    await until(
        lambda: sample(m, "edge_gateway_telemetry_dropped_records_total", {"reason": "cap"}) == 2
    )
    assert box.depth() == 4
    await collector.set_mode("up")
    await until(lambda: len(collector.records()) == 4)
    assert collector.request_ids() == ["r2", "r3", "r4", "r5"]
    await box.close()


async def test_rows_left_by_a_previous_run_ship_first(
    collector: FakeCollector, tmp_path: Path
) -> None:
    await collector.set_mode("down")
    settings = fast(collector, tmp_path)
    box, _ = await started(settings)
    for i in range(3):
        box.add(rec(i))
    await box.final_flush(0.5)  # the receiver is down: the rows stay on disk
    await box.close()
    assert collector.batches == []
    await collector.set_mode("up")
    box, _ = await started(settings)
    box.add(rec(3))
    await until(lambda: len(collector.records()) == 4)
    assert collector.request_ids() == ["r0", "r1", "r2", "r3"]
    await box.close()


async def test_final_flush_ships_what_is_left_on_shutdown(
    collector: FakeCollector, tmp_path: Path
) -> None:
    box, _ = await started(
        fast(collector, tmp_path, flush_interval_s=3600, batch_size=2, compression="none")
    )
    for i in range(5):
        box.add(rec(i))
    await box.final_flush(5.0)
    assert collector.request_ids() == [f"r{i}" for i in range(5)]
    assert box.depth() == 0
    assert set(collector.encodings) == {""}  # compression: none
    await box.close()


async def test_a_hanging_receiver_times_out_and_is_retried(
    collector: FakeCollector, tmp_path: Path
) -> None:
    await collector.set_mode("hang")
    box, m = await started(fast(collector, tmp_path, timeout_s=0.2))
    box.add(rec(0))
    await until(
        lambda: (
            sample(m, "edge_gateway_telemetry_send_failures_total", {"cause": "unreachable"}) >= 2
        )
    )
    await collector.set_mode("up")
    await until(lambda: "r0" in collector.request_ids())
    await box.close()


async def test_retry_after_is_honoured(collector: FakeCollector, tmp_path: Path) -> None:
    collector.retry_after = "1"
    await collector.set_mode("unavailable")
    box, _ = await started(fast(collector, tmp_path, backoff_base_s=0.01, backoff_max_s=5))
    box.add(rec(0))
    await until(lambda: collector.attempts == 1)
    await asyncio.sleep(0.6)
    assert collector.attempts == 1  # backoff alone would have tried again within 0.01 s
    await collector.set_mode("up")
    await until(lambda: collector.request_ids() == ["r0"])
    await box.close()


async def test_waits_while_the_uplink_is_down(collector: FakeCollector, tmp_path: Path) -> None:
    up = False
    box, _ = await started(fast(collector, tmp_path), reachable=lambda: up)
    box.add(rec(0))
    await asyncio.sleep(0.5)
    assert collector.attempts == 0  # no sends spent on a link the breakers say is down
    up = True
    # Delivered and removed: close() between the receiver's 2xx and the delete would leave r0
    # for the next start to send again (at-least-once), and the second half would see it twice.
    await until(
        lambda: collector.request_ids() == ["r0"] and box.log is not None and not len(box.log)
    )
    await box.close()
    # wait_for_cloud off: the receiver's own answers decide
    box, _ = await started(fast(collector, tmp_path, wait_for_cloud=False), reachable=lambda: False)
    box.add(rec(1))
    await until(lambda: collector.request_ids() == ["r0", "r1"])
    await box.close()


async def test_headers_from_env_and_resource_attributes(
    collector: FakeCollector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("OTLP_TEST_AUTH", "Bearer otlp-secret-4242")
    settings = fast(
        collector,
        tmp_path,
        headers_env={"Authorization": "OTLP_TEST_AUTH", "X-Unset": "OTLP_NOT_SET"},
        service_name="box-gw",
        resource_attributes={"host.name": "box-17"},
    )
    box, m = await started(settings)
    await collector.set_mode("down")
    box.add(rec(0))
    failures = "edge_gateway_telemetry_send_failures_total"
    await until(lambda: sample(m, failures, {"cause": "unreachable"}) >= 1, "a failed send")
    await collector.set_mode("up")
    await until(lambda: len(collector.records()) == 1)
    assert collector.headers[0]["Authorization"] == "Bearer otlp-secret-4242"
    assert "X-Unset" not in collector.headers[0]
    resource = collector.batches[0]["resourceLogs"][0]["resource"]["attributes"]
    assert {"key": "service.name", "value": {"stringValue": "box-gw"}} in resource
    assert {"key": "host.name", "value": {"stringValue": "box-17"}} in resource
    await box.close()
    assert "otlp-secret-4242" not in caplog.text


async def test_records_name_their_instance_and_carry_a_gateway_made_id(
    collector: FakeCollector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two replicas (pods) ship to one collector: each batch says which one sent it, and each
    # record has an id of its own although both clients chose the same request id.
    from gateway.telemetry.record import routing_record

    boxes = []
    for pod in ("gw-7d9f-a", "gw-7d9f-b"):
        monkeypatch.setenv("HOSTNAME", pod)  # what Kubernetes sets in every container
        box, _ = await started(fast(collector, tmp_path / pod))
        box.add(routing_record({"request_id": "same", "route": "local"}, None, local_model="m"))
        boxes.append(box)
        await until(lambda: len(collector.batches) == len(boxes))
    for batch in collector.batches:
        check_otlp(batch)
    instances = [
        {a["key"]: a["value"] for a in b["resourceLogs"][0]["resource"]["attributes"]}[
            "service.instance.id"
        ]
        for b in collector.batches
    ]
    assert instances == [{"stringValue": "gw-7d9f-a"}, {"stringValue": "gw-7d9f-b"}]
    records = collector.records()
    assert [r["gateway.request_id"] for r in records] == ["same", "same"]
    uids = [r["log.record.uid"] for r in records]
    assert len(set(uids)) == 2 and all(re.fullmatch(r"[0-9a-f]{32}", u) for u in uids)
    assert not any("gateway.record_uid" in r for r in records)  # one name for it, not two
    for box in boxes:
        await box.close()


def test_instance_id_from_setting_pod_or_host(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    monkeypatch.setenv("POD_NAME", "pod-1")
    monkeypatch.setenv("HOSTNAME", "host-1")
    assert TelemetrySettings().resource()["service.instance.id"] == "pod-1"
    assert TelemetrySettings(instance_id="box-17").resource()["service.instance.id"] == "box-17"
    explicit = TelemetrySettings(resource_attributes={"service.instance.id": "r"}).resource()
    assert explicit["service.instance.id"] == "r"  # an explicit resource attribute wins
    monkeypatch.delenv("POD_NAME")
    assert TelemetrySettings().resource()["service.instance.id"] == "host-1"
    monkeypatch.delenv("HOSTNAME")
    assert TelemetrySettings().resource()["service.instance.id"] == socket.gethostname()
    env = load_settings(telemetry={"instance_id": "x"})  # and as a setting of the whole
    assert env.telemetry.resource()["service.instance.id"] == "x"


def test_a_record_sent_twice_keeps_its_id() -> None:
    # The id is made once, when the record is, and stored with it: a batch re-sent after a
    # lost answer (or a restart) repeats the same ids, which is what lets the far side drop it.
    from gateway.telemetry import otlp
    from gateway.telemetry.record import routing_record

    r = routing_record({"request_id": "x"}, None, local_model="m")
    first = otlp.log_record(json.loads(json.dumps(r)))  # as it comes back from SQLite
    again = otlp.log_record(json.loads(json.dumps(r)))
    uid = [a for a in first["attributes"] if a["key"] == "log.record.uid"]
    assert uid and uid == [a for a in again["attributes"] if a["key"] == "log.record.uid"]
    other = routing_record({"request_id": "x"}, None, local_model="m")
    assert other["record_uid"] != r["record_uid"]


def test_any_value_follows_the_json_mapping() -> None:
    assert any_value(True) == {"boolValue": True}
    assert any_value(7) == {"intValue": "7"}
    assert any_value(0.5) == {"doubleValue": 0.5}
    assert any_value("x") == {"stringValue": "x"}
    assert any_value(["a", 1]) == {
        "arrayValue": {"values": [{"stringValue": "a"}, {"intValue": "1"}]}
    }
    assert any_value({"k": None, "j": False}) == {
        "kvlistValue": {"values": [{"key": "j", "value": {"boolValue": False}}]}
    }


def test_endpoint_settings(tmp_path: Path) -> None:
    assert TelemetrySettings().logs_url() is None
    assert TelemetrySettings(endpoint="").logs_url() is None
    assert TelemetrySettings(endpoint="http://c:4318").logs_url() == "http://c:4318/v1/logs"
    assert TelemetrySettings(endpoint="http://c:4318/").logs_url() == "http://c:4318/v1/logs"
    assert TelemetrySettings(endpoint="https://c/v1/logs").logs_url() == "https://c/v1/logs"
    with pytest.raises(SettingsError, match=r"telemetry\.endpoint"):
        load_settings(telemetry={"endpoint": "collector:4318"})
    with pytest.raises(SettingsError, match=r"telemetry\.cap"):
        load_settings(telemetry={"cap": 0})


def test_without_an_endpoint_nothing_is_stored(tmp_path: Path) -> None:
    from gateway.app import create_app
    from gateway.services import SERVICES

    store = tmp_path / "outbox.sqlite"
    app = create_app(load_settings(telemetry={"store_path": store}))
    assert app[SERVICES].outbox is None
    assert not store.exists()


# -- a real gateway ----------------------------------------------------------------------------


async def _post(s: aiohttp.ClientSession, url: str, rid: str, body: dict[str, Any]) -> int:
    async with s.post(f"{url}/chat/completions", json=body, headers={"x-request-id": rid}) as r:
        await r.read()
        return r.status


def _chat(model: str, **kw: Any) -> dict[str, Any]:
    content = f"Say hi. {MARKER}"
    return {"model": model, "messages": [{"role": "user", "content": content}], **kw}


async def test_gateway_ships_one_record_per_request_and_never_text(
    gateway_factory: Any,
    fake_cloud: FakeCloud,
    collector: FakeCollector,
    tmp_path: Path,
    caplog: Any,
) -> None:
    gw = await gateway_factory(
        **cloud_settings(fake_cloud),
        telemetry=fast(collector, tmp_path, batch_size=2).model_dump(),
        # Text captured for the log and the page must still never reach telemetry.
        server={"log_bodies": True},
        ui={"show_prompts": True},
    )
    caplog.set_level("INFO")
    sent = [
        ("t-0", _chat("gpt-fake", temperature=0), 200),
        ("t-1", _chat("gpt-fake", temperature=0), 200),  # the cache answers
        ("t-2", _chat("local", max_tokens=2), 200),
        ("t-3", _chat("gpt-fake", stream=True), 200),
        ("t-4", _chat("no-such-model"), 404),
    ]
    async with aiohttp.ClientSession() as s:
        for rid, body, status in sent:
            assert await _post(s, gw.base_url, rid, body) == status
        await until(lambda: len(collector.records()) == len(sent))
        async with s.get(f"{gw.url}/metrics") as r:
            text = await r.text()
    assert collector.request_ids() == [rid for rid, _, _ in sent]
    for batch in collector.batches:
        check_otlp(batch)
    # the text was there to leak (the request log holds it: log_bodies) ...
    assert any(MARKER in str(getattr(r, "prompt", "")) for r in caplog.records)
    assert not any(MARKER.encode() in b for b in collector.bodies)  # ... and did not
    recs = {r["gateway.request_id"]: r for r in collector.records()}
    assert recs["t-0"]["gateway.route"] == "cloud" and recs["t-0"]["gateway.status"] == 200
    assert recs["t-0"]["gateway.model"] == "gpt-fake"
    assert recs["t-0"]["gateway.prompt_tokens"] > 0
    assert recs["t-1"]["gateway.route"] == "cache" and recs["t-1"]["gateway.cache"] == "hit"
    assert recs["t-1"]["gateway.model"] == "gpt-fake"
    assert recs["t-2"]["gateway.route"] == "local"
    assert recs["t-2"]["gateway.model"] == "smollm2-135m-instruct"
    assert recs["t-2"]["gateway.completion_tokens"] >= 1
    assert recs["t-2"]["gateway.escalated"] is False
    # the GGUF that answered, as the x-gateway-model-file header names it
    assert re.fullmatch(r"[0-9a-f]{12}", recs["t-2"]["gateway.model_sha256"])
    assert recs["t-3"]["gateway.ttft_ms"] is not None
    assert recs["t-4"]["gateway.status"] == 404 and recs["t-4"]["gateway.route"] == "none"
    features = recs["t-0"]["gateway.features"]
    assert features["cloud_reachable"] is True and features["needs"] == []
    for rec_ in recs.values():
        assert isinstance(rec_["gateway.latency_ms"], float)
    # the figures on /metrics, and promtool accepts the exposition
    assert "edge_gateway_telemetry_shipped_records_total 5.0" in text
    assert "edge_gateway_telemetry_outbox_depth 0.0" in text
    assert 'edge_gateway_telemetry_dropped_records_total{reason="cap"} 0.0' in text
    assert 'edge_gateway_telemetry_dropped_records_total{reason="rejected"} 0.0' in text
    last = re.search(r"^edge_gateway_telemetry_last_success_timestamp_seconds (\S+)$", text, re.M)
    assert last and float(last.group(1)) > time.time() - 600
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool missing: `make test` installs it (Debian package prometheus)")
    proc = await asyncio.to_thread(
        subprocess.run,
        [promtool, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


async def test_an_unusable_store_never_stops_the_gateway(
    gateway_factory: Any, collector: FakeCollector, tmp_path: Path, caplog: Any
) -> None:
    from gateway.services import SERVICES

    (tmp_path / "file").write_text("")  # a file where the store's folder should be
    gw = await gateway_factory(
        telemetry=fast(collector, tmp_path, store_path=tmp_path / "file" / "o.sqlite").model_dump()
    )
    assert gw.app[SERVICES].outbox is None
    assert "running without telemetry" in caplog.text
    assert "telemetry.store_path, under state.dir" in caplog.text  # which file, which setting
    async with aiohttp.ClientSession() as s:
        assert await _post(s, gw.base_url, "u-0", _chat("local", max_tokens=1)) == 200


def _get(url: str, rid: str) -> None:
    body = json.dumps(_chat("local", max_tokens=1)).encode()
    req = urllib.request.Request(
        f"{url}/chat/completions",
        data=body,
        headers={"Content-Type": "application/json", "x-request-id": rid},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.status == 200


def _stored(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT body FROM records ORDER BY id").fetchall()
    return [json.loads(b)["request_id"] for (b,) in rows]


def _metric(url: str, name: str) -> float:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, name
    return float(m.group(1))


def _wait(cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_gateway_restart_ships_rows_left_on_disk_once_in_order(tmp_path: Path) -> None:
    collector = FakeCollector(mode="down").start_in_thread()
    store = tmp_path / "outbox.sqlite"
    env = {
        "GATEWAY_TELEMETRY__ENDPOINT": collector.endpoint,
        "GATEWAY_TELEMETRY__STORE_PATH": str(store),
        "GATEWAY_TELEMETRY__FLUSH_INTERVAL_S": "0.1",
        "GATEWAY_TELEMETRY__BACKOFF_BASE_S": "0.05",
        "GATEWAY_TELEMETRY__BACKOFF_MAX_S": "0.2",
        "GATEWAY_SERVER__SHUTDOWN_GRACE_S": "10",
    }
    try:
        # 1. The uplink is down: records wait on disk, and SIGTERM's last flush cannot ship.
        gp = GatewayProcess(env=env)
        try:
            gp.wait_ready()
            for i in range(3):
                _get(gp.base_url, f"p-{i}")
            _wait(lambda: _metric(gp.url, "edge_gateway_telemetry_outbox_depth") == 3)
        finally:
            gp.stop()
        assert gp.proc.returncode == 0
        assert collector.batches == [] and _stored(store) == ["p-0", "p-1", "p-2"]

        # 2. The uplink is back: a new process ships the old rows first, then its own.
        collector.set_mode_threadsafe("up")
        gp = GatewayProcess(env=env)
        try:
            gp.wait_ready()
            _wait(lambda: collector.request_ids() == ["p-0", "p-1", "p-2"])
            _get(gp.base_url, "p-3")
            _wait(lambda: len(collector.request_ids()) == 4)
        finally:
            gp.stop()

        # 3. Batches that would wait an hour still leave on SIGTERM (the last flush).
        gp = GatewayProcess(env={**env, "GATEWAY_TELEMETRY__FLUSH_INTERVAL_S": "3600"})
        try:
            gp.wait_ready()
            for i in range(4, 6):
                _get(gp.base_url, f"p-{i}")
            time.sleep(0.3)
            assert len(collector.request_ids()) == 4
        finally:
            gp.stop()
        assert collector.request_ids() == [f"p-{i}" for i in range(6)]  # in order, each once
        assert _stored(store) == []
    finally:
        collector.stop_thread()
