"""One request's routing record: what was decided and how it went, never what was said.

Built from an allow-list, never by copying the request log line: the log line may carry
prompt and answer text when an operator opts in (`server.log_bodies`), and text must never
leave the box through telemetry.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..routing.policy import CACHE, LOCAL
from .otlp import RECORD_UID

if TYPE_CHECKING:
    from ..dispatch import Outcome

# Fields of the request log line that are safe to ship (no free text).
_FROM_LINE = (
    "request_id",
    "path",
    "status",
    "route",
    "rule",
    "reason",
    "degraded",
    "cache",
    "prompt_tokens",
    "completion_tokens",
    "tokens_reused",
    "latency_ms",
    "ttft_ms",
    "tenant",
    "stream_error",
)


def routing_record(
    line: Mapping[str, Any],
    outcome: Outcome | None,
    *,
    local_model: str,
    model_sha256: str | None = None,
) -> dict[str, Any]:
    """The record shipped for one request.

    `model` is the model id that answered: the local model's name for the local route, and
    for a cache hit the cloud model whose stored answer it was.

    `model_sha256` is the sha256 of the GGUF file that answered, when the local backend can
    say which file that was; it stays None (and is left out of the OTLP attributes) until then.
    """
    # A gateway-made id per record: the receiver drops a batch sent twice (at-least-once
    # delivery) by it. The request id cannot serve: a client may send the same one twice.
    rec: dict[str, Any] = {"time_unix_nano": time.time_ns(), RECORD_UID: uuid.uuid4().hex}
    rec.update({k: line.get(k) for k in _FROM_LINE})
    if outcome is None:
        return rec
    f = outcome.features
    model = outcome.target
    if model == LOCAL:
        model = outcome.decision.model or local_model  # a named local model, else the default
    elif model == CACHE:
        model = outcome.decision.target
    rec.update(
        {
            "model_requested": f.model,
            "model": model,
            # the answering GGUF's sha256 (its first 12 hex digits, as x-gateway-model-file)
            "model_sha256": model_sha256 or outcome.model_file,
            "escalated": outcome.cascade is not None and outcome.cascade.escalated,
            "failovers": [f"{src}>{dst}:{cause}" for src, dst, cause in outcome.failovers],
            # the tier that answered and its own decision (routing words, no request text)
            "upstream": outcome.tier.as_dict() if outcome.tier is not None else None,
            "features": {
                "prompt_tokens": f.prompt_tokens,
                "complexity": round(f.complexity, 4),
                "complexity_reasons": list(f.complexity_reasons),
                "needs": list(f.needs),
                "pii": list(f.pii),  # kinds found (email, card...), never the data
                "exceeds_local_context": f.exceeds_local_context,
                "cloud_reachable": f.cloud_reachable,
                "local_queue_depth": f.local_queue_depth,
                "max_tokens": f.max_tokens,
            },
        }
    )
    return rec
