"""Token buckets for requests-per-minute and tokens-per-minute limits."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Refills at `rate` units per second up to `capacity`; `take` waits until enough is there.

    Waiters are served in arrival order (the lock is held while waiting), so a large request is
    not starved by a stream of small ones.
    """

    def __init__(self, rate_per_second: float, capacity: float, initial: float | None = None) -> None:
        self.rate = rate_per_second
        self.capacity = capacity
        self._tokens = capacity if initial is None else initial
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def take(self, amount: float = 1.0) -> None:
        amount = min(amount, self.capacity)  # one request larger than a minute's budget still goes
        async with self._lock:
            self._refill()
            while self._tokens < amount:
                await asyncio.sleep((amount - self._tokens) / self.rate)
                self._refill()
            self._tokens -= amount

    def give_back(self, amount: float) -> None:
        """Return an over-estimate (or charge an under-estimate, with a negative amount)."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + amount)


def requests_bucket(rpm: float | None) -> TokenBucket | None:
    """Requests per minute, paced from the first request; later idle time banks one second's worth."""
    if rpm is None:
        return None
    rate = rpm / 60.0
    return TokenBucket(rate, capacity=max(1.0, rate), initial=1.0)


def tokens_bucket(tpm: float | None) -> TokenBucket | None:
    """Tokens per minute. The burst is a whole minute, since one request may need thousands."""
    if tpm is None:
        return None
    return TokenBucket(tpm / 60.0, capacity=tpm)
