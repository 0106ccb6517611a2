"""Slack actions with the real slack_sdk WebClient against the fake Slack over HTTPS."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from hookline.connectors import build_client, slack
from hookline.connectors.errors import PermanentError, TransientError
from vendor_fakes import FakeVendors
from vendor_fakes.slack import channel_id

Client = Callable[..., Any]


def test_post_message_posts_and_returns_ts_channel_permalink(
    client: Client, fakes: FakeVendors
) -> None:
    out = slack.post_message(
        client("slack"),
        channel="#alerts",
        text="Primary Voice Service is degraded",
        username="SOLVEFORCE Monitor",
        icon_emoji=":rotating_light:",
    )

    assert out["channel"] == channel_id("#alerts")
    assert out["ts"] == fakes.slack.messages[0]["ts"]
    assert out["permalink"] == (
        f"{fakes.slack.url}/archives/{out['channel']}/p{out['ts'].replace('.', '')}"
    )
    sent = fakes.slack.calls_to("chat.postMessage")[0]
    assert sent.headers["Authorization"] == "Bearer xoxb-hookline-fake-token"
    assert sent.json["username"] == "SOLVEFORCE Monitor"
    assert sent.json["icon_emoji"] == ":rotating_light:"
    assert "reply_broadcast" not in sent.json


def test_post_message_in_thread_with_broadcast_and_blocks(
    client: Client, fakes: FakeVendors
) -> None:
    c = client("slack")
    parent = slack.post_message(c, channel="#alerts", text="outage")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*update*"}}]

    slack.post_message(
        c, channel="#alerts", blocks=blocks, thread_ts=parent["ts"], reply_broadcast=True
    )

    reply = fakes.slack.calls_to("chat.postMessage")[1].json
    assert reply["thread_ts"] == parent["ts"]
    assert reply["reply_broadcast"] is True
    assert reply["blocks"] == blocks


def test_update_message_replaces_text(client: Client, fakes: FakeVendors) -> None:
    c = client("slack")
    posted = slack.post_message(c, channel="#alerts", text="degraded")

    out = slack.update_message(c, channel=posted["channel"], ts=posted["ts"], text="resolved")

    assert out == {"ts": posted["ts"], "channel": posted["channel"]}
    assert fakes.slack.messages[0]["text"] == "resolved"


def test_update_of_unknown_message_is_permanent_with_slack_error(client: Client) -> None:
    with pytest.raises(PermanentError, match="chat.update: message_not_found"):
        slack.update_message(client("slack"), channel="#alerts", ts="1.2", text="x")


def test_post_alert_renders_colour_emoji_fields_and_run_link(
    client: Client, fakes: FakeVendors
) -> None:
    slack.post_alert(
        client("slack"),
        channel="#oncall",
        title="Primary Voice Service outage",
        severity="critical",
        summary="150 users affected in Chicago",
        fields={"Service": "svc_voice_001", "Impact": "high", "ETA": None},
        run_url="https://prefect.example/runs/flow-run/abc",
    )

    sent = fakes.slack.calls_to("chat.postMessage")[0].json
    assert sent["text"] == "CRITICAL: Primary Voice Service outage"
    attachment = sent["attachments"][0]
    assert attachment["color"] == "#d00000"
    rendered = str(attachment["blocks"])
    assert ":red_circle: *CRITICAL*: Primary Voice Service outage" in rendered
    assert "*Service*\\nsvc_voice_001" in rendered
    assert "*ETA*\\n—" in rendered
    assert "<https://prefect.example/runs/flow-run/abc|View the Prefect run>" in rendered


def test_update_alert_turns_the_alert_green(client: Client, fakes: FakeVendors) -> None:
    c = client("slack")
    posted = slack.post_alert(c, channel="#oncall", title="Voice outage", severity="critical")

    slack.update_alert(
        c, channel=posted["channel"], ts=posted["ts"], title="Voice outage", summary="Recovered"
    )

    [message] = fakes.slack.messages
    assert message["text"] == "RESOLVED: Voice outage"
    assert message["attachments"][0]["color"] == "#21ba45"


def test_render_alert_splits_more_than_ten_fields() -> None:
    alert = slack.render_alert(title="t", fields={f"f{i}": i for i in range(12)})
    sections = [b for b in alert["attachments"][0]["blocks"] if "fields" in b]
    assert [len(s["fields"]) for s in sections] == [10, 2]


def test_bad_token_is_permanent_and_names_the_variable_not_the_token(client: Client) -> None:
    with pytest.raises(PermanentError) as caught:
        slack.post_message(client("slack", SLACK_BOT_TOKEN="xoxb-wrong"), channel="#a", text="x")
    message = str(caught.value)
    assert "invalid_auth" in message
    assert "SLACK_BOT_TOKEN" in message
    assert "xoxb-wrong" not in message


def test_unknown_channel_is_permanent(client: Client) -> None:
    with pytest.raises(PermanentError, match="channel_not_found"):
        slack.post_message(client("slack"), channel="#does-not-exist", text="x")


def test_invalid_blocks_carry_slacks_details(client: Client) -> None:
    with pytest.raises(PermanentError, match="invalid_blocks: .*missing required field"):
        slack.post_message(client("slack"), channel="#a", blocks=[{"text": "no type"}])


def test_nothing_to_post_fails_before_calling_slack(client: Client, fakes: FakeVendors) -> None:
    with pytest.raises(PermanentError, match="give text, blocks or attachments"):
        slack.post_message(client("slack"), channel="#a")
    assert fakes.slack.calls == []


def test_429_is_transient_with_retry_after(client: Client, fakes: FakeVendors) -> None:
    fakes.slack.fail_next(1, status=429, retry_after=7)

    with pytest.raises(TransientError) as caught:
        slack.post_message(client("slack"), channel="#a", text="x")

    assert caught.value.retry_after == 7.0
    assert caught.value.status == 429
    assert "ratelimited" in str(caught.value)
    assert len(fakes.slack.calls) == 1, "slack_sdk must not retry by itself"


def test_500_is_transient_then_a_retry_succeeds(client: Client, fakes: FakeVendors) -> None:
    c = client("slack")
    fakes.slack.fail_next(1, status=500, path="chat.postMessage")

    with pytest.raises(TransientError, match="internal_error") as caught:
        slack.post_message(c, channel="#a", text="x")
    assert caught.value.status == 500
    out = slack.post_message(c, channel="#a", text="x")

    assert out["ts"] == fakes.slack.messages[0]["ts"]
    assert len(fakes.slack.calls_to("chat.postMessage")) == 2


def test_connection_refused_is_transient(client: Client) -> None:
    c = client("slack", SLACK_API_URL="https://127.0.0.1:9/api/")
    with pytest.raises(TransientError, match="ConnectionRefusedError"):
        slack.post_message(c, channel="#a", text="x")


def test_permalinks_are_built_with_one_auth_test_per_client(
    client: Client, fakes: FakeVendors
) -> None:
    """chat.getPermalink per message was one more call on a rate-limited method in a storm:
    now N posts make no such call, and each client asks auth.test for its workspace once."""
    first, second = client("slack"), client("slack")
    outs = [slack.post_message(first, channel="#alerts", text=f"m{i}") for i in range(5)]
    outs.append(slack.post_alert(second, channel="#alerts", title="down"))
    outs.append(slack.post_message(second, channel="#alerts", text="again"))

    assert fakes.slack.calls_to("chat.getPermalink") == []
    assert len(fakes.slack.calls_to("auth.test")) == 2
    assert len(fakes.slack.calls_to("chat.postMessage")) == 7
    for out in outs:  # Slack's format: <workspace>/archives/<channel id>/p<ts without the dot>
        assert out["permalink"] == (
            f"{fakes.slack.url}/archives/{channel_id('#alerts')}/p{out['ts'].replace('.', '')}"
        )
        assert (
            out["permalink"]
            == first.chat_getPermalink(channel=out["channel"], message_ts=out["ts"])["permalink"]
        )


def test_a_thread_reply_s_permalink_names_its_thread(client: Client) -> None:
    c = client("slack")
    parent = slack.post_message(c, channel="#alerts", text="outage")
    reply = slack.post_message(c, channel="#alerts", text="INC0010001", thread_ts=parent["ts"])

    assert reply["permalink"] == (
        f"{parent['permalink'].split('/p')[0]}/p{reply['ts'].replace('.', '')}"
        f"?thread_ts={parent['ts']}&cid={parent['channel']}"
    )
    asked = c.chat_getPermalink(channel=reply["channel"], message_ts=reply["ts"])
    assert reply["permalink"] == asked["permalink"]


def test_concurrent_first_posts_of_one_client_ask_auth_test_once(
    client: Client, fakes: FakeVendors
) -> None:
    c = client("slack")
    fakes.slack.fail_next(1, status=None, delay=0.3, path="auth.test")  # a slow first answer
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: slack.post_message(c, channel="#a", text=str(i)), range(4)))
    assert all(out["permalink"] for out in outs)
    assert len(fakes.slack.calls_to("auth.test")) == 1


def test_a_failed_auth_test_leaves_the_post_without_a_permalink_until_the_next(
    client: Client, fakes: FakeVendors, caplog: pytest.LogCaptureFixture
) -> None:
    """The message is posted before the workspace is looked up: a failed lookup must not fail
    the step (a retry would post it twice). That post has no permalink, the log says why,
    and the client's next post asks again."""
    c = client("slack")
    fakes.slack.fail_next(1, status=429, retry_after=30, path="auth.test")
    with caplog.at_level(logging.WARNING, logger="hookline.connectors.slack"):
        out = slack.post_message(c, channel="#a", text="x")
    assert out["permalink"] is None
    assert len(fakes.slack.messages) == 1
    assert f"message {out['ts']} posted in {out['channel']} without a permalink" in caplog.text
    assert "slack auth.test: ratelimited" in caplog.text

    later = [slack.post_message(c, channel="#a", text=f"y{i}") for i in range(2)]
    assert all(o["permalink"] and o["permalink"].endswith(o["ts"].replace(".", "")) for o in later)
    assert len(fakes.slack.calls_to("auth.test")) == 2  # the failed one, then one for good


