"""The learning loop's Prometheus instruments, registered on the app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from .store import SOURCES

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
    def __init__(self, registry: CollectorRegistry) -> None:
        p = "edge_gateway_learning_"
        self.labels = Counter(
            p + "labels", "Labels stored, by source.", ["source"], registry=registry
        )
        self.dropped = Counter(
            p + "labels_dropped",
            "Oldest labels dropped by the store's cap (learning.max_labels).",
            registry=registry,
        )
        self.stored = Gauge(p + "store_labels", "Labels in the store now.", registry=registry)
        self.shadow = Counter(
            p + "shadow",
            "Judgements (shadowed answers and cascade escalations), by result: labelled, "
            "unparsable verdict, failed, no answer.",
            ["result"],
            registry=registry,
        )
        self.skipped = Counter(
            p + "shadow_skipped",
            "Sampled local answers (and cascade escalations) not judged, by reason.",
            ["reason"],
            registry=registry,
        )
        self.paused = Gauge(
            p + "shadow_paused",
            "1 while shadowing pauses after a 429 or an unreachable cloud.",
            registry=registry,
        )
        self.cloud_tokens = Counter(
            p + "cloud_tokens",
            "Cloud tokens spent on learning, by call (answer, judge) and kind (prompt/completion).",
            ["call", "kind"],
            registry=registry,
        )
        self.cloud_spend = Counter(
            p + "cloud_spend_usd",
            "Estimated cost (USD) of the cloud calls made for learning.",
            registry=registry,
        )
        self.retrains = Counter(
            p + "retrains",
            "Retrains on the box, by result (accepted, refused) and reason.",
            ["result", "reason"],
            registry=registry,
        )
        self.top_key_share = Gauge(
            p + "retrain_top_key_share",
            "Share of the last retrain's labels that came from its largest API key (tenant).",
            registry=registry,
        )
        self.feedback_refused = Counter(
            p + "feedback_refused",
            "Feedback scores refused by learning.feedback_per_key_per_hour (429).",
            registry=registry,
        )
        for s in SOURCES:
            self.labels.labels(s)
        for r in SKIP_REASONS:
            self.skipped.labels(r)
        for r in SHADOW_RESULTS:
            self.shadow.labels(r)
        for call in ("answer", "judge"):
            for kind in ("prompt", "completion"):
                self.cloud_tokens.labels(call, kind)
