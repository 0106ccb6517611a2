"""A stored body as the data it carries: JSON, or a Slack interactivity form.

Slack sends a click on a button, a modal submission or a shortcut to the app's request URL
as ``application/x-www-form-urlencoded`` with one field, ``payload``, holding the JSON of the
interaction (docs.slack.dev/interactivity/handling-user-interaction). The receiver reads such
a body here to name the event it stores, and the recipes' `Event` (dispatcher, flow runs,
``hookline try``/``events show``/artifacts) reads it here to give a recipe the payload as
``data``: one reading, so they always agree.

An interaction's event type is ``slack.<payload.type>``; its id is stable, so Slack's
retries and double clicks are duplicates:

    block_actions     <actions[0].action_ts>:<user.id>:<container.message_ts or ''>
    view_submission   <view.id>:<view.hash>
    view_closed       closed:<view.id>:<view.hash>
    any other type    <trigger_id>   (shortcut, message_action, ...)

A block_actions event's time is its ``actions[0].action_ts`` (to the second), so templates
see when the click happened as ``timestamp``; other interactions carry no time.

Every problem is a `BodyError` naming the field (``payload``, ``actions[0].action_ts``, ...).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from hookline.errors import HooklineError

FORM_FIELD = "payload"
TYPE_PREFIX = "slack."


class BodyError(HooklineError):
    """A body is not the form or payload it claims to be; ``field`` names what is wrong."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def is_form(content_type: str | None) -> bool:
    """``application/x-www-form-urlencoded``, any parameters."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded"


def form_payload(body: bytes | str) -> str:
    """The text of the form's ``payload`` field.

    Raises:
        BodyError: ``body`` is not UTF-8, or ``payload`` is missing or given more than once.
    """
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise BodyError("body", "form is not UTF-8") from None
    fields = parse_qs(text, keep_blank_values=True, max_num_fields=100)
    values = fields.get(FORM_FIELD)
    if not values:
        names = ", ".join(sorted(fields)[:5]) or "none"
        raise BodyError(
            FORM_FIELD,
            f"missing: Slack sends interactions as a form with a '{FORM_FIELD}' field"
            f" holding JSON (fields here: {names})",
        )
    if len(values) > 1:
        raise BodyError(FORM_FIELD, f"given {len(values)} times; send it once")
    return values[0]


def payload_object(text: str) -> dict[str, Any]:
    """The payload's JSON, which must be an object.

    Raises:
        BodyError: field ``payload``.
    """
    try:
        payload = json.loads(text)
    except RecursionError:
        raise BodyError(FORM_FIELD, "JSON nested too deeply") from None
    except ValueError as exc:
        raise BodyError(FORM_FIELD, f"not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise BodyError(FORM_FIELD, f"must be a JSON object, not {type(payload).__name__}")
    return payload


def _get(payload: dict[str, Any], path: str) -> Any:
    node: Any = payload
    for part in path.replace("[0]", ".0").split("."):
        if part == "0":
            node = node[0] if isinstance(node, list) and node else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return node


def _required(payload: dict[str, Any], *paths: str) -> list[str]:
    values = [_get(payload, p) for p in paths]
    missing = [p for p, v in zip(paths, values, strict=True) if not isinstance(v, str) or not v]
    if missing:
        raise BodyError(
            ", ".join(missing),
            f"missing from the {payload.get('type')} payload (each must be a non-empty string)",
        )
    return [str(v) for v in values]


def interaction_type(payload: dict[str, Any]) -> str:
    """``slack.<payload.type>``, e.g. ``slack.block_actions``.

    Raises:
        BodyError: field ``type``.
    """
    kind = payload.get("type")
    if not isinstance(kind, str) or not kind:
        raise BodyError("type", "missing from the payload (e.g. 'block_actions')")
    return TYPE_PREFIX + kind


def interaction_id(payload: dict[str, Any]) -> str:
    """The interaction's stable id (the table in the module docstring).

    Raises:
        BodyError: naming the fields missing for the payload's type.
    """
    kind = interaction_type(payload).removeprefix(TYPE_PREFIX)
    if kind == "block_actions":
        action_ts, user = _required(payload, "actions[0].action_ts", "user.id")
        message_ts = _get(payload, "container.message_ts")
        return f"{action_ts}:{user}:{message_ts if isinstance(message_ts, str) else ''}"
    if kind == "view_submission":
        return ":".join(_required(payload, "view.id", "view.hash"))
    if kind == "view_closed":
        return "closed:" + ":".join(_required(payload, "view.id", "view.hash"))
    return _required(payload, "trigger_id")[0]


def interaction_time(payload: dict[str, Any]) -> datetime | None:
    """When a block_actions click happened (``actions[0].action_ts``, to the second), else
    None."""
    if payload.get("type") != "block_actions":
        return None
    try:
        seconds = float(_get(payload, "actions[0].action_ts"))
    except (TypeError, ValueError):
        return None
    if not math.isfinite(seconds) or not 0 <= seconds < 253402300800:  # before year 10000
        return None
    return datetime.fromtimestamp(int(seconds), tz=UTC)


def decode_body(body: bytes | str) -> Any:
    """The data a stored body carries: its JSON, else a Slack form's payload (a form is never
    valid JSON, so the two cannot be confused; no content type needed).

    Raises:
        BodyError: neither (field ``body``), or a form whose payload is unusable.
    """
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        not_json = f"not JSON ({exc})"
    try:
        text = form_payload(body)
    except BodyError:
        raise BodyError("body", f"{not_json}, nor a form with a {FORM_FIELD!r} field") from None
    return payload_object(text)