def test_permalink_format() -> None:
    """The shapes chat.getPermalink answers (docs.slack.dev/reference/methods/
    chat.getPermalink: a message; a reply, whose query names its thread), built locally."""
    workspace = "https://ghostbusters.slack.com/"
    assert slack.permalink(workspace, "C1H9RESGA", "1358546515.000008") == (
        "https://ghostbusters.slack.com/archives/C1H9RESGA/p1358546515000008"
    )
    assert slack.permalink(
        workspace, "C1H9RESGL", "1358546517.000023", thread_ts="1358546515.000008"
    ) == (
        "https://ghostbusters.slack.com/archives/C1H9RESGL/p1358546517000023"
        "?thread_ts=1358546515.000008&cid=C1H9RESGL"
    )


def test_untrusted_certificate_is_permanent(env: dict[str, str]) -> None:
    from hookline.connectors import build_client

    no_ca = {k: v for k, v in env.items() if k not in {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}}
    with pytest.raises(PermanentError, match="TLS certificate is not trusted.*SSL_CERT_FILE"):
        slack.post_message(build_client("slack", environ=no_ca), channel="#a", text="x")


def test_incoming_webhook_posts(client: Client, fakes: FakeVendors) -> None:
    out = slack.post_webhook(client("slack_webhook"), text="billing: invoice SF-2024-001")
    assert out == {"status": 200}
    assert fakes.slack.webhook_messages == [{"text": "billing: invoice SF-2024-001"}]


