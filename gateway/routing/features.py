"""What the policy looks at: one cheap pass over the request, no model calls."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

from ..jsonfast import canonical
from ..schemas import AnyRequest, ChatRequest
from .complexity import ComplexityScorer, Scorer
from .pii import Detector
from .privacy import scan_chat, scan_completion
from .tokens import count_tokens

# What a request needs beyond plain text. Rules may match them (the default policy prefers the
# cloud for them); the local model meets all but LOCAL_CANNOT: tools and JSON schemas by
# grammar, n > 1 as parallel sequences, logprobs from its logits.
NEEDS = ("tools", "images", "json_schema", "multiple_choices", "logprobs")
LOCAL_CANNOT = ("images",)
# OpenAI counts a few tokens of framing per chat message.
_PER_MESSAGE = 3
# The text-only part of the features (privacy scan, token count) of recent small requests, by
# their canonical body: a client repeating a request (a cache hit) is not scanned and
# tokenized again. Small bodies only, so the memo stays within a few MiB.
MEMO_ENTRIES = 512
MEMO_MAX_BYTES = 8192


@dataclass(frozen=True, slots=True)
class _Text:
    """What a request's content says, whatever the policy's scorer (it may be retrained in
    place, so complexity is never memoised)."""

    pii: tuple[str, ...]
    tokens: int
    asked: str
    needs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Features:
    model: str
    prompt_tokens: int
    complexity: float
    complexity_reasons: tuple[str, ...]
    needs: tuple[str, ...]
    pii: tuple[str, ...]
    tenant: str | None
    cloud_reachable: bool
    local_queue_depth: int
    local_queue_full: bool
    exceeds_local_context: bool
    max_tokens: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def needs_of(req: AnyRequest) -> tuple[str, ...]:
    found: list[str] = []
    if isinstance(req, ChatRequest):
        if req.tools or req.functions:
            found.append("tools")
        if any(m.has_image() for m in req.messages):
            found.append("images")
        rf = req.response_format or {}
        if rf.get("type") == "json_schema":
            found.append("json_schema")
        if req.logprobs:
            found.append("logprobs")
    elif req.logprobs:
        found.append("logprobs")
    if (req.n or 1) > 1:
        found.append("multiple_choices")
    return tuple(found)


class FeatureExtractor:
    """Built once per app: owns the scorer (and, through tokens.py, the tiktoken encoder)."""

    def __init__(self, *, scorer: ComplexityScorer, local_n_ctx: int) -> None:
        self.scorer = scorer
        self.local_n_ctx = local_n_ctx
        # Keyed by the detector too: a reloaded policy may look for other kinds.
        self._memo: OrderedDict[tuple[type, Detector | None, bytes], _Text] = OrderedDict()
        # extract runs on the loop, and in a worker thread for a large request.
        self._lock = threading.Lock()

    def extract(
        self,
        req: AnyRequest,
        *,
        tenant: str | None,
        cloud_reachable: bool,
        local_queue_depth: int,
        local_queue_full: bool,
        scorer: Scorer | None = None,
        detector: Detector | None = None,
        scan_budget: int | None = None,
    ) -> Features:
        """The request's features; `scorer` and `detector` are the policy's own.

        The privacy scan reads the whole request (routing/privacy.py), first: past
        `scan_budget` it raises privacy.TooLarge before any other work is spent.
        """
        text = self._text(req, scan_budget, detector)
        tokens = text.tokens
        max_tokens = req.requested_max_tokens()
        complexity = (scorer or self.scorer).score(text.asked, max_tokens=max_tokens)
        return Features(
            model=req.model,
            prompt_tokens=tokens,
            complexity=round(complexity.score, 4),
            complexity_reasons=complexity.reasons,
            needs=text.needs,
            pii=text.pii,
            tenant=tenant,
            cloud_reachable=cloud_reachable,
            local_queue_depth=local_queue_depth,
            local_queue_full=local_queue_full,
            # tiktoken is not the local tokenizer; a 10% margin keeps the estimate honest.
            exceeds_local_context=tokens * 1.1 >= self.local_n_ctx,
            max_tokens=max_tokens,
        )

    def _text(self, req: AnyRequest, scan_budget: int | None, detector: Detector | None) -> _Text:
        body = canonical(req.upstream_body()) if req.content_chars() <= MEMO_MAX_BYTES else b""
        if len(body) > MEMO_MAX_BYTES:
            body = b""  # tools or other fields make it large: not memoised
        key = (type(req), detector, body)
        if body:
            with self._lock:
                known = self._memo.get(key)
                if known is not None:
                    self._memo.move_to_end(key)
                    return known
        scan = scan_chat if isinstance(req, ChatRequest) else scan_completion
        # May raise privacy.TooLarge: nothing memoised.
        pii = scan(req, budget=scan_budget, detector=detector)
        text = req.prompt_text()
        tokens = count_tokens(text)
        if isinstance(req, ChatRequest):
            tokens += _PER_MESSAGE * len(req.messages) + _PER_MESSAGE
            # Score what the user asks, not the system prompt boilerplate around it.
            asked = "\n".join(m.text() for m in req.messages if m.role == "user") or text
        else:
            asked = text
        out = _Text(pii=pii, tokens=tokens, asked=asked, needs=needs_of(req))
        if body:
            with self._lock:
                self._memo[key] = out
                while len(self._memo) > MEMO_ENTRIES:
                    self._memo.popitem(last=False)
        return out
