"""Per-source token buckets (429 + Retry-After when a source sends faster than allowed)."""

from __future__ import annotations

import math
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; the clock is injected (monotonic seconds)."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float]) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, not {rate}")
        self.rate = rate
        self.burst = float(max(1, burst or math.ceil(rate)))
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()

    def take(self) -> float:
        """Take one token; 0.0 if there was one, else the seconds until there will be."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def give_back(self) -> None:
        """Return a token taken for a request that turned out to cost nothing (a duplicate)."""
        self._tokens = min(self.burst, self._tokens + 1.0)


def retry_after_header(wait: float) -> str:
    """Whole seconds for Retry-After, at least 1."""
    return str(max(1, math.ceil(wait)))
