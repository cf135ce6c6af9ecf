"""Prompt token counting with tiktoken, offline: the encoder is built once per process."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from typing import Any

ENCODING = "o200k_base"


def _offline_cache_dir() -> str | None:
    """litellm ships tiktoken's BPE files; pointing tiktoken there avoids any download.

    Found through the package spec, without importing litellm (which takes seconds).
    """
    spec = importlib.util.find_spec("litellm")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "litellm_core_utils" / "tokenizers"
        if candidate.is_dir():
            return str(candidate)
    return None


@functools.cache
def encoder() -> Any:
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        cache = _offline_cache_dir()
        if cache:
            os.environ["TIKTOKEN_CACHE_DIR"] = cache
    import tiktoken

    return tiktoken.get_encoding(ENCODING)


def count_tokens(text: str) -> int:
    return len(encoder().encode_ordinary(text))
