"""Estimated cost of a teacher's tokens, from the price map litellm ships.

The map is read as the JSON file it is, without importing litellm: that import costs seconds of
CPU before the first request, and a run with the openai backend has no other use for it. The file
is the one litellm itself reads with LITELLM_LOCAL_MODEL_COST_MAP=True (its offline copy).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from synthkd.teachers.config import TeacherConfig
from synthkd.teachers.registry import backend_spec

PRICE_MAP_FILE = "model_prices_and_context_window_backup.json"


@dataclass(frozen=True)
class Price:
    input_per_token: float
    output_per_token: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


FREE = Price(0.0, 0.0)


# What providers charge for batch jobs when the price map names no batch price (OpenAI and
# Anthropic both halve their prices).
BATCH_DISCOUNT = 0.5


def price_for(teacher: TeacherConfig) -> Price | None:
    """The price per token of the teacher's requests as it sends them: its recipe's `price:` as
    given, else litellm's map, at the batch price with `batch: true` (None when neither knows it)."""
    if teacher.price is not None:
        return Price(teacher.price.input_per_million / 1e6, teacher.price.output_per_million / 1e6)
    if teacher.batch:
        return batch_price_of(teacher.backend, teacher.model)
    return price_of(teacher.backend, teacher.model)


@lru_cache(maxsize=64)
def batch_price_of(backend: str, model: str) -> Price | None:
    """Price per token of `model` in batch jobs: the map's batch price, else the online one halved."""
    online = price_of(backend, model)
    if online is None or online == FREE:
        return online
    info = _entry(model) or {}
    return Price(
        float(info.get("input_cost_per_token_batches", online.input_per_token * BATCH_DISCOUNT)),
        float(info.get("output_cost_per_token_batches", online.output_per_token * BATCH_DISCOUNT)),
    )


@lru_cache(maxsize=64)
def price_of(backend: str, model: str) -> Price | None:
    """Price per token of `model`, or None when unknown (a self-hosted or unlisted model)."""
    if backend_spec(backend).capabilities.local:
        return FREE  # a local model costs electricity, not tokens
    info = _entry(model)
    if info is None:
        return None
    return Price(float(info["input_cost_per_token"]), float(info.get("output_cost_per_token", 0.0)))


def _entry(model: str) -> dict[str, Any] | None:
    """litellm's entry for the model, under its name or without the provider prefix."""
    prices = price_map()
    for name in (model, model.split("/", 1)[-1]):
        info = prices.get(name)
        if isinstance(info, dict) and "input_cost_per_token" in info:
            return info
    return None


@lru_cache(maxsize=1)
def price_map() -> dict[str, Any]:
    """Model name -> litellm's entry for it; empty when litellm is not installed or its file is
    unreadable (costs are then unknown, never wrong)."""
    spec = importlib.util.find_spec("litellm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return {}
    for folder in spec.submodule_search_locations:
        try:
            return json.loads((Path(folder) / PRICE_MAP_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return {}
