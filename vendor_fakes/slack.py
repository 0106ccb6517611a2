"""Fake Slack: Web API (``/api/<method>``: auth.test, chat.postMessage, chat.update,
chat.getPermalink) and one incoming webhook (``/services/T000/B000/<secret>``).

Speaks like Slack: HTTP 200 with ``{"ok": false, "error": "invalid_auth"}`` for API errors,
HTTP 429 + ``Retry-After`` when rate limited, plain-text bodies from incoming webhooks.
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

from vendor_fakes.base import FakeServer, Request, Response

TOKEN = "xoxb-hookline-fake-token"
TEAM_ID = "T0HOOKLINE"
WEBHOOK_PATH = "/services/T000HOOK/B000HOOK/hookline-fake-webhook-secret"


def channel_id(channel: str) -> str:
    """``#alerts`` -> a stable ``C...`` id; ids (C/G/D...) pass through."""
    name = channel.lstrip("#")
    if name[:1] in {"C", "G", "D"} and name.isupper():
        return name
    return "C" + hashlib.sha256(name.encode()).hexdigest()[:8].upper()


class FakeSlack(FakeServer):
    name = "slack"
    #: Channels that answer ``channel_not_found``.
    missing_channels = {"#does-not-exist"}

    def reset_state(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.webhook_messages: list[dict[str, Any]] = []
        # a ts is never reused, not even after a reset: as in Slack, where a recipe that kept
        # an old message's ts (in memory) must never find, and edit, a newer message with it
        if not hasattr(self, "_ts"):
            self._ts = itertools.count(1)

    def state(self) -> Any:
        return {"messages": self.messages, "webhook_messages": self.webhook_messages}

    def env(self) -> dict[str, str]:
        return {
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_API_URL": f"{self.url}/api/",
            "SLACK_WEBHOOK_URL": f"{self.url}{WEBHOOK_PATH}",
        }

    def error_response(self, status: int, request: Request) -> Response:
        if request.path.startswith("/services/"):
            text = "rate_limited" if status == 429 else "internal_error"
            return Response(status, text, content_type="text/plain")
        error = "ratelimited" if status == 429 else "internal_error"
        return Response(status, {"ok": False, "error": error})

    def route(self, request: Request) -> Response:
        if request.path.startswith("/services/"):
            return self._webhook(request)
        if not request.path.startswith("/api/"):
            return Response(404, "not found", content_type="text/plain")
        method = request.path[len("/api/") :]
        args: dict[str, Any] = dict(request.query)
        if isinstance(request.json, dict):
            args.update(request.json)
        token = (request.header("Authorization") or "").removeprefix("Bearer ").strip()
        token = token or str(args.pop("token", ""))
        if not token:
            return self._error("not_authed")
        if token != TOKEN:
            return self._error("invalid_auth")
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.getPermalink": self._permalink,
        }.get(method)
        if handler is None:
            return self._error("unknown_method")
        return handler(args)

    @staticmethod
    def _error(error: str, *messages: str) -> Response:
        body: dict[str, Any] = {"ok": False, "error": error}
        if messages:
            body["response_metadata"] = {"messages": list(messages)}
        return Response(200, body)

    def _auth_test(self, args: dict[str, Any]) -> Response:
        # Slack's answer for a bot token: the workspace URL ends in a slash
        body = {
            "ok": True,
            "url": f"{self.url}/",
            "team": "Hookline",
            "user": "hookline",
            "team_id": TEAM_ID,
            "user_id": "U0HOOKLINE",
            "bot_id": "B0HOOKLINE",
        }
        return Response(200, body)

    def _check_content(self, args: dict[str, Any]) -> Response | None:
        if not (args.get("text") or args.get("blocks") or args.get("attachments")):
            return self._error("no_text")
        for name in ("blocks", "attachments"):
            items = args.get(name)
            if items is None:
                continue
            if not isinstance(items, list) or not all(isinstance(b, dict) for b in items):
                return self._error(f"invalid_{name}", f"[ERROR] {name} must be a list of objects")
            if name == "blocks" and not all("type" in b for b in items):
                return self._error("invalid_blocks", "[ERROR] missing required field: type")
            nested = items if name == "blocks" else [b for a in items for b in a.get("blocks", [])]
            problem = _actions_problem(nested)
            if problem is not None:
                return self._error(f"invalid_{name}", f"[ERROR] {problem}")
        return None

    def _post_message(self, args: dict[str, Any]) -> Response:
        channel = str(args.get("channel") or "")
        if not channel or channel in self.missing_channels:
            return self._error("channel_not_found")
        problem = self._check_content(args)
        if problem is not None:
            return problem
        ts = f"1700000000.{next(self._ts):06d}"
        message = {"channel": channel_id(channel), "ts": ts, **args}
        message["channel"] = channel_id(channel)
        self.messages.append(message)
        reply = {k: v for k, v in message.items() if k in {"text", "blocks", "attachments"}}
        return Response(
            200,
            {"ok": True, "channel": message["channel"], "ts": ts, "message": reply},
        )

    def _find(self, channel: str, ts: str) -> dict[str, Any] | None:
        cid = channel_id(channel) if channel else ""
        return next((m for m in self.messages if m["channel"] == cid and m["ts"] == ts), None)

    def _update(self, args: dict[str, Any]) -> Response:
        message = self._find(str(args.get("channel") or ""), str(args.get("ts") or ""))
        if message is None:
            return self._error("message_not_found")
        problem = self._check_content(args)
        if problem is not None:
            return problem
        for key in ("text", "blocks", "attachments"):
            if key in args:
                message[key] = args[key]
        message["edited"] = True
        return Response(
            200, {"ok": True, "channel": message["channel"], "ts": message["ts"], "text": ""}
        )

    def _permalink(self, args: dict[str, Any]) -> Response:
        message = self._find(str(args.get("channel") or ""), str(args.get("message_ts") or ""))
        if message is None:
            return self._error("message_not_found")
        link = f"{self.url}/archives/{message['channel']}/p{message['ts'].replace('.', '')}"
        thread = message.get("thread_ts")
        if thread and thread != message["ts"]:  # a reply also names its thread, as in Slack
            link += f"?thread_ts={thread}&cid={message['channel']}"
        return Response(200, {"ok": True, "channel": message["channel"], "permalink": link})

    def _webhook(self, request: Request) -> Response:
        if request.path != WEBHOOK_PATH:
            return Response(404, "no_service", content_type="text/plain")
        body = request.json
        if not isinstance(body, dict):
            return Response(400, "invalid_payload", content_type="text/plain")
        if not (body.get("text") or body.get("blocks") or body.get("attachments")):
            return Response(400, "no_text", content_type="text/plain")
        self.webhook_messages.append(body)
        return Response(200, "ok", content_type="text/html")


def _actions_problem(blocks: list[Any]) -> str | None:
    """What Slack says about an invalid ``actions`` block of buttons, or None."""
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") != "actions":
            continue
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
            return "must provide between 1 and 25 elements [json-pointer:/elements]"
        seen: set[str] = set()
        for i, e in enumerate(elements):
            where = f"[json-pointer:/elements/{i}]"
            if e.get("type") != "button":
                continue
            text = e.get("text")
            if not isinstance(text, dict) or text.get("type") != "plain_text":
                return f"must be a plain_text text object {where}"
            if not 1 <= len(str(text.get("text", ""))) <= 75:
                return f"must be between 1 and 75 characters {where}/text"
            action_id = str(e.get("action_id", ""))
            if not 1 <= len(action_id) <= 255 or action_id in seen:
                return f"action_id must be unique and 1-255 characters {where}/action_id"
            seen.add(action_id)
            if len(str(e.get("value", ""))) > 2000:
                return f"must be less than 2001 characters {where}/value"
            if e.get("style") not in (None, "primary", "danger"):
                return f"must be one of primary, danger {where}/style"
    return None
