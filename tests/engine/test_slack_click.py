"""`hookline click`: what it sends is what Slack sends, signed as Slack signs."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import pytest
from click.testing import CliRunner
from slack_sdk.signature import SignatureVerifier

from hookline.bodies import interaction_id, interaction_time, interaction_type
from hookline.engine.prefect_server import free_port
from hookline.engine.slack_click import block_actions, click_command, slack_signature

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's documented example signing secret


def test_the_signature_is_slack_sdk_s() -> None:
    body = urlencode({"payload": json.dumps({"type": "block_actions"})}).encode()
    verifier = SignatureVerifier(SECRET)
    assert slack_signature(body, SECRET, 1531420618) == verifier.generate_signature(
        timestamp="1531420618", body=body
    )


def test_the_payload_is_a_click_the_receiver_names_like_slack_s() -> None:
    payload = block_actions(
        "outage.acknowledge",
        "svc_voice_001",
        user="jane",
        channel="C024BE91L",
        message_ts="1705314600.000100",
        now=1705315000.0002,
    )
    assert interaction_type(payload) == "slack.block_actions"
    assert interaction_id(payload) == "1705315000.000200:U0HOOKLINE:1705314600.000100"
    assert interaction_time(payload) is not None
    [action] = payload["actions"]
    assert (action["action_id"], action["value"]) == ("outage.acknowledge", "svc_voice_001")


def test_without_a_secret_it_says_where_one_comes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    monkeypatch.setenv("HOOKLINE_HOME", str(tmp_path))
    result = CliRunner().invoke(click_command, ["outage.acknowledge", "svc_1"])
    assert result.exit_code == 1
    assert "no Slack signing secret: pass --secret or set SLACK_SIGNING_SECRET" in result.output


def test_a_receiver_that_is_not_there_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}/webhooks/slack"
    result = CliRunner().invoke(
        click_command, ["outage.resolve", "svc_1", "--secret", SECRET, "--url", url]
    )
    assert result.exit_code == 1
    assert f"cannot reach {url}" in result.output and "hookline up" in result.output


def test_the_form_carries_one_payload_field() -> None:
    payload = block_actions("a", "v", user="u", channel="#c", message_ts=None, now=1.5)
    body = urlencode({"payload": json.dumps(payload)})
    assert list(parse_qs(body)) == ["payload"]
    assert "message_ts" not in payload["container"]  # no ts given: none invented
