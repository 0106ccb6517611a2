"""The Slack source: Events API (JSON) and interactivity (form ``payload=``), signed with
slack_sdk's own code, payloads modelled on Slack's documented examples
(docs.slack.dev/reference/interaction-payloads/block-actions-payload,
api.slack.com/events/url_verification, .../view-interactions-payload)."""

from __future__ import annotations

import copy
import json
import logging
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import yaml
from click.testing import CliRunner
from slack_sdk.signature import SignatureVerifier

from hookline.bodies import form_payload, interaction_id, interaction_type, payload_object
from hookline.config import CoreSettings, HooklineConfig, get_settings, load_config
from hookline.errors import ConfigError
from hookline.inbox import SQLiteInbox
from hookline.receiver.app import create_app
from hookline.receiver.sources import load_receiver_config, load_sources
from hookline.recipes.errors import EventError
from hookline.recipes.event import Event

from .conftest import Server

REPO = Path(__file__).resolve().parents[2]
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's docs' example signing secret

SOURCES: dict[str, Any] = {
    "slack": {
        "scheme": "slack",
        "secrets": ["${SLACK_SIGNING_SECRET:-}", "${SLACK_SIGNING_SECRET_PREVIOUS:-}"],
        "optional": True,
    },
    "quiet": {"scheme": "slack", "secrets": ["${QUIET_SIGNING_SECRET}"], "optional": True},
    "solveforce": {"scheme": "solveforce", "secrets": ["whsec-test-solveforce"]},
}

# Slack's documented block_actions example, as a click on an alert's Acknowledge button.
BLOCK_ACTIONS: dict[str, Any] = {
    "type": "block_actions",
    "user": {"id": "U123456", "username": "jsmith", "name": "jsmith", "team_id": "T123456"},
    "api_app_id": "A123456",
    "token": "9s8d9as89d8as9d8as989",
    "container": {
        "type": "message",
        "message_ts": "1548261231.000200",
        "channel_id": "C123456",
        "is_ephemeral": False,
    },
    "trigger_id": "12345.98765.abcd2358fdea",
    "team": {"id": "T123456", "domain": "example"},
    "channel": {"id": "C123456", "name": "general"},
    "message": {
        "type": "message",
        "ts": "1548261231.000200",
        "text": "Voice is down",
        "blocks": [
            {
                "type": "actions",
                "block_id": "=qXel",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "acknowledge",
                        "text": {"type": "plain_text", "text": "Acknowledge"},
                        "value": "svc_voice_001",
                    }
                ],
            }
        ],
    },
    "response_url": "https://hooks.slack.com/actions/AABA1ABCD/1232321423432/D09sSasdasdAS9091209",
    "actions": [
        {
            "action_id": "acknowledge",
            "block_id": "=qXel",
            "text": {"type": "plain_text", "text": "Acknowledge", "emoji": True},
            "value": "svc_voice_001",
            "type": "button",
            "action_ts": "1548426417.840180",
        }
    ],
}
CLICK_ID = "1548426417.840180:U123456:1548261231.000200"

pytestmark = pytest.mark.anyio


def slack_headers(body: bytes, now: float, content_type: str, **extra: str) -> dict[str, str]:
    """Headers of a request Slack signed at ``now``, with slack_sdk's own signing code."""
    ts = str(int(now))
    signature = SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return {
        "content-type": content_type,
        "x-slack-request-timestamp": ts,
        "x-slack-signature": signature,
        **extra,
    }


def form(payload: Any) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return urlencode({"payload": text}).encode()


class Slack:
    """The receiver in-process, and a Slack that signs what it sends at the app's clock."""

    def __init__(self, client: httpx.AsyncClient, inbox: SQLiteInbox, now: list[float]) -> None:
        self.client, self.inbox, self.now = client, inbox, now

    async def post(
        self, body: bytes, *, kind: str = "form", source: str = "slack", **kw: Any
    ) -> httpx.Response:
        ctype = "application/x-www-form-urlencoded" if kind == "form" else "application/json"
        headers = kw.pop("headers", None) or slack_headers(body, self.now[0], ctype)
        return await self.client.post(f"/webhooks/{source}", content=body, headers=headers)

    async def click(self, payload: dict[str, Any] = BLOCK_ACTIONS) -> httpx.Response:
        return await self.post(form(payload))

    async def stored(self) -> int:
        return sum((await self.inbox.counts()).values())


