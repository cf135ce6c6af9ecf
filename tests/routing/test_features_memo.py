"""The features' text part is memoised by body; complexity never is (a scorer may be retrained)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.routing import features as features_mod
from gateway.routing.complexity import Complexity, ComplexityScorer
from gateway.routing.features import FeatureExtractor
from gateway.schemas import ChatRequest


def _req(text: str, **extra: Any) -> ChatRequest:
    return ChatRequest.model_validate(
        {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}
    )


def _extract(ext: FeatureExtractor, req: ChatRequest, **kw: Any) -> Any:
    return ext.extract(
        req, tenant="t", cloud_reachable=True, local_queue_depth=0, local_queue_full=False, **kw
    )


def test_a_repeated_request_is_scanned_once_and_gets_the_same_features(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    real = features_mod.count_tokens
    monkeypatch.setattr(features_mod, "count_tokens", lambda t: calls.append(t) or real(t))
    ext = FeatureExtractor(scorer=ComplexityScorer(), local_n_ctx=2048)
    first = _extract(ext, _req("mail me at jane@example.com"))
    again = _extract(ext, _req("mail me at jane@example.com"))
    assert again == first and "email" in first.pii
    assert len(calls) == 1
    other = _extract(ext, _req("mail me at jane@example.com", temperature=0))
    assert len(calls) == 2 and other.pii == first.pii
    plain = _extract(ext, _req("hello"))
    assert plain.pii == () and plain.prompt_tokens < first.prompt_tokens


def test_complexity_follows_the_scorer_of_each_call() -> None:
    class Fixed:
        def __init__(self, score: float) -> None:
            self.value = score

        def score(self, text: str, *, max_tokens: int | None = None) -> Complexity:
            return Complexity(self.value, ("fixed",))

    ext = FeatureExtractor(scorer=ComplexityScorer(), local_n_ctx=2048)
    scorer = Fixed(0.25)
    assert _extract(ext, _req("x"), scorer=scorer).complexity == 0.25
    scorer.value = 0.75  # retrained in place
    assert _extract(ext, _req("x"), scorer=scorer).complexity == 0.75


def test_the_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features_mod, "MEMO_ENTRIES", 3)
    ext = FeatureExtractor(scorer=ComplexityScorer(), local_n_ctx=2048)
    for i in range(10):
        _extract(ext, _req(f"question {i}"))
    assert len(ext._memo) == 3
    _extract(ext, _req("x" * (features_mod.MEMO_MAX_BYTES + 1)))
    assert len(ext._memo) == 3
