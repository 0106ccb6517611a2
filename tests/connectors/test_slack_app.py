"""slack-app-manifest.yaml asks for what the code needs, and sends Slack's requests where the
shipped configuration verifies them."""

from __future__ import annotations

import ast
from pathlib import Path
from urllib.parse import urlsplit

import yaml

ROOT = Path(__file__).parents[2]
MANIFEST = yaml.safe_load((ROOT / "slack-app-manifest.yaml").read_text())

#: The bot scope each slack_sdk call of the connector needs (https://docs.slack.dev/reference/methods).
SCOPES = {
    "auth_test": None,  # no scope
    "chat_postMessage": "chat:write",
    "chat_update": "chat:write",
    "send": "incoming-webhook",  # WebhookClient.send: the URL the install created
}


def _sdk_calls() -> set[str]:
    tree = ast.parse((ROOT / "hookline" / "connectors" / "slack.py").read_text())
    return {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "client"
    }


def test_the_manifest_asks_for_the_scope_of_every_call_the_connector_makes() -> None:
    calls = _sdk_calls()
    assert {"chat_postMessage", "chat_update"} <= calls  # the walk finds the calls
    unknown = calls - set(SCOPES)
    assert not unknown, f"add the scope of {unknown} to SCOPES and to slack-app-manifest.yaml"
    needed = {SCOPES[c] for c in calls} - {None}
    assert needed <= set(MANIFEST["oauth_config"]["scopes"]["bot"])


def test_both_request_urls_are_the_shipped_slack_source_and_clicks_are_on() -> None:
    sources = yaml.safe_load((ROOT / "hookline.yaml").read_text())["sources"]
    [name] = [n for n, s in sources.items() if s["scheme"] == "slack"]
    settings = MANIFEST["settings"]
    urls = [
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
    ]
    for url in urls:
        parts = urlsplit(url)
        assert parts.scheme == "https"  # Slack calls public HTTPS URLs only
        assert parts.path == f"/webhooks/{name}"
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["socket_mode_enabled"] is False  # Slack must POST to the receiver


def test_the_manifest_has_what_slack_requires() -> None:
    assert MANIFEST["_metadata"]["major_version"] in (1, 2)
    assert MANIFEST["display_information"]["name"]
    assert MANIFEST["features"]["bot_user"]["display_name"]  # a bot token needs a bot user