@pytest.fixture
async def slack(tmp_path: Path) -> AsyncIterator[Slack]:
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3", writer="loop")
    await inbox.open()
    config = HooklineConfig(sources=SOURCES)
    config.path = tmp_path / "hookline.yaml"
    now = [time.time()]
    app = create_app(
        config,
        settings=CoreSettings(home=tmp_path),
        inbox=inbox,
        environ={"SLACK_SIGNING_SECRET": SLACK_SECRET},
        clock=lambda: now[0],
    )
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        yield Slack(client, inbox, now)
    await inbox.close()


# -- Events API (JSON) -------------------------------------------------------------------------


async def test_url_verification_is_answered_with_its_challenge_and_stores_nothing(
    slack: Slack,
) -> None:
    body = json.dumps(
        {
            "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
            "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
            "type": "url_verification",
        }
    ).encode()
    r = await slack.post(body, kind="json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    assert await slack.stored() == 0
    # unsigned, it is refused like anything else
    r = await slack.post(body, kind="json", headers={"content-type": "application/json"})
    assert r.status_code == 401


async def test_a_retried_event_is_answered_200_and_stored_once(
    slack: Slack, caplog: pytest.LogCaptureFixture
) -> None:
    body = json.dumps(
        {
            "token": "XXYYZZ",
            "team_id": "T123456",
            "api_app_id": "A123456",
            "event": {"type": "app_mention", "user": "U123456", "text": "<@U0LAN0Z89> hi"},
            "type": "event_callback",
            "event_id": "Ev08MFMKH6",
            "event_time": 1234567890,
        }
    ).encode()
    r = await slack.post(body, kind="json")
    assert r.json() == {"status": "accepted", "event_id": "Ev08MFMKH6"}
    caplog.set_level(logging.INFO, "hookline.receiver")
    retry = slack_headers(
        body,
        slack.now[0],
        "application/json",
        **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    r = await slack.post(body, headers=retry)
    assert r.status_code == 200
    assert r.json() == {"status": "duplicate", "event_id": "Ev08MFMKH6"}
    assert await slack.stored() == 1
    entry = await slack.inbox.find("slack", "Ev08MFMKH6")
    assert entry is not None and entry.event_type == "app_mention" and entry.body == body
    logged = [r for r in caplog.records if r.getMessage() == "duplicate"]
    assert [(r.__dict__["retry"], r.__dict__["retry_reason"]) for r in logged] == [
        ("1", "http_timeout")
    ]


# -- interactivity (form payload=) -------------------------------------------------------------


async def test_a_click_is_stored_as_slack_block_actions_and_a_second_is_a_duplicate(
    slack: Slack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "hookline.receiver")
    body = form(BLOCK_ACTIONS)
    r = await slack.post(body)
    assert r.status_code == 200
    assert r.content == b""  # Slack's acknowledgement: an empty 200
    entry = await slack.inbox.find("slack", CLICK_ID)
    assert entry is not None
    assert entry.event_type == "slack.block_actions" and entry.status == "pending"
    assert entry.body == body  # the raw signed body, as received
    assert entry.headers["content-type"] == "application/x-www-form-urlencoded"
    assert "x-slack-signature" not in entry.headers

    r = await slack.post(body)  # the same click again (a retry, a double click)
    assert r.status_code == 200 and r.content == b""
    assert await slack.stored() == 1
    outcomes = [r.__dict__.get("outcome") for r in caplog.records]
    assert outcomes.count("accepted") == 1 and outcomes.count("duplicate") == 1

    other = copy.deepcopy(BLOCK_ACTIONS)
    other["actions"][0]["action_ts"] = "1548426420.000001"  # a later click on the same alert
    assert (await slack.click(other)).status_code == 200
    assert await slack.stored() == 2


async def test_other_interactions_are_recorded_with_stable_ids(slack: Slack) -> None:
    view = {"id": "VNHU13V36", "hash": "1569362015.55b5e41b", "callback_id": "ack_modal"}
    base = {"user": BLOCK_ACTIONS["user"], "team": BLOCK_ACTIONS["team"], "token": "x"}
    sent = {
        "slack.view_submission": (
            {**base, "type": "view_submission", "trigger_id": "1.2.a", "view": view},
            "VNHU13V36:1569362015.55b5e41b",
        ),
        "slack.view_closed": (
            {**base, "type": "view_closed", "view": view, "is_cleared": False},
            "closed:VNHU13V36:1569362015.55b5e41b",
        ),
        "slack.shortcut": (
            {**base, "type": "shortcut", "callback_id": "page", "trigger_id": "944.3.9d"},
            "944.3.9d",
        ),
        "slack.message_action": (
            {**base, "type": "message_action", "callback_id": "m", "trigger_id": "945.1.f"},
            "945.1.f",
        ),
    }
    for event_type, (payload, event_id) in sent.items():
        r = await slack.click(payload)
        assert r.status_code == 200, r.text
        entry = await slack.inbox.find("slack", event_id)
        assert entry is not None and entry.event_type == event_type


@pytest.mark.parametrize(
    ("body", "field", "detail"),
    [
        (b"", "payload", "missing"),
        (urlencode({"text": "hi"}).encode(), "payload", "fields here: text"),
        (form("{not json"), "payload", "not valid JSON"),
        (form("[1, 2]"), "payload", "must be a JSON object"),
        (form({"user": {"id": "U1"}}), "type", "missing"),
        (
            form({**BLOCK_ACTIONS, "actions": []}),
            "actions[0].action_ts",
            "missing from the block_actions payload",
        ),
        (form({**BLOCK_ACTIONS, "user": {}}), "user.id", "missing"),
        (form({"type": "view_submission", "view": {"id": "V1"}}), "view.hash", "missing"),
        (form({"type": "shortcut"}), "trigger_id", "missing"),
    ],
)
async def test_a_bad_form_is_400_naming_the_field_and_nothing_is_stored(
    slack: Slack, body: bytes, field: str, detail: str
) -> None:
    r = await slack.post(body)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_event" and r.json()["field"] == field
    assert detail in r.json()["detail"]
    assert await slack.stored() == 0


async def test_bad_signature_or_old_timestamp_is_401_and_nothing_is_stored(slack: Slack) -> None:
    body = form(BLOCK_ACTIONS)
    headers = slack_headers(body, slack.now[0], "application/x-www-form-urlencoded")
    tampered = body.replace(b"U123456", b"U999999")
    assert (await slack.post(tampered, headers=headers)).status_code == 401
    forged = {**headers, "x-slack-signature": "v0=" + "0" * 64}
    assert (await slack.post(body, headers=forged)).status_code == 401
    old = slack_headers(body, slack.now[0] - 301, "application/x-www-form-urlencoded")
    assert (await slack.post(body, headers=old)).status_code == 401
    # a payload that is not even a form is refused by its signature first
    unsigned = {"content-type": "application/x-www-form-urlencoded"}
    assert (await slack.post(b"payload=%7Bnope", headers=unsigned)).status_code == 401
    assert await slack.stored() == 0
    fresh = slack_headers(body, slack.now[0] - 299, "application/x-www-form-urlencoded")
    assert (await slack.post(body, headers=fresh)).status_code == 200  # inside the 5 minutes


async def test_only_slack_sources_take_forms(slack: Slack) -> None:
    body = form(BLOCK_ACTIONS)
    r = await slack.client.post(
        "/webhooks/solveforce",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 415 and r.json()["detail"] == "send application/json"
    r = await slack.post(body, headers={"content-type": "text/plain"})
    assert r.status_code == 415 and "x-www-form-urlencoded" in r.json()["detail"]


# -- the optional source -----------------------------------------------------------------------


async def test_an_optional_source_without_its_secret_is_disabled_never_open(
    slack: Slack, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # "quiet" names QUIET_SIGNING_SECRET, which is unset: the app started anyway
    body = form(BLOCK_ACTIONS)
    r = await slack.post(body, source="quiet")
    assert r.status_code == 404
    assert r.json() == {
        "error": "source_not_configured",
        "detail": "source 'quiet' is disabled: QUIET_SIGNING_SECRET is not set",
    }
    assert await slack.stored() == 0

    caplog.set_level(logging.WARNING, "hookline.receiver")
    config = HooklineConfig(sources=SOURCES)
    config.path = tmp_path / "hookline.yaml"
    create_app(config, settings=CoreSettings(home=tmp_path), environ={})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "sources.slack: disabled (SLACK_SIGNING_SECRET is not set); POST /webhooks/slack"
        " answers 404 source_not_configured until it is set",
        "sources.quiet: disabled (QUIET_SIGNING_SECRET is not set); POST /webhooks/quiet"
        " answers 404 source_not_configured until it is set",
    ]


def test_optional_does_not_excuse_a_short_secret_and_required_sources_still_fail() -> None:
    config = HooklineConfig(sources={"slack": SOURCES["slack"]})
    receiver = load_receiver_config(config, environ={})
    with pytest.raises(ConfigError, match=r"secrets\[0\].*SLACK_SIGNING_SECRET is 5 bytes"):
        load_sources(config, receiver, environ={"SLACK_SIGNING_SECRET": "short"})
    required = HooklineConfig(sources={"slack": {**SOURCES["slack"], "optional": False}})
    with pytest.raises(ConfigError, match="set SLACK_SIGNING_SECRET or SLACK_SIGNING_SECRET_PREV"):
        load_sources(required, receiver, environ={})


def test_the_shipped_hookline_yaml_has_an_optional_slack_source() -> None:
    config = load_config(REPO / "hookline.yaml")
    receiver = load_receiver_config(config, environ={})
    env = {"SOLVEFORCE_WEBHOOK_SECRET": "s" * 32}
    off = load_sources(config, receiver, environ=env)
    assert off["slack"].scheme == "slack" and off["slack"].disabled == (
        "SLACK_SIGNING_SECRET is not set"
    )
    assert off["solveforce"].disabled is None
    on = load_sources(config, receiver, environ={**env, "SLACK_SIGNING_SECRET": SLACK_SECRET})
    assert on["slack"].disabled is None and on["slack"].keys == (SLACK_SECRET.encode(),)


# -- the engine's reading of a stored form: one place ------------------------------------------


async def test_the_engine_reads_a_stored_click_as_the_receiver_named_it(slack: Slack) -> None:
    from hookline.engine.dispatcher import _event
    from hookline.engine.events import _payload
    from hookline.flows.recipe_flow import _event_of

    assert (await slack.click()).status_code == 200
    entry = await slack.inbox.find("slack", CLICK_ID)
    assert entry is not None
    for event in (_event(entry), _event_of(entry)):
        assert (event.source, event.event_type, event.event_id) == (
            "slack",
            "slack.block_actions",
            CLICK_ID,
        )
        assert event.data == BLOCK_ACTIONS and event.envelope == BLOCK_ACTIONS
        assert event.data["actions"][0]["value"] == "svc_voice_001"
    # `hookline events show` shows the payload, not the url-encoded text (token masked)
    shown = _payload(entry.body, [])
    assert (
        shown["actions"] == BLOCK_ACTIONS["actions"] and shown["token"] != "9s8d9as89d8as9d8as989"
    )


def test_event_from_body_parses_a_form_and_names_it_like_the_receiver() -> None:
    body = form(BLOCK_ACTIONS)
    event = Event.from_body(source="slack", body=body)
    payload = payload_object(form_payload(body))
    assert (event.event_type, event.event_id) == (
        interaction_type(payload),
        interaction_id(payload),
    )
    assert (event.event_type, event.event_id) == ("slack.block_actions", CLICK_ID)
    assert event.data == BLOCK_ACTIONS and event.account == {}
    # the click's time is its action_ts, to the second: templates' `timestamp`
    assert event.timestamp == datetime(2019, 1, 25, 14, 26, 57, tzinfo=UTC)
    assert event.timestamp_text == "2019-01-25T14:26:57+00:00"
    assert payload_object(form_payload(form({**BLOCK_ACTIONS, "actions": []}))) is not None
    no_time = Event.from_body(source="slack", body=form({**BLOCK_ACTIONS, "type": "shortcut"}))
    assert no_time.timestamp is None
    # JSON bodies are read as before
    assert Event.from_body(source="s", body=b'{"type": "t", "id": "1", "data": {"a": 1}}').data == {
        "a": 1
    }
    with pytest.raises(EventError, match="nor a usable Slack interactivity form: payload"):
        Event.from_body(source="slack", body=b"payload=%5B1%5D")
    with pytest.raises(EventError, match="form: payload: missing.*fields here: not a form"):
        Event.from_body(source="slack", body=b"not a form")


RECIPE = """
name: acknowledge
on: slack.block_actions
source: slack
when: data.actions[0].action_id == 'acknowledge'
steps:
  - id: note
    uses: slack.post_message
    with:
      channel: "{{ data.channel.id }}"
      thread_ts: "{{ data.container.message_ts }}"
      text: "Acknowledged by {{ data.user.name }} ({{ data.actions[0].value }}), {{ event_id }}"
"""


def test_hookline_try_dry_runs_a_recipe_on_a_click(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hookline.cli import main

    (tmp_path / "hookline.yaml").write_text(yaml.safe_dump({"env": []}))
    (tmp_path / "ack.yaml").write_text(textwrap.dedent(RECIPE))
    (tmp_path / "click.txt").write_bytes(form(BLOCK_ACTIONS))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOOKLINE_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    r = CliRunner().invoke(
        main,
        ["try", "--event", "click.txt", "--source", "slack", "ack.yaml"],
        catch_exceptions=False,
    )
    get_settings.cache_clear()
    assert r.exit_code == 0, r.output
    assert f"event slack.block_actions {CLICK_ID} from slack" in r.output
    assert "[MATCH] acknowledge" in r.output
    assert 'channel: "C123456"' in r.output
    assert f'text: "Acknowledged by jsmith (svc_voice_001), {CLICK_ID}"' in r.output


# -- through the real server -------------------------------------------------------------------


@pytest.mark.slow
def test_a_click_through_the_real_server(tmp_path: Path) -> None:
    from .conftest import start_server

    config = tmp_path / "hookline.yaml"
    config.write_text(yaml.safe_dump({"sources": {"slack": SOURCES["slack"]}}))
    srv: Server = start_server(tmp_path, config, env={"SLACK_SIGNING_SECRET": SLACK_SECRET})
    try:
        url = f"{srv.url}/webhooks/slack"
        body = form(BLOCK_ACTIONS)
        ctype = "application/x-www-form-urlencoded"
        started = time.monotonic()
        r = httpx.post(url, content=body, headers=slack_headers(body, time.time(), ctype))
        took = time.monotonic() - started
        assert r.status_code == 200 and r.content == b"", r.text
        assert took < 3.0  # Slack's deadline, with a wide margin in practice
        r = httpx.post(url, content=body, headers=slack_headers(body, time.time(), ctype))
        assert r.status_code == 200
        bad = form("{not json")
        r = httpx.post(url, content=bad, headers=slack_headers(bad, time.time(), ctype))
        assert r.status_code == 400 and r.json()["field"] == "payload"
        old = slack_headers(body, time.time() - 400, ctype)
        assert httpx.post(url, content=body, headers=old).status_code == 401
    finally:
        srv.stop()
    import sqlite3

    with sqlite3.connect(tmp_path / "inbox.sqlite3") as db:
        rows = db.execute("SELECT source, event_id, event_type, body FROM inbox").fetchall()
    assert rows == [("slack", CLICK_ID, "slack.block_actions", body)]
