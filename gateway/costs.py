"""Per-token prices from litellm's bundled cost map, read as JSON (importing litellm is slow)."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

_COST_MAP = "model_prices_and_context_window_backup.json"


def _load() -> dict[str, tuple[float, float]]:
    spec = importlib.util.find_spec("litellm")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / _COST_MAP
        if path.is_file():
            raw = json.loads(path.read_text(encoding="utf-8"))
            return {
                name: (
                    float(v.get("input_cost_per_token") or 0),
                    float(v.get("output_cost_per_token") or 0),
                )
                for name, v in raw.items()
                if isinstance(v, dict) and "input_cost_per_token" in v
            }
    log.warning("litellm's cost map not found: spend estimates will be 0")
    return {}


class Prices:
    """USD per prompt and completion token for litellm model strings ('openai/gpt-4o-mini')."""

    def __init__(self, models: list[str]) -> None:
        table = _load() if models else {}
        self._prices: dict[str, tuple[float, float]] = {}
        for model in models:
            bare = model.split("/", 1)[1] if "/" in model else model
            price = table.get(model) or table.get(bare)
            if price is None:
                log.info(
                    "no price known for model; spend estimates count it as 0",
                    extra={"model": model},
                )
                price = (0.0, 0.0)
            self._prices[model] = price

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int) -> float:
        if model is None:
            return 0.0
        p_in, p_out = self._prices.get(model, (0.0, 0.0))
        return prompt_tokens * p_in + completion_tokens * p_out
