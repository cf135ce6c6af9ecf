"""The /admin/status and /admin/routing-curve operations of /openapi.json: what the status page
reads."""

from __future__ import annotations

from .openapi_parts import errors, json_body, obj

_NUM = {"type": ["number", "null"]}
_STR = {"type": ["string", "null"]}
_COUNTS = obj(
    "requests",
    "routes",
    "rules",
    requests={"type": "integer"},
    errors={"type": "integer"},
    routes={"type": "object", "additionalProperties": {"type": "integer"}},
    rules={"type": "object", "additionalProperties": {"type": "integer"}},
)
_STATUS = obj(
    "now",
    "uplink",
    "policy",
    "traffic",
    "cache",
    "local",
    "recent",
    now={"type": "number", "description": "Unix time of this snapshot"},
    started_at={"type": "number"},
    show_prompts={"type": "boolean"},
    uplink=obj(
        "reachable",
        "targets",
        reachable={"type": ["boolean", "null"], "description": "null: no cloud models"},
        targets={
            "type": "array",
            "items": obj(
                "name",
                "state",
                name={"type": "string"},
                model={"type": ["string", "null"], "description": "litellm model string"},
                tier={"type": "boolean", "description": "another edge-gateway (tier: true)"},
                state={"type": "string", "enum": ["closed", "open", "half_open"]},
                changed_at={**_NUM, "description": "last breaker transition (Unix time)"},
                change_reason=_STR,
                last_failure=_STR,
            ),
        },
    ),
    policy=obj(
        "file",
        "rules",
        "last_error",
        file={"type": "string"},
        default={"type": "string"},
        rules={"type": "array", "items": obj("name", "route")},
        loaded_at={"type": "number"},
        last_error={**_STR, "description": "why the last edit was rejected, if it was"},
    ),
    traffic=obj(
        "recent",
        "hour",
        "per_minute",
        last_minutes={"type": "integer"},
        recent=_COUNTS,
        hour=_COUNTS,
        per_minute={"type": "array", "items": {"type": "object"}, "maxItems": 60},
    ),
    cache=obj(
        "hit_rate",
        hit_rate={**_NUM, "description": "exact and semantic hits / look-ups, last hour"},
        semantic=obj(
            "enabled",
            "entries",
            "encoder",
            enabled={"type": "boolean", "description": "the policy's semantic_cache.enabled"},
            entries={"type": "integer", "description": "questions indexed on this replica"},
            encoder={"type": "string", "enum": ["unused", "loading", "ready", "failed"]},
        ),
        tokens_saved_hour={"type": "integer", "description": "cloud tokens answered by cache"},
        tokens_saved_total={"type": "integer"},
    ),
    local=obj(
        "model",
        "ready",
        model={"type": "string"},
        ready={"type": "boolean"},
        slots_busy={"type": "integer"},
        queue_depth={"type": "integer"},
        tokens_per_s=_NUM,
    ),
    recent={
        "type": "array",
        "description": "Newest first, from a bounded ring buffer (ui.recent_decisions). "
        "prompt and answer are null unless ui.show_prompts is on.",
        "items": obj(
            "time",
            "route",
            "rule",
            "status",
            time={"type": "number"},
            model=_STR,
            route={"type": "string"},
            rule={"type": "string"},
            reason=_STR,
            degraded={"type": "boolean"},
            latency_ms={"type": "number"},
            status={"type": "integer"},
            prompt=_STR,
            answer=_STR,
            upstream={
                "type": ["object", "null"],
                "description": "the hop below, when a tier answered (null otherwise)",
                "required": ["tier", "route", "degraded"],
                "properties": {
                    "tier": {"type": "string", "description": "this box's name for the tier"},
                    "route": {"type": "string", "enum": ["local", "cloud", "cache", "other"]},
                    "degraded": {"type": "boolean"},
                    "reason": _STR,
                    "cache": {"type": ["string", "null"], "enum": ["hit", "miss", "skip", None]},
                    "model_file": _STR,
                    "via": {**_STR, "description": "the tier's own tier, if any"},
                },
            },
        ),
    },
)
ADMIN_STATUS = {
    "get": {
        "operationId": "adminStatus",
        "description": (
            "What the status page at / shows. Needs the admin key when one is set; without one, "
            "served only over loopback. Holds no keys and no upstream URLs."
        ),
        "responses": {
            "200": json_body(_STATUS, "The gateway's state now and over the last hour"),
            **errors(401, 403),
        },
    }
}

_POINTS = {
    "type": "array",
    "items": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
}
_CURVE = obj(
    "enabled",
    "ready",
    enabled={"type": "boolean", "description": "learning.enabled"},
    ready={"type": "boolean", "description": "true: `series` holds the curves"},
    reason={"type": "string", "description": "why there is no curve yet"},
    labels={"type": "integer", "description": "trainable labels in the store"},
    min_labels={"type": "integer", "description": "learning.curve_min_labels"},
    positives={"type": "number"},
    scorer={"type": "string", "enum": ["shipped", "learned"]},
    series={
        "type": "object",
        "description": (
            "[share sent to the cloud, share of the cloud labels recovered] points: "
            "`policy scorer`, `prompt-length`, `random`"
        ),
        "additionalProperties": _POINTS,
    },
    apgr={"type": "object", "additionalProperties": {"type": "number"}},
    threshold={
        "type": ["object", "null"],
        "description": "where the policy's complexity threshold sits on the curve",
        "properties": {
            "complexity": {"type": "number"},
            "share": {"type": "number"},
            "recovered": {"type": "number"},
        },
    },
)
ADMIN_CURVE = {
    "get": {
        "operationId": "adminRoutingCurve",
        "description": (
            "The routing curve of the box's own labels (the label store) for the scorer in "
            "force, prompt length and random, and where the policy's threshold sits; drawn by "
            "the status page once the store holds learning.curve_min_labels labels. Same "
            "access as /admin/status."
        ),
        "responses": {
            "200": json_body(_CURVE, "The curve, or why there is none yet"),
            **errors(401, 403),
        },
    }
}
