"""Spending caps: `max_cost_usd` of a recipe (every step's teachers together) and of one teacher.

Each attempt reserves what it could cost at most before it is sent, and settles for what it did
cost when it ends, so the requests in flight can never together carry the spend past the cap: a
request is not sent when its worst case no longer fits. The worst case is a bound of the prompt's
tokens that no tokenizer passes (`prompt_tokens_bound`) plus the request's whole completion budget
(`max_tokens`, or `teacher.base.ASSUMED_MAX_TOKENS` when the params set none), at the teacher's price.

Only requests sent in this run count: cached answers are free, so a rerun with a higher cap spends
just the rest. An attempt that fails (an HTTP error, a timeout) is settled at nothing, as providers
do not bill refused requests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from synthkd.errors import BudgetExceededError
from synthkd.pricing import Price
from synthkd.teachers.base import ChatRequest, max_completion_tokens

# No tokenizer spends more than one token per byte of UTF-8 (byte-level BPE and SentencePiece's
# byte fallback end at one token a byte). Real text runs at 2-4 bytes a token, so the bound is
# generous; the excess is given back when an answer settles. Chat templates add a few special
# tokens around each message and the role's name, and some a default system text (Llama 3's dates):
FRAMING_TOKENS_PER_MESSAGE = 4
FRAMING_TOKENS_PER_REQUEST = 32


@dataclass
class Budget:
    """USD that may be spent, shared by every dispatcher it is handed to."""

    limit_usd: float
    # Whose cap it is, for the message: None for the recipe's, else the teacher's label.
    teacher: str | None = None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    requests: int = 0  # attempts paid for (settled with a cost)

    def try_reserve(self, amount_usd: float) -> bool:
        """Reserve `amount_usd` for one attempt if it fits under the cap with everything in flight."""
        if self.spent_usd + self.reserved_usd + amount_usd > self.limit_usd:
            return False
        self.reserved_usd += amount_usd
        return True

    def settle(self, reserved_usd: float, cost_usd: float) -> None:
        """An attempt that reserved `reserved_usd` ended having cost `cost_usd`."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserved_usd)
        if cost_usd:
            self.spent_usd += cost_usd
            self.requests += 1

    def exceeded(self, asking: str) -> BudgetExceededError:
        """The error that stops the run, saying how to raise this cap."""
        higher = f"{self.limit_usd * 2:g}"
        if self.teacher is None:
            cap, raise_it = "the recipe's max_cost_usd", f"--set max_cost_usd={higher}"
        else:
            cap = f"the max_cost_usd of teacher {self.teacher}"
            raise_it = f"--set teacher.max_cost_usd={higher} (or in the step's own teacher section)"
        return BudgetExceededError(
            f"{cap} ({self.limit_usd:g} USD) is reached: this run spent {self.spent_usd:.4f} USD on "
            f"{self.requests} requests and sends no more to {asking}, as the next request could pass "
            f"the cap. Every answer bought is cached: raise the cap and run the same command to go on "
            f"from there, e.g. {raise_it}"
        )


class OverBudget(Exception):
    """A request whose worst case does not fit under `budget`: its dispatcher stops sending."""

    def __init__(self, budget: Budget) -> None:
        super().__init__(budget)
        self.budget = budget


def prompt_tokens_bound(request: ChatRequest) -> int:
    """More prompt tokens than the request will be billed for, without a tokenizer."""
    size = sum(
        sum(_utf8_size(message.get(part)) for part in ("role", "content", "tool_calls"))
        + FRAMING_TOKENS_PER_MESSAGE
        for message in request.messages
    )
    # Tool definitions and a structured output's schema reach the model as prompt text too.
    size += _utf8_size(request.params.get("tools")) + _utf8_size(request.response_format)
    return size + FRAMING_TOKENS_PER_REQUEST


def _utf8_size(value: object) -> int:
    if not value:
        return 0
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return len(text.encode("utf-8"))


def worst_case_cost(request: ChatRequest, price: Price) -> float:
    """The most one attempt at `request` can cost (see the module's docstring)."""
    return price.cost(prompt_tokens_bound(request), max_completion_tokens(request.params))
