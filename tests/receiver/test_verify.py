"""Known-answer tests for every signature scheme, and malformed headers -> SignatureError only."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hookline.errors import ConfigError
from hookline.receiver.errors import SignatureError
from hookline.receiver.verify import (
    SCHEMES,
    secret_key,
    sign_solveforce,
    verify_github,
    verify_slack,
    verify_solveforce,
    verify_standard,
    verify_stripe,
)

# GitHub docs, "Validating webhook deliveries" > "Testing the webhook payload validation":
# secret "It's a Secret to Everybody", payload "Hello, World!".
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIG = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

# Slack docs, "Verifying requests from Slack" (api.slack.com/authentication/verifying-requests-
# from-slack), the worked example of a slash command.
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = "1531420618"
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook"
    b"-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3977"
    b"00885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d"
    b"10d2c447fce8b6703c"
)
SLACK_SIG = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"

# Standard Webhooks spec repository (standard-webhooks/standard-webhooks, libraries' test
# suites, originally svix): the shared test vector.
STD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STD_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
STD_TS = "1614265330"
STD_BODY = b'{"test": 2432232314}'
STD_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

# Stripe publishes no fixed vector; this one is from the captain_hook_signature Elixir
# library's StripeSignature tests ("signs a payload correctly"), which follow Stripe's
# "Verify the signature manually" recipe: HMAC-SHA256(secret, "<t>.<body>").
STRIPE_SECRET = "a-secret"
STRIPE_BODY = b'{"data": "a-sample-payload"}'
STRIPE_HEADER = "t=1595960507,v1=10f65f2a9dfc9325b59109e7ee631ea11c419457f0b292299c770b137393b0ce"


def seed_verify_webhook_signature(payload: str, signature: str, secret: str) -> bool:
    """Copied from ../shared/spec/solveforce-webhooks.md, "Webhook Signature Verification"."""
    expected_signature = hmac.new(
        secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(f"sha256={expected_signature}", signature)


def k(secret: str, scheme: str = "solveforce") -> list[bytes]:
    return [secret_key(scheme, secret, where="test")]


def test_github_docs_vector() -> None:
    headers = {"X-Hub-Signature-256": GITHUB_SIG}
    verify_github(GITHUB_BODY, headers, secrets=k(GITHUB_SECRET), now=0)
    with pytest.raises(SignatureError) as err:
        verify_github(GITHUB_BODY + b" ", headers, secrets=k(GITHUB_SECRET), now=0)
    assert err.value.reason == "mismatch"


def test_slack_docs_vector() -> None:
    headers = {"X-Slack-Request-Timestamp": SLACK_TS, "X-Slack-Signature": SLACK_SIG}
    verify_slack(SLACK_BODY, headers, secrets=k(SLACK_SECRET), now=1531420618 + 299)
    with pytest.raises(SignatureError) as err:
        verify_slack(SLACK_BODY, headers, secrets=k(SLACK_SECRET), now=1531420618 + 301)
    assert err.value.reason == "expired"


def test_standard_webhooks_spec_vector() -> None:
    headers = {"webhook-id": STD_ID, "webhook-timestamp": STD_TS, "webhook-signature": STD_SIG}
    keys = k(STD_SECRET, "standard")
    verify_standard(STD_BODY, headers, secrets=keys, now=1614265330)
    # several signatures in the header (sender-side rotation): any v1 match is enough
    rotated = {**headers, "webhook-signature": "v1,Zm9v " + STD_SIG}
    verify_standard(STD_BODY, rotated, secrets=keys, now=1614265330)
    # svix-* header names are the same scheme
    svix = {"svix-id": STD_ID, "svix-timestamp": STD_TS, "svix-signature": STD_SIG}
    verify_standard(STD_BODY, svix, secrets=keys, now=1614265330)
    with pytest.raises(SignatureError) as err:
        verify_standard(STD_BODY, headers, secrets=keys, now=1614265330 - 301)
    assert err.value.reason == "expired"
    with pytest.raises(SignatureError) as err:
        verify_standard(b'{"test": 2432232315}', headers, secrets=keys, now=1614265330)
    assert err.value.reason == "mismatch"


def test_stripe_vector() -> None:
    headers = {"Stripe-Signature": STRIPE_HEADER}
    verify_stripe(STRIPE_BODY, headers, secrets=k(STRIPE_SECRET), now=1595960507 + 10)
    # extra schemes (v0) and several v1 signatures are allowed
    more = {"Stripe-Signature": "t=1595960507,v0=abc,v1=" + "0" * 64 + "," + STRIPE_HEADER[13:]}
    verify_stripe(STRIPE_BODY, more, secrets=k(STRIPE_SECRET), now=1595960507)
    with pytest.raises(SignatureError) as err:
        verify_stripe(STRIPE_BODY, headers, secrets=k("other"), now=1595960507)
    assert err.value.reason == "mismatch"
    with pytest.raises(SignatureError) as err:
        verify_stripe(STRIPE_BODY, headers, secrets=k(STRIPE_SECRET), now=1595960507 + 301)
    assert err.value.reason == "expired"


def test_solveforce_matches_the_seed_code() -> None:
    """Our signer and verifier agree with the spec's own verify_webhook_signature."""
    payload = '{"event_type": "webhook.test", "event_id": "test_123", "data": {"test": true}}'
    signature = sign_solveforce(payload.encode(), "your-webhook-secret")
    assert seed_verify_webhook_signature(payload, signature, "your-webhook-secret")
    verify_solveforce(
        payload.encode(),
        {"X-SolveForce-Signature": signature},
        secrets=k("your-webhook-secret"),
        now=0,
    )


