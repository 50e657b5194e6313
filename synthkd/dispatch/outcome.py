"""What the dispatcher hands back: each request's outcome, and the counts of a dispatcher's work."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from synthkd.teachers.base import Completion


@dataclass
class Outcome:
    """What became of one request: a completion, or the error of its last attempt."""

    completion: Completion | None
    # Requests it took: 1 for an answer, fresh or cached (the retries before it do not change the
    # answer, and a rerun from the cache must record the same); every attempt for no answer.
    attempts: int = 1
    cached: bool = False
    error: str | None = None
    reason: str | None = None


@dataclass
class DispatchStats:
    requests_sent: int = 0  # attempts that reached the teacher, retries included
    cache_hits: int = 0
    failed: int = 0
    retries: Counter = field(default_factory=Counter)  # by reason: http_429, http_500, timeout, ...
    prompt_tokens: int = 0  # of every completion used, cached or not
    completion_tokens: int = 0
    cost_usd: float | None = 0.0  # of the requests sent in this run; None when the price is unknown
    cost_usd_with_cache: float | None = 0.0  # what the completions used would cost to request anew
    # What the requests wait on, in words, while nothing else moves (batch jobs at the provider's:
    # "batch jobs: 1 in_progress, 340/1000 done"); "" otherwise. Progress bars show it.
    waiting_on: str = ""
