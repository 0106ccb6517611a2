"""Slack actions over an injected `slack_sdk.WebClient` (or `WebhookClient` for webhooks).

`web_client` builds the client with ``retry_handlers=[]``: slack_sdk would otherwise retry
connection errors itself, and the engine's step runner already retries `TransientError` (one
retry layer per step; see docs/connectors.md#retries).

Permalinks are built here, not asked for: ``chat.getPermalink`` per message is one more call
on a rate-limited method in a storm. A client looks its workspace URL up once
(``auth.test``, `workspace_url`) and each permalink is that URL, the channel id and the ts
(`permalink`), in the format ``chat.getPermalink`` answers.
"""

from __future__ import annotations

import logging
import threading
import weakref
from contextlib import AbstractContextManager
from typing import Any, TypedDict

from pydantic import Field, SecretStr, field_validator
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from hookline.connectors._http import (
    connector_errors,
    error_for_exception,
    parse_retry_after,
    shorten,
)
from hookline.connectors.errors import ConnectorError, PermanentError, TransientError
from hookline.connectors.registry import ClientContext, Connector
from hookline.connectors.settings import ConnectorSettings
from hookline.connectors.slack_blocks import (
    Severity,
    fallback_text,
    render_alert,
)

log = logging.getLogger(__name__)

# ok:false errors that a later retry may cure (https://docs.slack.dev/reference/methods).
_TRANSIENT = {
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
}
_AUTH = {"invalid_auth", "not_authed", "token_revoked", "token_expired", "account_inactive"}

#: Parameters whose text Slack reads as mrkdwn (``&``, ``<``, ``>`` are control characters):
#: recipe templates escape what they insert into these (docs/recipes.md#slack-text).
MRKDWN_PARAMS = frozenset(
    {"text", "blocks", "attachments", "title", "summary", "fields", "run_url"}
)


class PostMessageOutput(TypedDict):
    ts: str
    channel: str
    permalink: str | None


class UpdateMessageOutput(TypedDict):
    ts: str
    channel: str


class PostWebhookOutput(TypedDict):
    status: int


def _errors(method: str) -> AbstractContextManager[None]:
    """Map slack_sdk failures to Transient/PermanentError with Slack's own error code."""
    # urllib's failures (URLError, timeouts, refused/reset connections) are OSErrors
    return connector_errors("slack", method, _slack_error)


def _slack_error(exc: Exception, method: str) -> ConnectorError | None:
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = int(response.status_code)
        data = response.data if isinstance(response.data, dict) else {}
        code = str(data.get("error") or f"HTTP {status}")
        details = data.get("response_metadata", {}).get("messages") or []
        message = f"slack {method}: {code}"
        if details:
            message += ": " + shorten("; ".join(str(d) for d in details))
        if status == 429 or status >= 500 or code in _TRANSIENT:
            headers = {str(k): str(v) for k, v in (response.headers or {}).items()}
            after = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
            return TransientError(message, connector="slack", status=status, retry_after=after)
        if code in _AUTH:
            message += " (check SLACK_BOT_TOKEN; docs/connectors.md#slack)"
        return PermanentError(message, connector="slack", status=status)
    if isinstance(exc, SlackClientError):
        return error_for_exception("slack", exc, what=method) or PermanentError(
            f"slack {method}: {exc}", connector="slack"
        )
    return None


def _require_content(method: str, text: str | None, blocks: Any, attachments: Any) -> None:
    if not text and not blocks and not attachments:
        raise PermanentError(
            f"slack {method}: give text, blocks or attachments (text is also the "
            "notification fallback when blocks are given)",
            connector="slack",
        )


class SlackSettings(ConnectorSettings):
    """``connections.slack``."""

    token: SecretStr | None = Field(
        default=None,
        description="Bot token (xoxb-...).",
        json_schema_extra={"env": "SLACK_BOT_TOKEN"},
    )
    api_url: str = Field(
        default="https://slack.com/api/", description="Web API base URL, ending in /api/."
    )
    webhook_url: SecretStr | None = Field(
        default=None, description="Incoming-webhook URL for slack.post_webhook."
    )

    @field_validator("api_url")
    @classmethod
    def _slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"