def test_several_secrets_any_one_verifies() -> None:
    body = b"{}"
    headers = {"x-solveforce-signature": sign_solveforce(body, "new")}
    verify_solveforce(body, headers, secrets=k("old") + k("new"), now=0)
    with pytest.raises(SignatureError):
        verify_solveforce(body, headers, secrets=k("old"), now=0)


def test_standard_secret_must_be_base64() -> None:
    with pytest.raises(ConfigError, match="whsec_"):
        secret_key("standard", "whsec_not base64!", where="sources.x.secrets[0]")
    assert secret_key("standard", "whsec_Zm9v", where="x") == b"foo"
    assert secret_key("standard", "Zm9v", where="x") == b"foo"


MALFORMED: list[tuple[str, dict[str, str], str]] = [
    ("solveforce", {}, "missing"),
    ("solveforce", {"x-solveforce-signature": ""}, "missing"),
    ("solveforce", {"x-solveforce-signature": "md5=abc"}, "malformed"),
    ("solveforce", {"x-solveforce-signature": "sha256=zz"}, "malformed"),
    ("solveforce", {"x-solveforce-signature": "sha256=" + "é" * 64}, "mismatch"),
    ("github", {"x-hub-signature-256": "sha1=" + "0" * 40}, "malformed"),
    ("slack", {"x-slack-signature": "v0=" + "0" * 64}, "missing"),
    ("slack", {"x-slack-request-timestamp": "soon", "x-slack-signature": "v0=1"}, "malformed"),
    ("slack", {"x-slack-request-timestamp": "١٢٣", "x-slack-signature": "v0=1"}, "malformed"),
    ("slack", {"x-slack-request-timestamp": "9" * 40, "x-slack-signature": "v0=1"}, "malformed"),
    ("stripe", {"stripe-signature": "garbage"}, "malformed"),
    ("stripe", {"stripe-signature": "v1=abc"}, "malformed"),
    ("stripe", {"stripe-signature": "t=1"}, "malformed"),
    ("stripe", {"stripe-signature": "t=-1,v1=ab"}, "malformed"),
    ("standard", {"webhook-id": "a", "webhook-timestamp": "1"}, "missing"),
    (
        "standard",
        {"webhook-id": "a", "webhook-timestamp": "1", "webhook-signature": "nocomma"},
        "malformed",
    ),
    (
        "standard",
        {"webhook-id": "a", "webhook-timestamp": "1", "webhook-signature": "v2,abc"},
        "malformed",
    ),
]


@pytest.mark.parametrize(("scheme", "headers", "reason"), MALFORMED)
def test_malformed_headers_raise_signature_error(
    scheme: str, headers: dict[str, str], reason: str
) -> None:
    with pytest.raises(SignatureError) as err:
        SCHEMES[scheme](b"{}", headers, secrets=[b"k"], now=1)
    assert err.value.reason == reason


HEADER_NAMES = [
    "x-solveforce-signature",
    "x-hub-signature-256",
    "x-slack-signature",
    "x-slack-request-timestamp",
    "stripe-signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
]
header_value = st.one_of(
    st.text(max_size=80),
    st.sampled_from(["sha256=", "v0=", "t=", "v1,", "t=1,v1=", "v1=", ","]).flatmap(
        lambda p: st.text(max_size=70).map(lambda s: p + s)
    ),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
)


@settings(max_examples=600, deadline=None)
@given(
    scheme=st.sampled_from(sorted(SCHEMES)),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_value, max_size=8),
    body=st.binary(max_size=64),
    now=st.floats(min_value=-1e12, max_value=1e12),
)
def test_any_header_soup_is_a_signature_error_never_a_crash(
    scheme: str, headers: dict[str, Any], body: bytes, now: float
) -> None:
    with pytest.raises(SignatureError):
        SCHEMES[scheme](body, headers, secrets=[b"k1", b"k2"], now=now)


def test_standard_secret_key_round_trip() -> None:
    key = secret_key("standard", STD_SECRET, where="x")
    assert base64.b64encode(key).decode() == STD_SECRET.removeprefix("whsec_")
