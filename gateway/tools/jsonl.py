"""Labelled data files of the operator tools: JSON Lines read with the line each value came from."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def values(path: Path) -> Iterator[tuple[str, Any]]:
    """("path:line", the line's JSON value) of each non-blank line, in order; ValueError
    naming the line of one that is not JSON. What a value must be is the caller's to say."""
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{n}", json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{n}: invalid JSON: {exc}") from None