def web_client(settings: SlackSettings, context: ClientContext) -> WebClient:
    """The Web API client (``connections.slack.token``)."""
    token = settings.token.get_secret_value() if settings.token else ""
    # retry_handlers=[]: slack_sdk retries connection errors by default; the engine's step
    # runner owns retries, and two layers would multiply attempts (docs/connectors.md#retries).
    # float seconds: slack_sdk hands its timeout to urllib, which takes fractions.
    return WebClient(
        token=token,
        base_url=settings.api_url,
        timeout=settings.timeout,  # type: ignore[arg-type]
        ssl=context.ssl_context(),
        retry_handlers=[],
    )


def webhook_client(settings: SlackSettings, context: ClientContext) -> WebhookClient:
    """The incoming-webhook client (``connections.slack.webhook_url``)."""
    url = settings.webhook_url.get_secret_value() if settings.webhook_url else ""
    return WebhookClient(
        url=url,
        timeout=settings.timeout,  # type: ignore[arg-type]
        ssl=context.ssl_context(),
        retry_handlers=[],
    )


class _Workspace:
    """One client's workspace URL, looked up at most once at a time."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.url: str | None = None


_workspaces: weakref.WeakKeyDictionary[WebClient, _Workspace] = weakref.WeakKeyDictionary()
_workspaces_lock = threading.Lock()


def workspace_url(client: WebClient) -> str:
    """The workspace URL (``https://acme.slack.com/``) of ``client``'s token, from one
    ``auth.test`` per client, kept for the client's life. A failure is not kept: the next
    call asks again.

    Raises:
        TransientError: rate limited, Slack down, network trouble.
        PermanentError: the token is refused, or Slack's answer has no ``url``.
    """
    with _workspaces_lock:
        workspace = _workspaces.setdefault(client, _Workspace())
    with workspace.lock:  # concurrent first posts on one client ask once
        if workspace.url is None:
            with _errors("auth.test"):
                response = client.auth_test()
            url = response.get("url")
            if not url:
                raise PermanentError("slack auth.test: the answer has no url", connector="slack")
            workspace.url = str(url)
        return workspace.url


def permalink(workspace: str, channel: str, ts: str, thread_ts: str | None = None) -> str:
    """The permalink of message ``ts`` in ``channel`` (its id), as ``chat.getPermalink`` gives
    it: ``<workspace>/archives/<channel>/p<ts without the dot>``; a reply in a thread also
    names its thread: ``?thread_ts=<thread_ts>&cid=<channel>``."""
    link = f"{workspace.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"
    if thread_ts and thread_ts != ts:
        link += f"?thread_ts={thread_ts}&cid={channel}"
    return link


def _permalink(client: WebClient, channel: str, ts: str, thread_ts: str | None) -> str | None:
    # The message is already posted: failing the step now would make a retry post it twice,
    # so a permalink that cannot be had is None (the reason logged), not an error.
    try:
        workspace = workspace_url(client)
    except (ConnectorError, OSError) as exc:
        log.warning("slack: message %s posted in %s without a permalink: %s", ts, channel, exc)
        return None
    return permalink(workspace, channel, ts, thread_ts)


def post_message(
    client: WebClient,
    *,
    channel: str,
    text: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    thread_ts: str | None = None,
    reply_broadcast: bool = False,
    username: str | None = None,
    icon_emoji: str | None = None,
    icon_url: str | None = None,
    unfurl_links: bool = False,
    idempotency_key: str | None = None,
) -> PostMessageOutput:
    """Post a message (text and/or Block Kit blocks) to a channel or thread."""
    _require_content("chat.postMessage", text, blocks, attachments)
    # Slack shows ``text`` in notifications when blocks are given; never send it empty.
    text = text or fallback_text(blocks, attachments)
    args: dict[str, Any] = {"channel": channel, "unfurl_links": unfurl_links}
    optional = {
        "text": text,
        "blocks": blocks,
        "attachments": attachments,
        "thread_ts": thread_ts,
        "username": username,
        "icon_emoji": icon_emoji,
        "icon_url": icon_url,
    }
    args.update({k: v for k, v in optional.items() if v is not None})
    if thread_ts is not None and reply_broadcast:
        args["reply_broadcast"] = True
    with _errors("chat.postMessage"):
        response = client.chat_postMessage(**args)
    ts, channel_id = str(response["ts"]), str(response["channel"])
    link = _permalink(client, channel_id, ts, thread_ts)
    return {"ts": ts, "channel": channel_id, "permalink": link}


def update_message(
    client: WebClient,
    *,
    channel: str,
    ts: str,
    text: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    idempotency_key: str | None = None,
) -> UpdateMessageOutput:
    """Replace the text/blocks of a message posted earlier (by its channel and ts)."""
    _require_content("chat.update", text, blocks, attachments)
    text = text or fallback_text(blocks, attachments)
    args: dict[str, Any] = {"channel": channel, "ts": ts}
    optional = {"text": text, "blocks": blocks, "attachments": attachments}
    args.update({k: v for k, v in optional.items() if v is not None})
    with _errors("chat.update"):
        response = client.chat_update(**args)
    return {"ts": str(response["ts"]), "channel": str(response["channel"])}


def post_alert(
    client: WebClient,
    *,
    channel: str,
    title: str,
    severity: Severity = "warning",
    summary: str | None = None,
    fields: dict[str, Any] | None = None,
    run_url: str | None = None,
    thread_ts: str | None = None,
    reply_broadcast: bool = False,
    username: str | None = None,
    icon_emoji: str | None = None,
    buttons: list[dict[str, Any]] | None = None,
    idempotency_key: str | None = None,
) -> PostMessageOutput:
    """Post a colour-coded alert: severity emoji, title, summary, fields, buttons, link to the
    run. A click on a button reaches the ``slack`` source as a ``slack.block_actions`` event."""
    alert = render_alert(
        title=title,
        severity=severity,
        summary=summary,
        fields=fields,
        run_url=run_url,
        buttons=buttons,
    )
    return post_message(
        client,
        channel=channel,
        text=alert["text"],
        attachments=alert["attachments"],
        thread_ts=thread_ts,
        reply_broadcast=reply_broadcast,
        username=username,
        icon_emoji=icon_emoji,
    )


def update_alert(
    client: WebClient,
    *,
    channel: str,
    ts: str,
    title: str,
    severity: Severity = "resolved",
    summary: str | None = None,
    fields: dict[str, Any] | None = None,
    run_url: str | None = None,
    buttons: list[dict[str, Any]] | None = None,
    idempotency_key: str | None = None,
) -> UpdateMessageOutput:
    """Re-render an alert posted earlier, e.g. turn it green when the service recovers; the
    buttons given replace the old ones (none: the buttons are gone)."""
    alert = render_alert(
        title=title,
        severity=severity,
        summary=summary,
        fields=fields,
        run_url=run_url,
        buttons=buttons,
    )
    return update_message(
        client, channel=channel, ts=ts, text=alert["text"], attachments=alert["attachments"]
    )


def post_webhook(
    client: WebhookClient,
    *,
    text: str | None = None,
    blocks: list[dict[str, Any]] | None = None,
    attachments: list[dict[str, Any]] | None = None,
    idempotency_key: str | None = None,
) -> PostWebhookOutput:
    """Post to the configured incoming-webhook URL (SLACK_WEBHOOK_URL)."""
    _require_content("incoming webhook", text, blocks, attachments)
    text = text or fallback_text(blocks, attachments)
    with _errors("incoming webhook"):
        response = client.send(text=text, blocks=blocks, attachments=attachments)
    status = int(response.status_code)
    if status >= 400:
        # Webhook errors are plain text such as "invalid_payload" or "no_service".
        message = f"slack incoming webhook: HTTP {status}: {shorten(str(response.body))}"
        if status == 429 or status >= 500:
            headers = {str(k).lower(): str(v) for k, v in (response.headers or {}).items()}
            raise TransientError(
                message,
                connector="slack",
                status=status,
                retry_after=parse_retry_after(headers.get("retry-after")),
            )
        raise PermanentError(message, connector="slack", status=status)
    return {"status": status}


CONNECTOR = Connector(
    name="slack",
    settings=SlackSettings,
    client=web_client,
    requires=("token",),
    actions=(post_message, update_message, post_alert, update_alert),
    mrkdwn=MRKDWN_PARAMS,
)

#: The incoming webhook is another client, from the same ``connections.slack`` settings.
WEBHOOK_CONNECTOR = Connector(
    name="slack_webhook",
    section="slack",
    settings=SlackSettings,
    client=webhook_client,
    requires=("webhook_url",),
    actions=(post_webhook,),
    mrkdwn=MRKDWN_PARAMS,
)
