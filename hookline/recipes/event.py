"""The event a recipe sees: a verified webhook body plus what the receiver knows about it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from hookline import bodies
from hookline.recipes.errors import EventError


def parse_timestamp(value: object) -> datetime | None:
    """An ISO-8601 timestamp (``Z`` allowed) or epoch seconds, as an aware UTC datetime."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    return None


@dataclass(frozen=True)
class Event:
    """One event. ``envelope`` is the whole JSON body; ``data`` its ``data`` member when it
    has one (SolveForce does), else the whole body (generic webhooks); for a Slack
    interactivity form, both are the parsed ``payload``."""

    source: str
    event_type: str
    event_id: str
    timestamp: datetime | None
    data: Any
    account: Any
    envelope: dict[str, Any] = field(repr=False)

    @property
    def timestamp_text(self) -> str | None:
        """The timestamp as the sender wrote it (templates see this), else ISO-8601."""
        raw = self.envelope.get("timestamp")
        if isinstance(raw, str):
            return raw
        return self.timestamp.isoformat() if self.timestamp is not None else None

    @classmethod
    def from_envelope(
        cls,
        envelope: Any,
        *,
        source: str,
        event_type: str | None = None,
        event_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> Event:
        """Build an event from an already-parsed body.

        ``event_type``/``event_id`` default to the body's ``event_type``/``event_id`` (also
        ``type``/``id``).

        Raises:
            EventError: no event type or id can be found.
        """
        env: dict[str, Any] = envelope if isinstance(envelope, dict) else {"data": envelope}
        etype = event_type or _first_str(env, "event_type", "type")
        eid = event_id or _first_str(env, "event_id", "id")
        if not etype:
            raise EventError(f"event from {source!r} has no event_type (nor type) field")
        if not eid:
            raise EventError(f"event {etype!r} from {source!r} has no event_id (nor id) field")
        data = env["data"] if "data" in env else env
        account = env.get("account")
        if account is None:
            account = {}
        ts = timestamp if timestamp is not None else parse_timestamp(env.get("timestamp"))
        return cls(
            source=source,
            event_type=etype,
            event_id=eid,
            timestamp=ts,
            data=data,
            account=account,
            envelope=env,
        )

    @classmethod
    def from_body(
        cls,
        *,
        source: str,
        body: bytes | str,
        event_type: str | None = None,
        event_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> Event:
        """Build an event from a raw (already verified) body: JSON, or a Slack interactivity
        form, whose parsed ``payload`` is then both ``data`` and ``envelope`` (type and id
        by default as the receiver names them: `hookline.bodies`).

        Raises:
            EventError: the body is neither, or has no event type / id.
        """
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            try:
                payload = bodies.payload_object(bodies.form_payload(body))
                etype = event_type or bodies.interaction_type(payload)
                eid = event_id or bodies.interaction_id(payload)
            except bodies.BodyError as err:
                raise EventError(
                    f"event body from {source!r} is not JSON ({exc}), nor a usable Slack"
                    f" interactivity form: {err}"
                ) from None
            return cls(
                source=source,
                event_type=etype,
                event_id=eid,
                timestamp=timestamp if timestamp is not None else bodies.interaction_time(payload),
                data=payload,
                account={},
                envelope=payload,
            )
        return cls.from_envelope(
            parsed, source=source, event_type=event_type, event_id=event_id, timestamp=timestamp
        )


def _first_str(env: dict[str, Any], *keys: str) -> str | None:
    for k in keys:
        v = env.get(k)
        if isinstance(v, str) and v:
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            return str(v)
    return None
