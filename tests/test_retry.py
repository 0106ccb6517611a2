"""The one retry schedule: step retries and the dispatcher's both follow it."""

from __future__ import annotations

import random

import pytest

from hookline.retry import MAX_DELAY_SECONDS, RetryPolicy


def test_delays_double_with_bounded_jitter_and_honour_retry_after() -> None:
    policy = RetryPolicy(attempts=4, backoff=2.0)
    rnd = random.Random(7)
    for failures, base in ((1, 2.0), (2, 4.0), (3, 8.0)):
        delays = [policy.delay(failures, rnd=rnd) for _ in range(200)]
        assert base * 0.75 <= min(delays) < base * 0.8
        assert base * 1.2 < max(delays) <= base * 1.25
    assert policy.delay(1, retry_after=30, rnd=rnd) == 30.0  # never sooner than asked
    assert policy.delay(1, retry_after=10_000) == MAX_DELAY_SECONDS  # but capped
    assert RetryPolicy(attempts=None, backoff=1.0, max_delay=60, jitter=0).delay(40) == 60.0


def test_attempts_are_bounded_unless_explicitly_unbounded() -> None:
    policy = RetryPolicy(attempts=3, backoff=1.0)
    assert [policy.retries_after(n) for n in (1, 2, 3)] == [True, True, False]
    assert RetryPolicy(attempts=1, backoff=1.0).retries_after(1) is False
    assert RetryPolicy(attempts=None, backoff=1.0).retries_after(10_000)
    with pytest.raises(ValueError, match="at least 1 attempt"):
        RetryPolicy(attempts=0, backoff=1.0)
    with pytest.raises(ValueError, match="no longest time"):
        RetryPolicy(attempts=None, backoff=1.0).longest(5.0)


def test_longest_bounds_every_attempt_timing_out_and_every_wait() -> None:
    policy = RetryPolicy(attempts=3, backoff=2.0)
    # 3 attempts of 10 s, and the 2 waits at their longest jitter
    assert policy.longest(10.0) == 30.0 + 2.0 * 1.25 + 4.0 * 1.25
    assert RetryPolicy(attempts=9, backoff=100.0).longest_wait(8) == MAX_DELAY_SECONDS
    assert RetryPolicy(attempts=1, backoff=2.0).longest(10.0) == 10.0
