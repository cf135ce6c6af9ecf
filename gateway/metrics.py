"""Prometheus instruments, one registry per app so tests can build many apps side by side."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Latency buckets from sub-millisecond cache hits to minute-long local generations.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Tokens per llama_decode: single decodes up to full prefill chunks.
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        p = "edge_gateway_"
        self.requests = Counter(
            p + "requests",
            "Requests answered, by route, matched policy rule and status class.",
            ["route", "rule", "status_class"],
            registry=r,
        )
        self.duration = Histogram(
            p + "request_duration_seconds",
            "Time from request to last byte, by route.",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.overhead = Histogram(
            p + "overhead_seconds",
            "Time the gateway itself added: total minus backend time.",
            buckets=_OVERHEAD,
            registry=r,
        )
        self.ttft = Histogram(
            p + "time_to_first_token_seconds",
            "Time to the first streamed chunk, by route.",
            ["route"],
            buckets=_LATENCY,
            registry=r,
        )
        self.prompt_tokens = Counter(
            p + "prompt_tokens",
            "Prompt tokens of answered requests, by route.",
            ["route"],
            registry=r,
        )
        self.completion_tokens = Counter(
            p + "completion_tokens",
            "Completion tokens of answered requests, by route.",
            ["route"],
            registry=r,
        )
        self.cache_requests = Counter(
            p + "cache_requests",
            "Response cache outcomes: hit, miss or skip.",
            ["result"],
            registry=r,
        )
        self.cache_errors = Counter(
            p + "cache_errors", "Response cache store failures, by operation.", ["op"], registry=r
        )
        self.cache_up = Gauge(
            p + "cache_up",
            "1 while the response cache store answers, 0 while bypassed.",
            registry=r,
        )
        self.cloud_reachable = Gauge(
            p + "cloud_reachable",
            "1 while a cloud target is considered reachable.",
            ["target"],
            registry=r,
        )
        self.breaker_state = Gauge(
            p + "breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
            ["target"],
            registry=r,
        )
        self.local_queue_depth = Gauge(
            p + "local_queue_depth", "Requests waiting for the local model.", registry=r
        )
        self.local_in_flight = Gauge(
            p + "local_in_flight", "Requests the local model is generating for.", registry=r
        )
        self.local_queue_capacity = Gauge(
            p + "local_queue_capacity", "Requests that may wait for the local model.", registry=r
        )
        self.failovers = Counter(
            p + "failovers",
            "Moves to another target before the first byte, by cause.",
            ["from_target", "to_target", "cause"],
            registry=r,
        )
        self.tier_answers = Counter(
            p + "tier_answers",
            "Answers a tier (a `tier: true` cloud model, another edge-gateway) gave, by tier, "
            "the route the tier took (local, cloud, cache, other) and whether it was degraded.",
            ["tier", "upstream_route", "degraded"],
            registry=r,
        )
        self.policy_reloads = Counter(
            p + "policy_reloads", "Policy reload attempts, by result.", ["result"], registry=r
        )
        self.spend_avoided = Counter(
            p + "spend_avoided_usd",
            "Estimated cloud cost (USD, litellm's cost map) of answers served locally or cached.",
            ["route"],
            registry=r,
        )
        self.cloud_spend = Counter(
            p + "cloud_spend_usd", "Estimated cost (USD) of answers from the cloud.", registry=r
        )
        self.rate_limited = Counter(
            p + "rate_limited",
            "Requests refused by per-key limits, by reason.",
            ["reason"],
            registry=r,
        )
        self.limits_unenforced = Counter(
            p + "limits_unenforced",
            "Limit counters not reached in time (limits.timeout_s) or failing, by stage (admit,"
            " settle) and reason (timeout, error): with fail_mode=open admitted unchecked.",
            ["stage", "reason"],
            registry=r,
        )
        self.local_slots = Gauge(
            p + "local_slots",
            "Sequences the local model decodes together (local.parallel).",
            registry=r,
        )
        self.local_slots_busy = Gauge(
            p + "local_slots_busy", "Local model slots holding a request.", registry=r
        )
        self.local_batch_size = Histogram(
            p + "local_batch_size",
            "Tokens in each llama_decode call of the local engine (decode plus prefill).",
            buckets=_BATCH,
            registry=r,
        )
        self.local_prefill_tokens = Counter(
            p + "local_prefill_tokens", "Prompt tokens the local model computed.", registry=r
        )
        self.local_decode_tokens = Counter(
            p + "local_decode_tokens", "Generated tokens the local model decoded.", registry=r
        )
        self.local_tokens_reused = Counter(
            p + "local_tokens_reused",
            "Prompt tokens served from a slot's KV cache instead of being computed again.",
            registry=r,
        )
        self.telemetry_outbox_depth = Gauge(
            p + "telemetry_outbox_depth",
            "Routing records waiting in the telemetry outbox to be shipped.",
            registry=r,
        )
        self.telemetry_shipped = Counter(
            p + "telemetry_shipped_records",
            "Routing records the telemetry receiver accepted.",
            registry=r,
        )
        self.telemetry_dropped = Counter(
            p + "telemetry_dropped_records",
            "Routing records lost: cap (outbox full, oldest first) or rejected (receiver 4xx).",
            ["reason"],
            registry=r,
        )
        self.telemetry_send_failures = Counter(
            p + "telemetry_send_failures",
            "Failed telemetry batch sends, by cause (unreachable, 4xx, 5xx).",
            ["cause"],
            registry=r,
        )
        self.telemetry_last_success = Gauge(
            p + "telemetry_last_success_timestamp_seconds",
            "Unix time of the last batch the telemetry receiver accepted (0: none yet).",
            registry=r,
        )
        for reason in ("cap", "rejected"):
            self.telemetry_dropped.labels(reason)
        self.cascade_answers = Counter(
            p + "cascade_answers",
            "Answers of `route: cascade` rules, by outcome: kept (confident), escalated, "
            "degraded (unsure, cloud unreachable), private (unsure, never sent), stream_local, "
            "no_logprobs.",
            ["outcome"],
            registry=r,
        )
        self.cascade_escalations = Counter(
            p + "cascade_escalations",
            "Unsure local answers redone by the cloud, by the signal that failed.",
            ["reason"],
            registry=r,
        )
        self.cascade_escalated_local_tokens = Counter(
            p + "cascade_escalated_local_tokens",
            "Local tokens (prompt plus completion) spent on answers then discarded by escalation.",
            registry=r,
        )
        self.local_models_loaded = Gauge(
            p + "local_models_loaded", "Local models resident now (local.models).", registry=r
        )
        self.model_swaps = Counter(
            p + "model_swaps",
            "Model file changes at /admin/models by result (swapped, rolled_back, refused).",
            ["result"],
            registry=r,
        )
        self.local_file_requests = Counter(
            p + "local_file_requests",
            "Requests per local model name and file (sha256 prefix): canary against current.",
            ["model", "file"],
            registry=r,
        )
        self.model_unloads = Counter(
            p + "model_unloads",
            "Local models unloaded, by why (lru, keep_alive).",
            ["why"],
            registry=r,
        )
        self.embedding_requests = Counter(
            p + "embedding_requests",
            "Embedding requests answered, by route (local, cloud, or cache for all inputs).",
            ["route"],
            registry=r,
        )
        self.embedding_inputs = Counter(
            p + "embedding_inputs",
            "Inputs embedded, by route (cache: served from the per-input cache).",
            ["route"],
            registry=r,
        )
        self.embedding_tokens = Counter(
            p + "embedding_tokens", "Tokens of embedded inputs, by route.", ["route"], registry=r
        )
        self.connections_open = Gauge(
            p + "connections_open", "Client HTTP connections open now.", registry=r
        )
        self.connections_dropped = Counter(
            p + "connections_dropped",
            "Connections refused at a cap (connection_limit, address_limit) or closed for a"
            " slow client (header_timeout, body_timeout), by reason.",
            ["reason"],
            registry=r,
        )
        for result in ("success", "failure"):
            self.policy_reloads.labels(result)
        for result in ("hit", "miss", "skip"):
            self.cache_requests.labels(result)
        self.cache_up.set(1)
