"""Retry policies: how many attempts, and how long to wait between them.

One object for every retry Hookline makes itself: a recipe step's vendor calls
(`Step.retry`, run by the recipe flow), and the dispatcher's flow-run creates (a quick one
for a busy server's "database is locked", a slow one while Prefect is unreachable). It also
answers how long all the attempts of a step can take at most, which the dispatcher needs to
tell a run that is slow from one whose worker is gone.

The delay after the n-th failure is ``backoff * 2**(n-1)``, times a random factor in
``1 ± jitter`` (so that retries of a storm's events do not arrive together), capped at
``max_delay``, and never shorter than the vendor's ``Retry-After`` (itself capped).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: No wait is longer than this, whatever a vendor's Retry-After asks for.
MAX_DELAY_SECONDS = 300.0


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter."""

    attempts: int | None
    """Attempts in all, the first included (1: never retried). None only where giving up
    would lose data and waiting loses nothing: the dispatcher keeps events pending while
    Prefect is unreachable."""
    backoff: float
    """The wait after the first failure, in seconds."""
    max_delay: float = MAX_DELAY_SECONDS
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise ValueError(f"a retry policy needs at least 1 attempt, not {self.attempts}")
        if self.backoff < 0 or self.max_delay < 0 or not 0 <= self.jitter < 1:
            raise ValueError(f"invalid retry policy {self!r}")

    def retries_after(self, failures: int) -> bool:
        """Whether another attempt follows the ``failures``-th failure."""
        return self.attempts is None or failures < self.attempts

    def delay(
        self,
        failures: int,
        *,
        retry_after: float | None = None,
        rnd: random.Random | None = None,
    ) -> float:
        """The wait after the ``failures``-th failure (1 for the first)."""
        base = self.backoff * 2 ** min(max(failures - 1, 0), 30)
        factor = (rnd or random).uniform(1 - self.jitter, 1 + self.jitter)
        wait = min(base * factor, self.max_delay)
        if retry_after is not None:
            wait = max(wait, min(float(retry_after), self.max_delay))
        return float(wait)

    def longest_wait(self, failures: int) -> float:
        """The longest `delay` after the ``failures``-th failure can be from the backoff
        itself (a vendor's Retry-After may ask for more, up to `max_delay`)."""
        base = self.backoff * 2 ** min(max(failures - 1, 0), 30)
        return float(min(base * (1 + self.jitter), self.max_delay))

    def longest(self, timeout: float) -> float:
        """How long all attempts can take together when each takes ``timeout`` s and every
        wait is its longest backoff. Vendors' Retry-After answers can stretch it: callers
        that act on it (the dispatcher, before declaring a run lost) add a margin."""
        if self.attempts is None:
            raise ValueError("an unbounded retry policy has no longest time")
        waits = sum(self.longest_wait(n) for n in range(1, self.attempts))
        return timeout * self.attempts + waits
