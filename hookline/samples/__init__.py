"""The sample payloads from SolveForce's webhook documentation, one file per event type
(`hookline send <event_type>` sends them signed; tests and recipe tests use them)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any


def names() -> list[str]:
    """Every sample's event type, sorted."""
    return sorted(
        p.name.removesuffix(".json")
        for p in resources.files(__name__).iterdir()
        if p.name.endswith(".json")
    )


def load(event_type: str) -> dict[str, Any]:
    """The sample payload for ``event_type`` (a fresh dict each call).

    Raises:
        KeyError: no sample for that event type; the message lists the valid ones.
    """
    path = resources.files(__name__) / f"{event_type}.json"
    if not path.is_file():
        raise KeyError(f"no sample for {event_type!r}; valid: {', '.join(names())}")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
