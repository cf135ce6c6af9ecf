"""Per-request accounting: one metrics update and one JSON log line per request."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..logs import REQUEST_LOGGER
from ..pipeline.outcome import choice_text
from ..routing.tokens import count_tokens
from ..services import LIFECYCLE, LIMITER, LOCAL, METRICS, OUTBOX, PRICES, SETTINGS, STATUS
from ..telemetry.record import routing_record
from .access import policy_of
from .middlewares import CLIENT_CLOSED, REQUEST_ID, Handler

if TYPE_CHECKING:
    from ..dispatch import Outcome
    from ..limits import Admission
    from ..metrics import Metrics
    from ..routing.features import Features
    from ..routing.policy import Decision
    from ..settings import Settings

log = logging.getLogger(REQUEST_LOGGER)


@dataclass
class RequestRecord:
    """What one request did, filled in by the handler as it goes."""

    started: float = field(default_factory=time.perf_counter)
    outcome: Outcome | None = None
    # The routing decision, known before the outcome: a request that fails after it was
    # routed (a 4xx from the local model, a timeout) is logged with its route, rule and tenant.
    decision: Decision | None = None
    features: Features | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    ttft_s: float | None = None
    backend_s: float = 0.0
    stream_wait_s: float = 0.0  # a stream's waits for its next chunk, after the first
    stream_error: str | None = None
    # Only filled when the operator opts in (server.log_bodies): privacy by default.
    prompt_text: str | None = None
    answer_parts: list[str] | None = None
    # The handler already charged spend and usage limits (embeddings price their own model).
    accounted: bool = False
    # What the limiter reserved at admission: settled once the answer is in, else given back.
    admission: Admission | None = None
    chunks: int = 0  # a stream's chunks from the backend, sent or not
    in_flight: str | None = None  # the key counted in progress (limits.max_concurrent_per_key)

    def decided(self, features: Features, decision: Decision) -> None:
        self.features, self.decision = features, decision

    def usage_from(self, obj: dict[str, Any]) -> None:
        u = obj.get("usage") or {}
        if u:
            self.prompt_tokens = int(u.get("prompt_tokens") or 0)
            self.completion_tokens = int(u.get("completion_tokens") or 0)
            # OpenAI's field for prompt tokens served from a cache: for the local model, KV
            # reused from a slot (prefix reuse); for the cloud, the provider's prompt cache.
            details = u.get("prompt_tokens_details") or {}
            self.cached_tokens = int(details.get("cached_tokens") or 0)


RECORD: web.RequestKey[RequestRecord] = web.RequestKey("record", object)  # type: ignore[arg-type]


def _path_label(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"  # never a raw path: unbounded label values
    return info.route.resource.canonical


@web.middleware
async def observe_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    record = RequestRecord()
    request[RECORD] = record
    in_flight = request.app[LIFECYCLE].in_flight
    task = asyncio.current_task()
    if task is not None:
        in_flight.add(task)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        # handler_cancellation: the client went away (or shutdown cut the request).
        status = CLIENT_CLOSED
        raise
    finally:
        if task is not None:
            in_flight.discard(task)
        request.app[LIMITER].leave(record.in_flight)  # whatever the route or the outcome
        record.in_flight = None
        _account(request, record, status)


def _account(request: web.Request, record: RequestRecord, status: int) -> None:
    if not policy_of(request).traffic:
        return  # probes, scrapes and admin calls are not traffic (the route table says which)
    app = request.app
    path = _path_label(request)
    m = app[METRICS]
    total = time.perf_counter() - record.started
    o = record.outcome
    decision = o.decision if o else record.decision
    features = o.features if o else record.features
    route = o.route if o else (decision.route if decision else "none")
    rule = decision.rule if decision else "none"
    status_class = str(CLIENT_CLOSED) if status == CLIENT_CLOSED else f"{status // 100}xx"
    m.requests.labels(route, rule, status_class).inc()
    m.duration.labels(route).observe(total)
    if o is not None:
        _answered(app, m, o, record, total, status)
    app[LIMITER].release(record.admission)  # no answer (or already settled): a no-op
    line: dict[str, Any] = {
        "request_id": request.get(REQUEST_ID),
        "method": request.method,
        "path": path,
        "status": status,
        "route": route,
        "rule": rule,
        "reason": o.reason if o else (decision.reason if decision else None),
        "degraded": o.degraded if o else False,
        "cache": o.cache if o else None,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "tokens_reused": record.cached_tokens,
        "latency_ms": round(total * 1000, 2),
        "ttft_ms": round(record.ttft_s * 1000, 2) if record.ttft_s is not None else None,
        "tenant": features.tenant if features else None,
    }
    if record.stream_error:
        line["stream_error"] = record.stream_error
    if o is not None and o.cascade is not None:  # the escalation event, for label joins
        line["cascade"] = o.cascade.as_dict()
    if o is not None and o.tier is not None:  # the hop below: which tier, and what it did
        line["upstream"] = o.tier.as_dict()
    outbox = app.get(OUTBOX)
    if outbox is not None:  # before any text joins the line (allow-listed anyway)
        outbox.add(routing_record(line, o, local_model=app[LOCAL].model_name))
    text = None
    if record.prompt_text is not None:  # captured on opt-in only (log_bodies, ui.show_prompts)
        text = (record.prompt_text, "".join(record.answer_parts or []))
    if text is not None and app[SETTINGS].server.log_bodies:
        line["prompt"], line["answer"] = text
    log.info("request", extra=line)
    app[STATUS].record(
        line, model=features.model if features else None, failovers=o and o.failovers, text=text
    )


def _answered(
    app: web.Application,
    m: Metrics,
    o: Outcome,
    record: RequestRecord,
    total: float,
    status: int,
) -> None:
    """Metrics, spend and usage limits of a request that reached a backend or the cache."""
    route = o.route
    m.overhead.observe(max(0.0, total - record.backend_s))
    if record.ttft_s is not None:
        m.ttft.labels(route).observe(record.ttft_s)
    m.prompt_tokens.labels(route).inc(record.prompt_tokens)
    m.completion_tokens.labels(route).inc(record.completion_tokens)
    if o.cache:
        m.cache_requests.labels(o.cache).inc()
    for src, dst, cause in o.failovers:
        m.failovers.labels(src, dst, cause).inc()
    if o.tier is not None:  # labels from config and a closed set, never from the request
        t = o.tier
        m.tier_answers.labels(t.tier, t.route, "true" if t.degraded else "false").inc()
    if o.cascade is not None:
        m.cascade_answers.labels(o.cascade.outcome).inc()
        if o.cascade.escalated:
            m.cascade_escalations.labels(o.cascade.signal).inc()
            m.cascade_escalated_local_tokens.inc(o.cascade.local_tokens)
    if record.accounted:
        return
    if not record.prompt_tokens and not record.completion_tokens:
        _estimate_usage(record, o)
    cost = app[PRICES].cost(
        price_model(app[SETTINGS], o), record.prompt_tokens, record.completion_tokens
    )
    if route == "cloud":
        m.cloud_spend.inc(cost)
    elif status < 400:
        m.spend_avoided.labels(route).inc(cost)
    app[LIMITER].record(
        o.features.tenant,
        record.prompt_tokens + record.completion_tokens,
        cost if route == "cloud" else 0.0,
        record.admission,
    )


def _estimate_usage(record: RequestRecord, o: Outcome) -> None:
    """What an answer without `usage` used, as the cloud bills it: a stream the client
    dropped (the usage chunk never came), an upstream that sends none. The prompt as the
    router counted it (tiktoken), the answer's text counted, or a stream's chunks (a token
    each, as providers stream them)."""
    record.prompt_tokens = o.features.prompt_tokens
    if o.completion is not None:
        record.completion_tokens = count_tokens(choice_text(o.completion.obj))
    else:
        record.completion_tokens = record.chunks


def price_model(settings: Settings, outcome: Outcome) -> str | None:
    """The litellm model whose price an answer is counted at (what the cloud would cost)."""
    models = {m.name: m.model for m in settings.cloud.models}
    cascade = outcome.cascade
    # An escalated cascade was answered by the cloud model it escalated to; otherwise the
    # decision's target is what the answer is priced at.
    target = cascade.to if cascade is not None and cascade.escalated else outcome.decision.target
    if target in models:
        return models[target]
    return next(iter(models.values()), None)
