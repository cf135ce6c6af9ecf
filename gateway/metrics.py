"""Prometheus instruments, one registry per app so tests can build many apps side by side.

Each instrument is declared once, as a line of the class: its name after the prefix with its
labels in Prometheus' own notation (`requests{route,rule,status_class}`), then its help. Each
instance makes its own on its own registry, in the order declared.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Generic, TypeVar, overload

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

# Latency buckets from sub-millisecond cache hits to minute-long local generations.
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Tokens per llama_decode: single decodes up to full prefill chunks.
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

# Children cached per instrument: label values come from closed sets (routes, rules, config).
_CHILDREN = 4096

M = TypeVar("M", bound=MetricWrapperBase)


class Instrument(Generic[M]):
    """One instrument declared on a class; `register` makes it for an instance."""

    def __init__(self, kind: type[M], spec: str, doc: str, buckets: Sequence[float] = ()) -> None:
        name, _, labels = spec.partition("{")
        self.kind, self.name, self.doc = kind, name, doc
        self.labels = tuple(labels.rstrip("}").split(",")) if labels else ()
        self.buckets = tuple(buckets)

    def __set_name__(self, owner: type, attr: str) -> None:
        self.attr = attr

    @overload
    def __get__(self, obj: None, owner: type) -> Instrument[M]: ...
    @overload
    def __get__(self, obj: object, owner: type) -> M: ...
    def __get__(self, obj: object | None, owner: type) -> Instrument[M] | M:
        if obj is None:
            return self
        raise AttributeError(f"{self.attr}: not registered (call register in __init__)")

    def make(self, prefix: str, registry: CollectorRegistry) -> M:
        extra: dict[str, Any] = {"buckets": self.buckets} if self.buckets else {}
        made = self.kind(prefix + self.name, self.doc, self.labels, registry=registry, **extra)
        if self.labels:
            # prometheus_client's labels() validates, stringifies and takes a lock on every
            # call; a request resolves half a dozen children, each from a closed set of
            # values, so each child is resolved once and then found in a C-level cache (the
            # registry keeps every child forever anyway, and no child is ever removed).
            made.labels = functools.lru_cache(maxsize=_CHILDREN)(made.labels)  # type: ignore[method-assign]
        return made


def register(obj: object, prefix: str, registry: CollectorRegistry) -> None:
    """Make every instrument `obj`'s class declares, on `registry`, in declaration order."""
    for attr, value in vars(type(obj)).items():
        if isinstance(value, Instrument):
            obj.__dict__[attr] = value.make(prefix, registry)


def counter(spec: str, doc: str) -> Instrument[Counter]:
    return Instrument(Counter, spec, doc)


def gauge(spec: str, doc: str) -> Instrument[Gauge]:
    return Instrument(Gauge, spec, doc)


def histogram(spec: str, doc: str, buckets: Sequence[float]) -> Instrument[Histogram]:
    return Instrument(Histogram, spec, doc, buckets)


