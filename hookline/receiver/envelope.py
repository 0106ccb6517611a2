"""From a verified raw body to the event's id, type and time, or an `EnvelopeError` naming the
field that is wrong.

SolveForce events must carry ``event_type``, ``event_id``, ``timestamp`` (ISO 8601, with or
without a zone: a naive time is UTC, as the seed's test tool sends
``datetime.utcnow().isoformat()``) and a ``data`` object; ``account`` is optional. Other
sources say where their id / type / time are with locators (``json:a.b`` or ``header:Name``);
``body:sha256`` makes the id the digest of the signed body, for senders such as GitHub whose
id header is not signed (a captured body re-sent with new ids is then a duplicate).

A Slack interactivity form (``payload=<JSON>``) is read by `parse_interaction`: its type,
id and payload come from `hookline.bodies`, which the engine's `Event` reads it with too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hookline.bodies import (
    FORM_FIELD,
    BodyError,
    form_payload,
    interaction_id,
    interaction_time,
    interaction_type,
)
from hookline.receiver.errors import EnvelopeError
from hookline.receiver.sources import BODY_DIGEST, Source

MAX_ID_LENGTH = 255
# Deeper JSON is refused at receipt: Prefect's visit_collection (and any recursive code after
# us) hits RecursionError on it, on every run and replay of the event. Real payloads stay far
# below: GitHub's and Stripe's deepest are around 10 levels.
MAX_DEPTH = 64


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    event_type: str
    event_time: datetime | None
    payload: Any  # the decoded JSON body


def decode_json(body: bytes) -> Any:
    """The body as JSON.

    Raises:
        EnvelopeError: field ``body`` when the body is not UTF-8 JSON, or nests lists and
            objects deeper than `MAX_DEPTH` levels.
    """
    too_deep = EnvelopeError("body", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        payload = json.loads(body)
    except RecursionError:
        raise too_deep from None
    except UnicodeDecodeError:
        raise EnvelopeError("body", "not UTF-8") from None
    except ValueError as exc:  # JSONDecodeError, and int() of a 5000-digit number
        raise EnvelopeError("body", f"not valid JSON: {exc}") from None
    # Fewer opening brackets than the limit (most bodies) cannot nest deeper: no walk.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth(payload) > MAX_DEPTH:
        raise too_deep
    return payload


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0, ``[]`` is 1)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                return deepest
        stack.extend((c, depth) for c in children if isinstance(c, dict | list))
    return deepest


def parse_time(value: Any, field: str) -> datetime:
    """An ISO 8601 string (naive = UTC) or Unix seconds (number or digit string), as UTC.

    Raises:
        EnvelopeError: naming ``field``.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int | float) or (isinstance(value, str) and value.isdigit()):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str):
            dt = datetime.fromisoformat(value)
            return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except (ValueError, OverflowError, OSError, TypeError):
        pass
    raise EnvelopeError(field, f"not an ISO 8601 time or Unix timestamp: {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _locate(locator: str, payload: Any, headers: Mapping[str, str]) -> tuple[str, Any]:
    """(field name for errors, value or None) for ``json:a.b`` / ``header:Name``."""
    kind, _, name = locator.partition(":")
    if kind == "header":
        key = name.lower()
        value = headers.get(key)
        if value is None:
            # Svix, the reference implementation of Standard Webhooks, names them svix-*.
            for a, b in (("webhook-", "svix-"), ("svix-", "webhook-")):
                if key.startswith(a):
                    value = headers.get(b + key[len(a) :])
        return f"header {name}", value
    node = payload
    for part in name.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return name, node


def _identifier(field: str, value: Any, *, numbers: bool = False) -> str:
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise EnvelopeError(field, "missing" if value is None else "must be a string")
    if not value.strip():
        raise EnvelopeError(field, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise EnvelopeError(field, f"longer than {MAX_ID_LENGTH} characters")
    # Text no store takes: PostgreSQL refuses NUL, and neither SQLite nor PostgreSQL a lone
    # surrogate (the whole group-commit batch used to fail on it).
    if "\x00" in value:
        raise EnvelopeError(field, "contains a NUL character (\\u0000)")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = f"\\u{ord(value[exc.start]):04x}"
            raise EnvelopeError(field, f"contains a lone surrogate ({bad})") from None
    return value


def parse_solveforce(payload: Any) -> ParsedEvent:
    """Validate a SolveForce envelope (see the module docstring)."""
    if not isinstance(payload, dict):
        raise EnvelopeError("body", "must be a JSON object")
    event_type = _identifier("event_type", payload.get("event_type"))
    event_id = _identifier("event_id", payload.get("event_id"))
    ts = payload.get("timestamp")
    if ts is None:
        raise EnvelopeError("timestamp", "missing")
    if not isinstance(ts, str):
        raise EnvelopeError("timestamp", "must be an ISO 8601 string")
    event_time = parse_time(ts, "timestamp")
    if "data" not in payload:
        raise EnvelopeError("data", "missing")
    if not isinstance(payload["data"], dict):
        raise EnvelopeError("data", "must be a JSON object")
    account = payload.get("account")
    if account is not None and not isinstance(account, dict):
        raise EnvelopeError("account", "must be a JSON object when present")
    return ParsedEvent(event_id, event_type, event_time, payload)


def parse_event(body: bytes, headers: Mapping[str, str], source: Source) -> ParsedEvent:
    """Decode and validate ``body`` for ``source``.

    Raises:
        EnvelopeError: the body is not JSON, or a required field is missing or malformed.
    """
    payload = decode_json(body)
    if source.scheme == "solveforce" and source.event_id == "json:event_id":
        return parse_solveforce(payload)
    if not isinstance(payload, dict):
        raise EnvelopeError("body", "must be a JSON object")
    if source.event_id == BODY_DIGEST:
        event_id = "sha256:" + hashlib.sha256(body).hexdigest()[:32]
    else:
        field, value = _locate(source.event_id, payload, headers)
        event_id = _identifier(field, value, numbers=True)
    field, value = _locate(source.event_type, payload, headers)
    event_type = _identifier(field, value)
    event_time = None
    if source.event_time is not None:
        field, value = _locate(source.event_time, payload, headers)
        if value is not None:
            event_time = parse_time(value, field)
    return ParsedEvent(event_id, event_type, event_time, payload)


def parse_interaction(body: bytes) -> ParsedEvent:
    """Decode and validate a Slack interactivity form: event type ``slack.<payload.type>``,
    the stable id `hookline.bodies` documents, the parsed payload.

    Raises:
        EnvelopeError: naming the field: ``payload`` missing or not a JSON object, or the
            payload fields the id is made of.
    """
    try:
        text = form_payload(body)
    except BodyError as exc:
        raise EnvelopeError(exc.field, exc.detail) from None
    try:
        payload = decode_json(text.encode())
    except EnvelopeError as exc:
        raise EnvelopeError(FORM_FIELD, exc.detail) from None
    if not isinstance(payload, dict):
        raise EnvelopeError(FORM_FIELD, f"must be a JSON object, not {type(payload).__name__}")
    try:
        event_type, event_id = interaction_type(payload), interaction_id(payload)
    except BodyError as exc:
        raise EnvelopeError(exc.field, exc.detail) from None
    return ParsedEvent(
        _identifier("event_id", event_id),
        _identifier("type", event_type),
        interaction_time(payload),
        payload,
    )
