"""The on-call loop through `hookline up` against the fake Slack and ServiceNow: an outage
posts an alert with Acknowledge and Resolve; the click Slack would send for Acknowledge puts
the incident In Progress, updates the alert and cancels the escalation; an outage nobody
acknowledges pages the on-call channel after ESCALATE_AFTER."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from slack_sdk.signature import SignatureVerifier

from hookline.engine.prefect_server import free_port
from tests.docs.conftest import clean_env, start
from tests.waiting import wait_until_sync
from vendor_fakes import FakeVendors
from vendor_fakes.slack import channel_id

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
HOOKLINE = str(Path(sys.executable).parent / "hookline")
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # Slack's documented example secret
ESCALATE_AFTER = 12  # seconds: past the outage recipe's 3 s coalescing quiet and the click


def _env(home: Path, fakes: FakeVendors) -> dict[str, str]:
    return clean_env(
        **fakes.env,
        HOOKLINE_HOME=str(home),
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_ALERT_CHANNEL="#service-alerts",
        SLACK_ONCALL_CHANNEL="#oncall",
        ESCALATE_AFTER=f"{ESCALATE_AFTER}s",
    )


def _send_outage(env: dict[str, str], url: str, service: str) -> None:
    sent = subprocess.run(
        [
            HOOKLINE,
            "send",
            "service.status.changed",
            "--url",
            url,
            "--set",
            "data.current_status=outage",
            "--set",
            f"data.service_id={service}",
            "--set",
            f"data.service_name=Service {service}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stderr


def _alert(fakes: FakeVendors, service: str) -> dict[str, Any] | None:
    for message in fakes.slack.messages:
        if f"Service {service}" in json.dumps(message.get("attachments", "")):
            return message
    return None


def _incident(fakes: FakeVendors, service: str) -> dict[str, Any]:
    [incident] = [i for i in fakes.servicenow.incidents if f"({service})" in i["description"]]
    return incident


def _buttons(message: dict[str, Any]) -> dict[str, dict[str, Any]]:
    blocks = message["attachments"][0]["blocks"]
    return {e["action_id"]: e for b in blocks if b["type"] == "actions" for e in b["elements"]}


def _click(url: str, message: dict[str, Any], action_id: str, user: str) -> httpx.Response:
    """What Slack POSTs when `user` clicks the alert's button `action_id`."""
    button = _buttons(message)[action_id]
    action_ts = f"{time.time():.6f}"
    payload = {
        "type": "block_actions",
        "user": {"id": "U061F7AUR", "username": user, "name": user, "team_id": "T9TK3CUKW"},
        "api_app_id": "A0KRD7HC3",
        "token": "Shh_its_a_seekrit",
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": message["channel"],
            "is_ephemeral": False,
        },
        "trigger_id": "12466734323.1395872398.2b2bc9d1f6d5d0f0cdc87c45f7c1f5d2",
        "team": {"id": "T9TK3CUKW", "domain": "example"},
        "channel": {"id": message["channel"], "name": "service-alerts"},
        "message": {"type": "message", "ts": message["ts"], "text": message["text"]},
        "response_url": "https://hooks.slack.com/actions/T9TK3CUKW/1/abc",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "hookline-alert-actions",
                "value": button["value"],
                "type": "button",
                "action_ts": action_ts,
                "text": button["text"],
            }
        ],
    }
    body = urlencode({"payload": json.dumps(payload)})
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=timestamp, body=body)
    return httpx.post(
        url,
        content=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature,
        },
        timeout=10,
    )