class Metrics:
    requests = counter(
        "requests{route,rule,status_class}",
        "Requests answered, by route, matched policy rule and status class.",
    )
    duration = histogram(
        "request_duration_seconds{route}",
        "Time from request to last byte, by route.",
        _LATENCY,
    )
    overhead = histogram(
        "overhead_seconds",
        "Time the gateway itself added: total minus backend time.",
        _OVERHEAD,
    )
    ttft = histogram(
        "time_to_first_token_seconds{route}",
        "Time to the first streamed chunk, by route.",
        _LATENCY,
    )
    prompt_tokens = counter(
        "prompt_tokens{route}",
        "Prompt tokens of answered requests, by route.",
    )
    completion_tokens = counter(
        "completion_tokens{route}",
        "Completion tokens of answered requests, by route.",
    )
    cache_requests = counter(
        "cache_requests{result}",
        "Response cache outcomes: hit, miss or skip.",
    )
    semantic_lookups = counter(
        "semantic_cache_lookups{result}",
        "Semantic cache look-ups after an exact miss: hit, miss (no stored question close"
        " enough), rejected (close, but the verifier refused it), error (encoder, index or"
        " timeout: a miss).",
    )
    semantic_rejections = counter(
        "semantic_cache_rejections{reason}",
        "Candidates the semantic cache's verifier refused, by what differed (number,"
        " negation, antonym, unit, entity, content, similarity).",
    )
    semantic_entries = gauge(
        "semantic_cache_entries", "Questions held in this replica's semantic cache index."
    )
    semantic_seconds = histogram(
        "semantic_cache_lookup_seconds",
        "One semantic look-up: encode the question, search its partition, verify.",
        _LATENCY,
    )
    cache_errors = counter(
        "cache_errors{op}",
        "Response cache store failures, by operation.",
    )
    cache_up = gauge(
        "cache_up",
        "1 while the response cache store answers, 0 while bypassed.",
    )
    cloud_reachable = gauge(
        "cloud_reachable{target}",
        "1 while a cloud target is considered reachable.",
    )
    breaker_state = gauge(
        "breaker_state{target}",
        "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
    )
    local_queue_depth = gauge(
        "local_queue_depth",
        "Requests waiting for the local model.",
    )
    local_in_flight = gauge(
        "local_in_flight",
        "Requests the local model is generating for.",
    )
    local_queue_capacity = gauge(
        "local_queue_capacity",
        "Requests that may wait for the local model.",
    )
    failovers = counter(
        "failovers{from_target,to_target,cause}",
        "Moves to another target before the first byte, by cause.",
    )
    tier_answers = counter(
        "tier_answers{tier,upstream_route,degraded}",
        "Answers a tier (a `tier: true` cloud model, another edge-gateway) gave, by tier, "
        "the route the tier took (local, cloud, cache, other) and whether it was degraded.",
    )
    policy_reloads = counter(
        "policy_reloads{result}",
        "Policy reload attempts, by result.",
    )
    spend_avoided = counter(
        "spend_avoided_usd{route}",
        "Estimated cloud cost (USD, litellm's cost map) of answers served locally or cached.",
    )
    cloud_spend = counter(
        "cloud_spend_usd",
        "Estimated cost (USD) of answers from the cloud.",
    )
    rate_limited = counter(
        "rate_limited{reason}",
        "Requests refused by per-key limits, by reason.",
    )
    limits_unenforced = counter(
        "limits_unenforced{stage,reason}",
        "Limit counters not reached in time (limits.timeout_s) or failing, by stage (admit,"
        " settle) and reason (timeout, error): with fail_mode=open admitted unchecked.",
    )
    local_slots = gauge(
        "local_slots",
        "Sequences the local model decodes together (local.parallel).",
    )
    local_slots_busy = gauge(
        "local_slots_busy",
        "Local model slots holding a request.",
    )
    local_batch_size = histogram(
        "local_batch_size",
        "Tokens in each llama_decode call of the local engine (decode plus prefill).",
        _BATCH,
    )
    local_prefill_tokens = counter(
        "local_prefill_tokens",
        "Prompt tokens the local model computed.",
    )
    local_decode_tokens = counter(
        "local_decode_tokens",
        "Generated tokens the local model decoded.",
    )
    local_tokens_reused = counter(
        "local_tokens_reused",
        "Prompt tokens served from a slot's KV cache instead of being computed again.",
    )
    telemetry_outbox_depth = gauge(
        "telemetry_outbox_depth",
        "Routing records waiting in the telemetry outbox to be shipped.",
    )
    telemetry_shipped = counter(
        "telemetry_shipped_records",
        "Routing records the telemetry receiver accepted.",
    )
    telemetry_dropped = counter(
        "telemetry_dropped_records{reason}",
        "Routing records lost: cap (outbox full, oldest first) or rejected (receiver 4xx).",
    )
    telemetry_send_failures = counter(
        "telemetry_send_failures{cause}",
        "Failed telemetry batch sends, by cause (unreachable, 4xx, 5xx).",
    )
    telemetry_last_success = gauge(
        "telemetry_last_success_timestamp_seconds",
        "Unix time of the last batch the telemetry receiver accepted (0: none yet).",
    )
    cascade_answers = counter(
        "cascade_answers{outcome}",
        "Answers of `route: cascade` rules, by outcome: kept (confident), escalated, "
        "degraded (unsure, cloud unreachable), private (unsure, never sent), stream_local, "
        "no_logprobs.",
    )
    cascade_escalations = counter(
        "cascade_escalations{reason}",
        "Unsure local answers redone by the cloud, by the signal that failed.",
    )
    cascade_escalated_local_tokens = counter(
        "cascade_escalated_local_tokens",
        "Local tokens (prompt plus completion) spent on answers then discarded by escalation.",
    )
    local_models_loaded = gauge(
        "local_models_loaded",
        "Local models resident now (local.models).",
    )
    model_swaps = counter(
        "model_swaps{result}",
        "Model file changes at /admin/models by result (swapped, rolled_back, refused).",
    )
    local_file_requests = counter(
        "local_file_requests{model,file}",
        "Requests per local model name and file (sha256 prefix): canary against current.",
    )
    model_unloads = counter(
        "model_unloads{why}",
        "Local models unloaded, by why (lru, keep_alive).",
    )
    embedding_requests = counter(
        "embedding_requests{route}",
        "Embedding requests answered, by route (local, cloud, or cache for all inputs).",
    )
    embedding_inputs = counter(
        "embedding_inputs{route}",
        "Inputs embedded, by route (cache: served from the per-input cache).",
    )
    embedding_tokens = counter(
        "embedding_tokens{route}",
        "Tokens of embedded inputs, by route.",
    )
    connections_open = gauge(
        "connections_open",
        "Client HTTP connections open now.",
    )
    connections_dropped = counter(
        "connections_dropped{reason}",
        "Connections refused at a cap (connection_limit, address_limit) or closed for a"
        " slow client (header_timeout, body_timeout), by reason.",
    )

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        register(self, "edge_gateway_", self.registry)
        for reason in ("cap", "rejected"):
            self.telemetry_dropped.labels(reason)
        for result in ("success", "failure"):
            self.policy_reloads.labels(result)
        for result in ("hit", "miss", "skip"):
            self.cache_requests.labels(result)
        for result in ("hit", "miss", "rejected", "error"):
            self.semantic_lookups.labels(result)
        self.cache_up.set(1)
