"""The learning loop's Prometheus instruments, registered on the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from ..metrics import counter, gauge, register
from .labels import SOURCES

SKIP_REASONS = (
    "private",
    "not_auto",
    "needs",
    "hourly_cap",
    "offline",
    "rate_limited",
    "busy",
    "no_judge",
)
SHADOW_RESULTS = ("labelled", "unparsable", "failed", "no_answer")


class LearningMetrics:
    labels = counter(
        "labels{source}",
        "Labels stored, by source.",
    )
    dropped = counter(
        "labels_dropped",
        "Oldest labels dropped by the store's cap (learning.max_labels).",
    )
    stored = gauge(
        "store_labels",
        "Labels in the store now.",
    )
    shadow = counter(
        "shadow{result}",
        "Judgements (shadowed answers and cascade escalations), by result: labelled, "
        "unparsable verdict, failed, no answer.",
    )
    skipped = counter(
        "shadow_skipped{reason}",
        "Sampled local answers (and cascade escalations) not judged, by reason.",
    )
    paused = gauge(
        "shadow_paused",
        "1 while shadowing pauses after a 429 or an unreachable cloud.",
    )
    cloud_tokens = counter(
        "cloud_tokens{call,kind}",
        "Cloud tokens spent on learning, by call (answer, judge) and kind (prompt/completion).",
    )
    cloud_spend = counter(
        "cloud_spend_usd",
        "Estimated cost (USD) of the cloud calls made for learning.",
    )
    retrains = counter(
        "retrains{result,reason}",
        "Retrains on the box, by result (accepted, refused) and reason.",
    )
    top_key_share = gauge(
        "retrain_top_key_share",
        "Share of the last retrain's labels that came from its largest API key (tenant).",
    )
    feedback_refused = counter(
        "feedback_refused",
        "Feedback scores refused by learning.feedback_per_key_per_hour (429).",
    )

    def __init__(self, registry: CollectorRegistry) -> None:
        register(self, "edge_gateway_learning_", registry)
        for s in SOURCES:
            self.labels.labels(s)
        for r in SKIP_REASONS:
            self.skipped.labels(r)
        for r in SHADOW_RESULTS:
            self.shadow.labels(r)
        for call in ("answer", "judge"):
            for kind in ("prompt", "completion"):
                self.cloud_tokens.labels(call, kind)
