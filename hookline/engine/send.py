"""`hookline send`: sign and send a SolveForce sample event, like the Stripe CLI's `trigger`."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from hookline.engine.errors import EngineError


class SendError(EngineError):
    """The event could not be built or sent; the message says why."""


def solveforce_signature(body: bytes, secret: str) -> str:
    """``sha256=<hex HMAC-SHA256(secret, body)>``, as SolveForce's own verifier computes it."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def set_path(payload: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as JSON when it parses, else kept as a string)."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise SendError(
            f"--set {assignment!r}: expected PATH=VALUE, e.g. data.current_status=outage"
        )
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    keys = path.split(".")
    node: Any = payload
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def build_event(
    event_type: str | None,
    file: Path | None,
    *,
    sets: tuple[str, ...] = (),
    keep_id: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The payload to send: a sample (by event type) or a file, with a fresh id and time."""
    from hookline import samples

    if file is not None:
        try:
            payload: Any = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SendError(f"{file}: {exc}") from None
        if not isinstance(payload, dict):
            raise SendError(f"{file}: the event must be a JSON object")
    elif event_type is not None:
        try:
            payload = samples.load(event_type)
        except KeyError as exc:
            raise SendError(str(exc.args[0])) from None
    else:
        raise SendError("give an event type (e.g. service.status.changed) or --file")
    if not isinstance(payload, dict):
        raise SendError("the event must be a JSON object")
    if not keep_id:
        payload["event_id"] = f"evt_{secrets.token_hex(8)}"
        payload["timestamp"] = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for s in sets:
        set_path(payload, s)
    return payload


def send(
    payload: dict[str, Any], *, url: str, secret: str, timeout: float = 30.0
) -> httpx.Response:
    """POST ``payload`` signed with ``secret``; return the receiver's answer."""
    body = json.dumps(payload).encode()
    try:
        return httpx.post(
            url,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-SolveForce-Signature": solveforce_signature(body, secret),
            },
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        raise SendError(f"cannot reach {url}: {exc} (is `hookline up` running?)") from None
