"""The chat router's features of an embedding request, private data in token ids included."""

from __future__ import annotations

import functools
from typing import Any

from ..routing.features import Features
from ..routing.pii import TOKEN_IDS, Detector, default_detector
from ..routing.privacy import embedding_strings
from ..routing.tokens import count_tokens, encoder
from .request import EmbeddingRequest


def embedding_features(
    req: EmbeddingRequest,
    tenant: str | None,
    *,
    cloud_reachable: bool,
    local_queue_depth: int,
    local_queue_full: bool,
    n_batch: int,
    scan_budget: int | None = None,
    detector: Detector | None = None,
) -> Features:
    """The features of an embedding request (off the loop when large).

    Past `scan_budget`, the walk over the fields besides `input` raises TooLarge first.
    """
    others = embedding_strings(req, budget=scan_budget)
    items = req.items()
    longest = max(count_tokens(i) if isinstance(i, str) else len(i) for i in items)
    return Features(
        model=req.model,
        prompt_tokens=longest,
        complexity=0.0,
        complexity_reasons=(),
        needs=(),
        pii=_pii(
            [*req.texts(), *others],
            [i for i in items if not isinstance(i, str)],
            detector or default_detector(),
        ),
        tenant=tenant,
        cloud_reachable=cloud_reachable,
        local_queue_depth=local_queue_depth,
        local_queue_full=local_queue_full,
        # tiktoken is not the local tokenizer; the 10% margin of chat.
        exceeds_local_context=longest * 1.1 >= n_batch,
        max_tokens=None,
    )


@functools.cache
def _vocabularies() -> tuple[Any, ...]:
    import tiktoken

    return (encoder(), tiktoken.get_encoding("cl100k_base"))  # encoder() sets the offline cache


def _pii(texts: list[str], token_inputs: list[list[int]], detector: Detector) -> tuple[str, ...]:
    """Private data in the inputs, token-id inputs included, and in every other string of the
    request (`user`, unknown fields: routing/privacy.py), all in one scan.

    Token ids are text in disguise: a client could send an e-mail address as OpenAI token ids
    and slip past a scan of the text inputs. They are decoded with both OpenAI vocabularies
    an embedding model may use (o200k, cl100k; shipped with litellm, nothing downloaded) and
    scanned like text; ids neither can decode cannot be scanned and count as private
    (`token_ids`), so a privacy rule keeps them on the box.
    """
    decoded = list(texts)
    unscanned = False
    for ids in token_inputs:
        readable = False
        for vocabulary in _vocabularies():
            try:
                decoded.append(vocabulary.decode(ids))
                readable = True
            except (KeyError, ValueError, OverflowError):  # ids outside this vocabulary
                pass
        unscanned = unscanned or not readable
    found = detector.find("\x00".join(decoded))  # NUL: no match spans two strings (privacy.py)
    return (*found, TOKEN_IDS) if unscanned else found
