"""One way for tests to wait: for a condition, never for a fixed time."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> T:
    """Poll ``condition`` (sync or async) until it returns something truthy; return that.

    Raises:
        AssertionError: after ``timeout`` s, naming ``what`` and the last value seen.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout:g}s (last: {value!r})")
        await asyncio.sleep(interval)


def wait_until_sync(
    condition: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "the condition",
) -> T:
    """`wait_until` for tests that drive other processes from plain (non-async) code."""
    return asyncio.run(wait_until(condition, timeout=timeout, interval=interval, what=what))