def test_incoming_webhook_errors_are_mapped_without_leaking_the_url(
    client: Client, fakes: FakeVendors
) -> None:
    c = client("slack_webhook")
    fakes.slack.fail_next(1, status=503, retry_after=3)
    with pytest.raises(TransientError) as caught:
        slack.post_webhook(c, text="x")
    assert caught.value.retry_after == 3.0
    assert "hookline-fake-webhook-secret" not in str(caught.value)

    bad = client("slack_webhook", SLACK_WEBHOOK_URL=f"{fakes.slack.url}/services/T/B/wrong")
    with pytest.raises(PermanentError, match="HTTP 404: no_service") as caught2:
        slack.post_webhook(bad, text="x")
    assert "wrong" not in str(caught2.value)


ACK_AND_RESOLVE = [
    {
        "text": "Acknowledge",
        "action_id": "outage.acknowledge",
        "value": "svc_1",
        "style": "primary",
    },
    {"text": "Resolve", "action_id": "outage.resolve", "value": "svc_1", "style": "danger"},
]


def test_alert_buttons_are_an_actions_block_slack_accepts(
    client: Client, fakes: FakeVendors
) -> None:
    posted = slack.post_alert(
        client("slack"),
        channel="#alerts",
        title="Voice down",
        severity="critical",
        buttons=ACK_AND_RESOLVE,
        run_url="https://prefect.example/runs/1",
    )

    blocks = fakes.slack.messages[0]["attachments"][0]["blocks"]
    [actions] = [b for b in blocks if b["type"] == "actions"]
    assert blocks[-1]["type"] == "context"  # the run link stays last, under the buttons
    assert actions["block_id"] == "hookline-alert-actions"
    assert actions["elements"] == [
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "Acknowledge", "emoji": True},
            "action_id": "outage.acknowledge",
            "value": "svc_1",
            "style": "primary",
        },
        {
            "type": "button",
            "text": {"type": "plain_text", "text": "Resolve", "emoji": True},
            "action_id": "outage.resolve",
            "value": "svc_1",
            "style": "danger",
        },
    ]

    # An update showing only Resolve drops Acknowledge; one given none drops both.
    slack.update_alert(
        client("slack"),
        channel=posted["channel"],
        ts=posted["ts"],
        title="Voice down",
        severity="critical",
        buttons=[{**ACK_AND_RESOLVE[0], "show": False}, ACK_AND_RESOLVE[1]],
    )
    blocks = fakes.slack.messages[0]["attachments"][0]["blocks"]
    assert [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]] == [
        "outage.resolve"
    ]
    hidden = [{**b, "show": False} for b in ACK_AND_RESOLVE]  # what a recipe templates
    for buttons in (None, hidden):
        slack.update_alert(
            client("slack"), channel=posted["channel"], ts=posted["ts"], title="ok", buttons=buttons
        )
        blocks = fakes.slack.messages[0]["attachments"][0]["blocks"]
        assert not [b for b in blocks if b["type"] == "actions"]


