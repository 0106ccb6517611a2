"""Durations as recipes write them: ``30`` (seconds), ``"500ms"``, ``"2s"``, ``"1m30s"``,
``"1h"``. Shared by the recipe format (``quiet: 3s``) and connectors (``timer.start``'s
``after``), so both accept and reject the same texts with the same message."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
DURATION_HINT = "write seconds (30, 1.5) or a duration such as '500ms', '2s', '1m30s', '1h'"


def parse_duration(value: object) -> float:
    """``30`` / ``1.5`` (seconds) or ``"500ms"``, ``"2s"``, ``"1m30s"``, ``"1h"`` → seconds."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}; {DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            if not _DURATION.match(text):
                raise ValueError(f"bad duration {value!r}; {DURATION_HINT}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    else:
        raise ValueError(f"bad duration {value!r}; {DURATION_HINT}")
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"bad duration {value!r}: must be a finite number >= 0")
    return seconds


def check_duration(value: str | float) -> str | float:
    """`parse_duration`'s check of ``value``, which is kept as written."""
    parse_duration(value)
    return value


DurationText = Annotated[str | float, AfterValidator(check_duration), "duration"]
"""A connector parameter that is a duration: `hookline check` rejects ``after: soon``, and a
run rejects a rendered ``"soon"`` before the step's call, as it rejects a wrong type."""