def test_acknowledge_from_slack_and_escalation_through_hookline_up(tmp_path: Path) -> None:
    with FakeVendors() as fakes:
        home = tmp_path / "home"
        port, prefect_port = free_port(), free_port()
        env = _env(home, fakes)
        up = start(
            ["hookline", "up", "--port", str(port), "--prefect-port", str(prefect_port)],
            cwd=REPO,
            env=env,
            log=tmp_path / "up.log",
        )
        try:
            up.wait_for("Ctrl-C stops everything", timeout=120)
            banner = up.output()
            assert f"http://127.0.0.1:{port}/webhooks/slack" in banner
            assert "hookline click outage.acknowledge" in banner
            solveforce = f"http://127.0.0.1:{port}/webhooks/solveforce"
            slack_url = f"http://127.0.0.1:{port}/webhooks/slack"

            # Two services go down; on-call acknowledges the first from its alert.
            _send_outage(env, solveforce, "svc_ack")
            _send_outage(env, solveforce, "svc_quiet")
            wait_until_sync(
                lambda: _alert(fakes, "svc_ack") and _alert(fakes, "svc_quiet"),
                timeout=60,
                what="both alerts",
            )
            wait_until_sync(
                lambda: len(fakes.servicenow.incidents) == 2, timeout=60, what="2 incidents"
            )
            alert = copy.deepcopy(_alert(fakes, "svc_ack"))  # as on-call first saw it
            assert alert is not None
            assert set(_buttons(alert)) == {"outage.acknowledge", "outage.resolve"}

            answer = _click(slack_url, alert, "outage.acknowledge", "jane.doe")
            assert answer.status_code == 200, answer.text

            wait_until_sync(
                lambda: _incident(fakes, "svc_ack")["state"] == "2",
                timeout=60,
                what="the incident In Progress",
            )
            incident = _incident(fakes, "svc_ack")
            assert any(
                "Acknowledged by jane.doe in Slack" in note
                for note in incident.get("work_notes_history", [])
            )
            wait_until_sync(
                lambda: "Acknowledged" in json.dumps(_alert(fakes, "svc_ack")),
                timeout=30,
                what="the alert updated",
            )
            updated = _alert(fakes, "svc_ack")
            assert updated is not None and updated.get("edited")
            assert set(_buttons(updated)) == {"outage.resolve"}  # Acknowledge is gone
            assert "U061F7AUR" in json.dumps(updated["attachments"])

            # The quiet one escalates after ESCALATE_AFTER; the acknowledged one never does.
            def paged() -> list[dict[str, Any]]:
                return [m for m in fakes.slack.messages if m["channel"] == channel_id("#oncall")]

            wait_until_sync(paged, timeout=ESCALATE_AFTER + 45, what="the page in #oncall")
            [page] = paged()
            assert "Service svc_quiet" in page["text"] and "<!here>" in page["text"]
            time.sleep(3)  # the acknowledged service's timer would have fired by now too
            assert len(paged()) == 1

            listing = subprocess.run(
                [HOOKLINE, "events", "--status", "cancelled"],
                cwd=REPO,
                env={**env, "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api"},
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout
            # The acknowledged outage's escalation timer is listed as cancelled.
            assert "escalate:svc_ack" in listing and "escalate:svc_quiet" not in listing, listing

            # Resolve from the same alert: the incident is resolved naming the user, the alert
            # turns green without buttons; a later click on it is stale and says so.
            answer = _click(slack_url, _alert(fakes, "svc_ack") or {}, "outage.resolve", "bob")
            assert answer.status_code == 200, answer.text
            wait_until_sync(lambda: _incident(fakes, "svc_ack")["state"] == "6", timeout=60)
            assert (
                "Resolved by bob from the Slack alert" in _incident(fakes, "svc_ack")["close_notes"]
            )
            wait_until_sync(
                lambda: "RESOLVED" in (_alert(fakes, "svc_ack") or {}).get("text", ""), timeout=30
            )
            assert not _buttons(_alert(fakes, "svc_ack") or {})

            # carol clicks Acknowledge on the alert as she first saw it: `hookline click`
            # sends what Slack would
            clicked = subprocess.run(
                [
                    HOOKLINE,
                    "click",
                    "outage.acknowledge",
                    "svc_ack",
                    "--user",
                    "carol",
                    "--channel",
                    alert["channel"],
                    "--ts",
                    alert["ts"],
                    "--url",
                    slack_url,
                ],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert clicked.returncode == 0, clicked.stderr
            assert (
                "slack.block_actions outage.acknowledge=svc_ack by carol -> 200" in clicked.stdout
            )

            def stale_reply() -> list[dict[str, Any]]:
                return [
                    m
                    for m in fakes.slack.messages
                    if m.get("thread_ts") == alert["ts"] and "already resolved" in m.get("text", "")
                ]

            wait_until_sync(stale_reply, timeout=60, what="the stale click's reply")
            assert _incident(fakes, "svc_ack")["state"] == "6"  # nothing else changed
        finally:
            code = up.stop()
        assert code == 0, up.output()