@pytest.mark.parametrize(
    ("buttons", "error"),
    [
        ([{"text": "Ack"}], "button 1: action_id is required"),
        ([{"action_id": "a"}], "button 1: text is required"),
        ([{"text": "Ack", "action_id": "a", "style": "green"}], "style 'green'; valid: primary"),
        ([{"text": "Ack", "action_id": "a", "colour": "x"}], "unknown key 'colour'"),
        ([{"text": "A", "action_id": "a"}, {"text": "B", "action_id": "a"}], "share an action_id"),
        ([{"text": "A", "action_id": "a", "value": "v" * 2001}], "value is 2001 characters"),
        ([{"text": "A", "action_id": f"a{i}"} for i in range(26)], "at most 25"),
        (["Acknowledge"], "button 1 must be a mapping"),
        ([{"text": "A", "action_id": "a", "show": "no"}], "show must be true or false"),
    ],
)
def test_bad_buttons_fail_before_calling_slack(
    client: Client, fakes: FakeVendors, buttons: list[Any], error: str
) -> None:
    with pytest.raises(PermanentError, match=error):
        slack.post_alert(client("slack"), channel="#a", title="t", buttons=buttons)
    assert not fakes.slack.calls_to("chat.postMessage")


def test_the_fake_refuses_buttons_slack_refuses(client: Client) -> None:
    # What render_buttons guards against is what Slack answers invalid_blocks for.
    bad = [{"type": "actions", "elements": [{"type": "button", "text": "Ack", "action_id": "a"}]}]
    with pytest.raises(PermanentError, match="invalid_blocks: .*plain_text"):
        slack.post_message(client("slack"), channel="#a", text="x", blocks=bad)


def test_web_client_builds_no_tls_context_per_call(
    env: dict[str, str], fakes: FakeVendors, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No CA variable in the connector's settings: the system CAs, as against the real Slack.
    # urllib given no context would build a default one (loading the whole CA bundle, ~20 ms
    # CPU) for every connection. The process trusts the fake's CA through SSL_CERT_FILE,
    # which OpenSSL reads when any default context loads its CAs.
    import ssl

    monkeypatch.setenv("SSL_CERT_FILE", env["SSL_CERT_FILE"])
    settings = {k: v for k, v in env.items() if k not in {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"}}
    web = build_client("slack", environ=settings)
    built: list[object] = []
    default = ssl._create_default_https_context

    def counting(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(args)
        return default(*args, **kwargs)

    monkeypatch.setattr(ssl, "_create_default_https_context", counting)
    for n in range(3):
        slack.post_message(web, channel="#alerts", text=f"message {n}")

    assert len(fakes.slack.calls_to("chat.postMessage")) == 3
    assert built == []
