"""Estimated cost of a teacher's tokens, from litellm's bundled price map."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from synthkd.teachers.registry import backend_spec


@dataclass(frozen=True)
class Price:
    input_per_token: float
    output_per_token: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


FREE = Price(0.0, 0.0)


@lru_cache(maxsize=64)
def price_of(backend: str, model: str) -> Price | None:
    """Price per token of `model`, or None when unknown (a self-hosted or unlisted model)."""
    if backend_spec(backend).capabilities.local:
        return FREE  # a local model costs electricity, not tokens
    import litellm  # imported here: it is slow, and a local-only run never needs it

    for name in (model, model.split("/", 1)[-1]):
        info = litellm.model_cost.get(name)
        if info and "input_cost_per_token" in info:
            return Price(float(info["input_cost_per_token"]), float(info.get("output_cost_per_token", 0.0)))
    return None
