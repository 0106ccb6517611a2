"""`hookline click`: send the request Slack sends when someone clicks a button on an alert.

With `hookline up` there is no Slack to click in; this signs a ``block_actions`` interaction
(Slack's documented payload, form-encoded as ``payload=<JSON>``, ``X-Slack-Signature: v0=``)
and posts it to the ``slack`` source, so the click recipes can be tried end to end:

    hookline click outage.acknowledge svc_voice_001 --user jane.doe
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click
import httpx

from hookline.cli import CommandError
from hookline.config import get_settings
from hookline.engine.send import SendError


def slack_signature(body: bytes, secret: str, timestamp: int) -> str:
    """``v0=<hex HMAC-SHA256(secret, "v0:<timestamp>:<body>")>``, Slack's request signature."""
    base = b"v0:" + str(timestamp).encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def block_actions(
    action_id: str,
    value: str,
    *,
    user: str,
    channel: str,
    message_ts: str | None,
    now: float,
) -> dict[str, Any]:
    """A ``block_actions`` payload as Slack sends it for one button click."""
    action_ts = f"{now:.6f}"
    container: dict[str, Any] = {"type": "message", "channel_id": channel, "is_ephemeral": False}
    if message_ts:
        container["message_ts"] = message_ts
    return {
        "type": "block_actions",
        "user": {"id": "U0HOOKLINE", "username": user, "name": user, "team_id": "T0HOOKLINE"},
        "api_app_id": "A0HOOKLINE",
        "container": container,
        "trigger_id": f"{int(now)}.0.hookline-click",
        "team": {"id": "T0HOOKLINE", "domain": "hookline-local"},
        "channel": {"id": channel, "name": channel.lstrip("#")},
        "message": {"type": "message", "ts": message_ts or action_ts, "text": ""},
        "response_url": "https://hooks.slack.com/actions/T0HOOKLINE/0/hookline-click",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "hookline-alert-actions",
                "value": value,
                "type": "button",
                "action_ts": action_ts,
                "text": {"type": "plain_text", "text": action_id, "emoji": True},
            }
        ],
    }


def post_click(payload: dict[str, Any], *, url: str, secret: str, now: float) -> httpx.Response:
    """POST ``payload`` as Slack does: form-encoded, signed with ``secret``."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = int(now)
    try:
        return httpx.post(
            url,
            content=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": str(timestamp),
                "X-Slack-Signature": slack_signature(body, secret, timestamp),
            },
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise SendError(f"cannot reach {url}: {exc} (is `hookline up` running?)") from None


def _default_secret() -> str | None:
    """SLACK_SIGNING_SECRET, else the development secret `hookline up` made."""
    if os.environ.get("SLACK_SIGNING_SECRET"):
        return os.environ["SLACK_SIGNING_SECRET"]
    path: Path = get_settings().home / "dev-slack-secret"
    return path.read_text().strip() if path.exists() else None


@click.command("click")
@click.argument("action_id")
@click.argument("value")
@click.option("--user", default=lambda: os.environ.get("USER") or "on-call", show_default="$USER")
@click.option(
    "--channel",
    default=lambda: os.environ.get("SLACK_ALERT_CHANNEL") or "#service-alerts",
    show_default="$SLACK_ALERT_CHANNEL or #service-alerts",
    help="The channel of the alert clicked.",
)
@click.option("--ts", "message_ts", default=None, help="The ts of the alert message clicked.")
@click.option(
    "--url",
    default=None,
    help="Receiver URL [default: $HOOKLINE_SLACK_URL or http://127.0.0.1:8000/webhooks/slack].",
)
@click.option(
    "--secret",
    default=None,
    help="Signing secret [default: $SLACK_SIGNING_SECRET or the one `hookline up` made].",
)
def click_command(
    action_id: str,
    value: str,
    user: str,
    channel: str,
    message_ts: str | None,
    url: str | None,
    secret: str | None,
) -> None:
    """Click a button as Slack would: e.g. `hookline click outage.acknowledge svc_voice_001`."""
    url = url or os.environ.get("HOOKLINE_SLACK_URL") or "http://127.0.0.1:8000/webhooks/slack"
    secret = secret or _default_secret()
    if not secret:
        raise CommandError(
            "no Slack signing secret: pass --secret or set SLACK_SIGNING_SECRET "
            "(`hookline up` makes one when it is unset)"
        )
    now = time.time()
    payload = block_actions(
        action_id, value, user=user, channel=channel, message_ts=message_ts, now=now
    )
    try:
        response = post_click(payload, url=url, secret=secret, now=now)
    except SendError as exc:
        raise CommandError(str(exc)) from None
    click.echo(
        f"slack.block_actions {action_id}={value} by {user} -> {response.status_code} "
        f"{response.text.strip() or '(empty: stored)'}"
    )
    if response.status_code != 200:
        sys.exit(1)
