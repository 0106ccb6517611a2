"""Time in templates: ``{{ data.opened_at | elapsed(timestamp) }}`` is ``"15m"``.

Times are what events carry: ISO-8601 text (``Z`` allowed; a naive time is UTC), epoch
seconds as a number or as Slack's ``"1700000000.000100"`` text, or a datetime.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def _moment(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            return datetime.fromtimestamp(float(text), tz=UTC)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    raise ValueError(
        f"elapsed: {name} {value!r} is not a time (ISO-8601 text, epoch seconds or a datetime)"
    )


def human_duration(seconds: float) -> str:
    """``3725`` -> ``"1h 2m"``: the two largest units, rounded down (``"0s"`` for less)."""
    left = max(0, int(seconds))
    parts: list[str] = []
    for unit, size in _UNITS:
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2:
            break
    return " ".join(p for p in parts if not p.startswith("0") or len(parts) == 1)


def elapsed(start: Any, end: Any) -> str:
    """The ``elapsed`` filter: how long from ``start`` to ``end``, e.g. ``"15m"``, ``"1h 2m"``.

    Raises:
        ValueError: either is not a time; the step fails with this message.
    """
    return human_duration((_moment(end, "end") - _moment(start, "start")).total_seconds())
