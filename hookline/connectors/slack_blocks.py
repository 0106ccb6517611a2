"""Block Kit for Slack messages: alerts (severity colour and emoji, title, summary, fields,
buttons, a link to the run), buttons, and the plain-text fallback Slack shows in notifications.

Pure functions, no client: `hookline.connectors.slack` sends what they build.
"""

from __future__ import annotations

from typing import Any, Literal

from hookline.connectors._http import shorten
from hookline.connectors.errors import PermanentError

Severity = Literal["critical", "major", "minor", "warning", "info", "resolved"]

#: Block Kit limits of a button (https://docs.slack.dev/reference/block-kit/block-elements/button-element).
BUTTON_STYLES = ("primary", "danger")
MAX_BUTTONS = 25
_BUTTON_KEYS = {"text", "action_id", "value", "style", "url", "show"}
_BUTTON_LIMITS = {"text": 75, "action_id": 255, "value": 2000, "url": 3000}
#: The ``block_id`` of an alert's buttons, so a click's payload says it came from an alert.
ALERT_ACTIONS_BLOCK = "hookline-alert-actions"

#: (attachment colour, emoji) per severity: red/orange/yellow/amber/blue/green.
SEVERITIES: dict[str, tuple[str, str]] = {
    "critical": ("#d00000", ":red_circle:"),
    "major": ("#f2711c", ":large_orange_circle:"),
    "minor": ("#fbbd08", ":large_yellow_circle:"),
    "warning": ("#ffaa00", ":warning:"),
    "info": ("#2185d0", ":information_source:"),
    "resolved": ("#21ba45", ":white_check_mark:"),
}


def fallback_text(blocks: list[dict[str, Any]] | None, attachments: Any = None) -> str:
    """Plain text for notifications and screen readers, taken from the blocks' own text."""
    parts: list[str] = []
    for block in blocks or []:
        text = block.get("text") if isinstance(block, dict) else None
        if isinstance(text, dict) and text.get("text"):
            parts.append(str(text["text"]))
    for attachment in attachments or []:
        if isinstance(attachment, dict) and (attachment.get("fallback") or attachment.get("text")):
            parts.append(str(attachment.get("fallback") or attachment.get("text")))
        elif isinstance(attachment, dict):
            parts.append(fallback_text(attachment.get("blocks")))
    return shorten(" ".join(p for p in parts if p)) or "(message)"


def render_buttons(buttons: list[dict[str, Any]], *, block_id: str) -> dict[str, Any] | None:
    """An ``actions`` block of Block Kit buttons from ``{text, action_id, value?, style?,
    url?, show?}`` items; an item with ``show`` false is left out (a recipe templates it), and
    None when none is left.

    Raises:
        PermanentError: an item Slack would refuse (``invalid_blocks``), named by position.
    """
    if not isinstance(buttons, list) or not buttons:
        raise PermanentError("slack alert: buttons must be a non-empty list", connector="slack")
    if len(buttons) > MAX_BUTTONS:
        raise PermanentError(
            f"slack alert: {len(buttons)} buttons; Slack allows at most {MAX_BUTTONS}",
            connector="slack",
        )
    elements: list[dict[str, Any]] = []
    for n, item in enumerate(buttons, 1):
        where = f"slack alert: button {n}"
        if not isinstance(item, dict):
            raise PermanentError(f"{where} must be a mapping, not {item!r}", connector="slack")
        unknown = sorted(set(item) - _BUTTON_KEYS)
        if unknown:
            valid = ", ".join(sorted(_BUTTON_KEYS))
            raise PermanentError(
                f"{where}: unknown key {unknown[0]!r}; valid: {valid}", connector="slack"
            )
        for key in ("text", "action_id"):
            if not str(item.get(key) or "").strip():
                raise PermanentError(f"{where}: {key} is required", connector="slack")
        for key, limit in _BUTTON_LIMITS.items():
            if item.get(key) is not None and len(str(item[key])) > limit:
                raise PermanentError(
                    f"{where}: {key} is {len(str(item[key]))} characters; Slack allows {limit}",
                    connector="slack",
                )
        show = item.get("show", True)
        if not isinstance(show, bool):
            raise PermanentError(
                f"{where}: show must be true or false, not {show!r}", connector="slack"
            )
        if not show:
            continue
        style = item.get("style")
        if style is not None and style not in BUTTON_STYLES:
            raise PermanentError(
                f"{where}: style {style!r}; valid: {', '.join(BUTTON_STYLES)} (or none)",
                connector="slack",
            )
        element: dict[str, Any] = {
            "type": "button",
            "text": {"type": "plain_text", "text": str(item["text"]), "emoji": True},
            "action_id": str(item["action_id"]),
        }
        for key in ("value", "style", "url"):
            if item.get(key) is not None:
                element[key] = str(item[key])
        elements.append(element)
    if not elements:
        return None  # every button has show: false
    ids = [e["action_id"] for e in elements]
    if len(set(ids)) != len(ids):
        raise PermanentError(
            f"slack alert: two buttons share an action_id ({', '.join(ids)}); "
            "Slack requires them unique within a block",
            connector="slack",
        )
    return {"type": "actions", "block_id": block_id, "elements": elements}


def render_alert(
    *,
    title: str,
    severity: Severity = "warning",
    summary: str | None = None,
    fields: dict[str, Any] | None = None,
    run_url: str | None = None,
    run_label: str = "View the Prefect run",
    buttons: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``text`` (notification fallback) and coloured ``attachments`` of an alert; its
    ``buttons`` (if any) in an ``actions`` block after the fields."""
    if severity not in SEVERITIES:
        valid = ", ".join(SEVERITIES)
        raise PermanentError(
            f"slack alert: unknown severity {severity!r}; valid: {valid}", connector="slack"
        )
    colour, emoji = SEVERITIES[severity]
    headline = f"{emoji} *{severity.upper()}*: {title}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": headline}}
    ]
    if summary:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": summary}})
    items = [(str(k), "—" if v is None or v == "" else str(v)) for k, v in (fields or {}).items()]
    # Slack allows at most 10 fields per section block.
    for start in range(0, len(items), 10):
        chunk = items[start : start + 10]
        blocks.append(
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"} for k, v in chunk],
            }
        )
    actions = render_buttons(buttons, block_id=ALERT_ACTIONS_BLOCK) if buttons else None
    if actions is not None:
        blocks.append(actions)
    if run_url:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": f"<{run_url}|{run_label}>"}],
            }
        )
    text = f"{severity.upper()}: {title}"
    return {"text": text, "attachments": [{"color": colour, "blocks": blocks}]}
