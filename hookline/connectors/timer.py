"""Durable timers: ``timer.start`` fires an event later unless ``timer.cancel`` stops it first.

A recipe step starts a timer under a key (``escalate:<service>``), due ``after`` a duration
(``"15m"``, ``"90s"``, ``"1h30m"``, or seconds); when it is due, an event of source
``hookline`` with the given ``event_type`` and ``data`` runs through the same dispatch,
recipes and Prefect runs as any webhook (a recipe for it says ``source: hookline`` and
``on: <event_type>``). Starting a key that is pending replaces it; cancelling an unknown key
is not an error (``cancelled`` is false); a cancelled timer never fires. A timer that is
already firing (claimed by a dispatcher) can no longer be cancelled: ``cancelled`` is false.

The store is injected like every other client (`TimerStore`). The Hookline worker provides
one that keeps each timer as an inbox entry due at its time (`hookline.flows.runtime`), so
timers survive restarts and fire once with any number of dispatchers; `DictTimerStore`
keeps them in a dict, for tests and dry runs.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypedDict

from hookline.connectors.errors import PermanentError
from hookline.connectors.registry import Connector
from hookline.durations import DurationText, parse_duration

#: Keys are short names such as ``escalate:svc_voice_001``.
MAX_KEY_LENGTH = 200
#: The data a timer carries is a pointer or two, not a payload.
MAX_DATA_BYTES = 64 * 1024


@dataclass(frozen=True)
class Timer:
    """One timer as a store keeps it: its fired event's id, type and body, due when."""

    key: str
    event_id: str
    event_type: str
    due: float
    """Epoch seconds."""
    body: bytes
    """The JSON envelope of the event it fires (see `start`)."""


class TimerStore(Protocol):
    """Where ``timer.*`` actions keep their timers (synchronous, like the other clients)."""

    def now(self) -> float:
        """The store's clock (epoch seconds): a timer is due ``after`` seconds from it."""
        ...

    def start(self, timer: Timer) -> bool:
        """Keep ``timer``, replacing a pending one of its key in the same transaction;
        whether one was replaced."""
        ...

    def cancel(self, key: str) -> bool:
        """Cancel the pending timer ``key``; False if there is none (or it is firing)."""
        ...


class DictTimerStore:
    """A `TimerStore` in a dict (tests, dry runs): it keeps timers; nothing fires them."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock if clock is not None else time.time
        self._lock = threading.Lock()
        self._pending: dict[str, Timer] = {}
        self.cancelled: list[Timer] = []
        """Timers cancelled or replaced, oldest first."""

    def now(self) -> float:
        return self._clock()

    def start(self, timer: Timer) -> bool:
        with self._lock:
            old = self._pending.pop(timer.key, None)
            if old is not None:
                self.cancelled.append(old)
            self._pending[timer.key] = timer
            return old is not None

    def cancel(self, key: str) -> bool:
        with self._lock:
            old = self._pending.pop(key, None)
            if old is not None:
                self.cancelled.append(old)
            return old is not None

    def pending(self) -> dict[str, Timer]:
        """The pending timers by key."""
        with self._lock:
            return dict(self._pending)


class StartOutput(TypedDict):
    key: str
    event_id: str
    due: str


class CancelOutput(TypedDict):
    key: str
    cancelled: bool


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not key.strip():
        raise PermanentError(
            "timer: key is empty; give a name such as 'escalate:<service>'", connector="timer"
        )
    if len(key) > MAX_KEY_LENGTH:
        raise PermanentError(
            f"timer: key is {len(key)} characters long; the limit is {MAX_KEY_LENGTH} "
            f"(key starts {key[:40]!r})",
            connector="timer",
        )
    return key


def started_by(idempotency_key: str | None) -> dict[str, str] | None:
    """The event and recipe of the step that started a timer, from the key the engine gives
    every action (``<source>:<event_id>:<recipe>:<step>``; an event id may hold ``:``)."""
    if not idempotency_key:
        return None
    parts = idempotency_key.split(":")
    if len(parts) < 4:
        return None
    return {
        "source": parts[0],
        "event_id": ":".join(parts[1:-2]),
        "recipe": parts[-2],
        "step": parts[-1],
    }


def iso(epoch: float) -> str:
    """Epoch seconds as ISO-8601 UTC with ``Z``, to the millisecond."""
    text = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def start(
    client: TimerStore,
    *,
    key: str,
    after: DurationText,
    event_type: str,
    data: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
) -> StartOutput:
    """Fire an event of source ``hookline`` after a duration, unless cancelled; replaces a
    pending timer of the same key.

    Raises:
        PermanentError: an empty or over-long key or event type, a bad duration, data that
            is not a JSON object or is too large.
    """
    _check_key(key)
    try:
        seconds = parse_duration(after)
    except ValueError as exc:
        raise PermanentError(f"timer {key!r}: after: {exc}", connector="timer") from None
    if not isinstance(event_type, str) or not event_type.strip():
        raise PermanentError(
            f"timer {key!r}: event_type is empty; name the event it fires, such as "
            "'outage.escalate', which a recipe with `source: hookline` can match",
            connector="timer",
        )
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise PermanentError(
            f"timer {key!r}: data must be a mapping, got {type(data).__name__}",
            connector="timer",
        )
    now = client.now()
    due = now + seconds
    event_id = f"timer:{key}:{uuid.uuid4().hex[:12]}"
    envelope: dict[str, Any] = {
        "event_id": event_id,
        "event_type": event_type,
        "timestamp": iso(due),
        "data": data,
        "timer": {"key": key, "after": after, "started_at": iso(now)},
    }
    by = started_by(idempotency_key)
    if by is not None:
        envelope["timer"]["started_by"] = by
    try:
        body = json.dumps(envelope, sort_keys=True, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise PermanentError(f"timer {key!r}: data is not JSON: {exc}", connector="timer") from None
    if len(body) > MAX_DATA_BYTES:
        raise PermanentError(
            f"timer {key!r}: data is {len(body)} bytes once encoded; the limit is "
            f"{MAX_DATA_BYTES} (keep ids and links, not payloads)",
            connector="timer",
        )
    client.start(Timer(key=key, event_id=event_id, event_type=event_type, due=due, body=body))
    return StartOutput(key=key, event_id=event_id, due=iso(due))


def cancel(
    client: TimerStore,
    *,
    key: str,
    idempotency_key: str | None = None,
) -> CancelOutput:
    """Cancel the pending timer ``key``; ``cancelled`` is false when there was none (not an
    error) or it is already firing.

    Raises:
        PermanentError: an empty or over-long key.
    """
    _check_key(key)
    return CancelOutput(key=key, cancelled=bool(client.cancel(key)))


CONNECTOR: Connector[Any] = Connector(
    name="timer",
    actions=(start, cancel),
    # timers live in the inbox database, which only the worker holds
    provided_by="the timer store is provided by the Hookline worker (hookline worker / "
    "hookline up), backed by its inbox database",
)
