"""Routing records as an OTLP/HTTP JSON logs export request.

The shape follows opentelemetry-proto's `ExportLogsServiceRequest` in the protobuf JSON
mapping that OTLP/HTTP JSON uses: lowerCamelCase field names, 64-bit integers (times,
`intValue`) as decimal strings, enums as numbers, attribute values as `AnyValue` objects.
A stock OpenTelemetry Collector's `otlp` receiver accepts it on `POST /v1/logs` with
`Content-Type: application/json`. Written by hand (a few lines) rather than through the
protobuf runtime, which an edge box does not otherwise need; the tests parse every batch
with opentelemetry-proto to hold this module to the schema.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SCOPE_NAME = "edge_gateway.routing"
EVENT_NAME = "edge_gateway.routing_record"
ATTR_PREFIX = "gateway."
# The record's own id, under OpenTelemetry's semantic-convention name: "other log records with
# the same id will be considered duplicates and can be removed safely". Made by the gateway,
# unlike `gateway.request_id`, which a client may choose (and reuse).
RECORD_UID = "record_uid"
RECORD_UID_ATTR = "log.record.uid"
_SEVERITY = {"INFO": 9, "WARN": 13, "ERROR": 17}  # SeverityNumber: INFO, WARN, ERROR


def any_value(v: Any) -> dict[str, Any]:
    """A Python value as an OTLP AnyValue (exactly one of its fields set)."""
    if isinstance(v, bool):  # before int: bool is an int in Python
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}  # int64: a string in the protobuf JSON mapping
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, Mapping):
        return {"kvlistValue": {"values": key_values(v)}}
    if isinstance(v, Sequence):
        return {"arrayValue": {"values": [any_value(x) for x in v if x is not None]}}
    return {"stringValue": str(v)}


def key_values(attrs: Mapping[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """KeyValue list; None values are left out (an attribute is absent, not empty)."""
    return [{"key": prefix + k, "value": any_value(v)} for k, v in attrs.items() if v is not None]


def _severity(record: Mapping[str, Any]) -> str:
    status = record.get("status")
    if isinstance(status, int) and status >= 500:
        return "ERROR"
    if (isinstance(status, int) and status >= 400) or record.get("degraded"):
        return "WARN"
    return "INFO"


def log_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """One routing record as an OTLP LogRecord: the fields become `gateway.*` attributes."""
    ts = str(int(record.get("time_unix_nano") or 0))
    fields = {k: v for k, v in record.items() if k not in ("time_unix_nano", RECORD_UID)}
    severity = _severity(record)
    attributes = key_values({RECORD_UID_ATTR: record.get(RECORD_UID)})
    return {
        "timeUnixNano": ts,
        "observedTimeUnixNano": ts,
        "severityNumber": _SEVERITY[severity],
        "severityText": severity,
        "eventName": EVENT_NAME,
        "body": {"stringValue": f"routed {record.get('route')} by rule {record.get('rule')}"},
        "attributes": attributes + key_values(fields, ATTR_PREFIX),
    }


def export_request(
    records: Iterable[Mapping[str, Any]],
    *,
    service_name: str,
    resource_attributes: Mapping[str, str],
    version: str,
) -> dict[str, Any]:
    """An ExportLogsServiceRequest holding `records` in order, under one resource and scope."""
    resource = {"service.name": service_name, **resource_attributes}
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": key_values(resource)},
                "scopeLogs": [
                    {
                        "scope": {"name": SCOPE_NAME, "version": version},
                        "logRecords": [log_record(r) for r in records],
                    }
                ],
            }
        ]
    }


def encode(request: Mapping[str, Any]) -> bytes:
    return json.dumps(request, separators=(",", ":")).encode()


def rejected_in(body: bytes) -> tuple[int, str]:
    """From a 2xx answer: how many records the receiver rejected (OTLP partial success)."""
    try:
        partial = json.loads(body or b"{}").get("partialSuccess") or {}
        return int(partial.get("rejectedLogRecords") or 0), str(partial.get("errorMessage") or "")
    except (ValueError, TypeError, AttributeError):
        return 0, ""  # a 2xx with a body we cannot read still means accepted
