"""A tiny key-value memory, so one event's run can find what an earlier event's run left.

``memory.remember`` stores a small JSON object under a key; ``memory.recall`` reads it back.
Recipes use it for cross-event state: the Slack thread of a support ticket
(``slack-thread:ticket:<ticket_id>``) so ``support.ticket.resolved`` replies in it, or the
alert and incident of a service outage so the recovery lands in the same thread.

The store is injected like every other client: anything with ``get(key)`` and
``set(key, value)`` (`MemoryStore`). The Hookline worker provides one backed by its inbox
database; `DictMemoryStore` keeps it in a dict, for tests. Values must be JSON objects (a
database-backed store keeps JSON), at most `MAX_VALUE_BYTES` once encoded.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Protocol, TypedDict

from hookline.connectors.errors import PermanentError
from hookline.connectors.registry import Connector

#: Keys are short names such as ``slack-thread:ticket:tkt_456789``.
MAX_KEY_LENGTH = 200
#: Memory is for pointers (a thread, an incident number), not for payloads.
MAX_VALUE_BYTES = 64 * 1024


class MemoryStore(Protocol):
    """Where ``memory.*`` actions keep their values (synchronous, like the other clients)."""

    def get(self, key: str) -> dict[str, Any] | None:
        """The value stored under ``key``, or None."""
        ...

    def set(self, key: str, value: dict[str, Any]) -> None:
        """Store ``value`` under ``key``, replacing any earlier value."""
        ...


class DictMemoryStore:
    """A `MemoryStore` in a dict (tests, one-process demos); values are copied in and out."""

    def __init__(self, initial: dict[str, dict[str, Any]] | None = None) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, str] = {}
        for key, value in (initial or {}).items():
            self.set(key, value)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            text = self._data.get(key)
        if text is None:
            return None
        value: dict[str, Any] = json.loads(text)
        return value

    def set(self, key: str, value: dict[str, Any]) -> None:
        text = json.dumps(value, sort_keys=True)
        with self._lock:
            self._data[key] = text

    def keys(self) -> list[str]:
        """Every stored key, sorted."""
        with self._lock:
            return sorted(self._data)


class RememberOutput(TypedDict):
    key: str


class RecallOutput(TypedDict):
    found: bool
    value: dict[str, Any]


def _check_key(key: str) -> str:
    if not key or not key.strip():
        raise PermanentError("memory: key is empty", connector="memory")
    if len(key) > MAX_KEY_LENGTH:
        raise PermanentError(
            f"memory: key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH} "
            f"(key starts {key[:40]!r})",
            connector="memory",
        )
    return key


def remember(
    client: MemoryStore,
    *,
    key: str,
    value: dict[str, Any],
    idempotency_key: str | None = None,
) -> RememberOutput:
    """Store a small JSON object under ``key`` (replacing what was there) for later events.

    Raises:
        PermanentError: empty or over-long key; a value that is not JSON or is too large.
    """
    _check_key(key)
    if not isinstance(value, dict):
        raise PermanentError(
            f"memory: value for {key!r} must be a mapping, got {type(value).__name__}",
            connector="memory",
        )
    try:
        encoded = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PermanentError(
            f"memory: value for {key!r} is not JSON: {exc}", connector="memory"
        ) from None
    if len(encoded.encode("utf-8")) > MAX_VALUE_BYTES:
        raise PermanentError(
            f"memory: value for {key!r} is {len(encoded.encode('utf-8'))} bytes; the limit is "
            f"{MAX_VALUE_BYTES} (keep ids and links, not payloads)",
            connector="memory",
        )
    # Store what JSON gives back, so every store sees plain dicts, lists, str, numbers.
    client.set(key, json.loads(encoded))
    return RememberOutput(key=key)


def recall(
    client: MemoryStore,
    *,
    key: str,
    idempotency_key: str | None = None,
) -> RecallOutput:
    """Read what an earlier run remembered under ``key``; not found: ``found`` false, ``{}``.

    Raises:
        PermanentError: empty or over-long key.
    """
    _check_key(key)
    value = client.get(key)
    if value is None:
        return RecallOutput(found=False, value={})
    return RecallOutput(found=True, value=dict(value))


CONNECTOR: Connector[Any] = Connector(
    name="memory",
    actions=(remember, recall),
    # the store lives in the worker's inbox database; only the worker can hand it out
    provided_by="the memory store is provided by the Hookline worker (hookline worker / "
    "hookline up), backed by its inbox database",
)
