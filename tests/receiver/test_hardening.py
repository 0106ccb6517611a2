"""Regression tests of the receiver-side findings of the security and reliability review
(issue 11). Each test fails on the code before its fix."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import json
import logging
import os
import secrets as pysecrets
import sqlite3
import stat
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookline import logs
from hookline.config import CoreSettings, HooklineConfig
from hookline.errors import ConfigError
from hookline.inbox import Inbox, InboxError, SQLiteInbox
from hookline.logs import BufferedStreamHandler, TextFormatter
from hookline.receiver.app import create_app
from hookline.retention import PRUNABLE

from .conftest import ENV, AppHarness, encode, event, make_config, signed

pytestmark = pytest.mark.anyio


def _app(tmp_path: Path, sources: dict[str, Any], env: dict[str, str]) -> Any:
    cfg = HooklineConfig(sources=sources)
    cfg.path = tmp_path / "hookline.yaml"
    return create_app(cfg, settings=CoreSettings(home=tmp_path), environ=env)


# -- 1. empty or short HMAC keys -----------------------------------------------------------


def test_unset_whsec_variable_refuses_to_start_naming_source_and_variable(
    tmp_path: Path,
) -> None:
    """``whsec_${VAR:-}`` with VAR unset used to leave the key b"" (an empty-key HMAC)."""
    sources = {"std": {"scheme": "standard", "secrets": ["whsec_${STD_WEBHOOK_SECRET:-}"]}}
    with pytest.raises(ConfigError, match=r"sources\.std\.secrets.*STD_WEBHOOK_SECRET"):
        _app(tmp_path, sources, {})


@pytest.mark.parametrize(
    ("scheme", "value", "length", "minimum"),
    [
        ("standard", "whsec_" + base64.b64encode(b"k" * 16).decode(), 16, 24),
        ("solveforce", " ", 1, 16),
        ("github", "fifteen-bytes!!", 15, 16),
        ("slack", "x" * 8, 8, 16),
        ("stripe", "whsec_short", 11, 16),
    ],
)
def test_short_key_refuses_to_start_naming_source_and_variable(
    tmp_path: Path, scheme: str, value: str, length: int, minimum: int
) -> None:
    sources = {"partner": {"scheme": scheme, "secrets": ["${PARTNER_SECRET}"]}}
    with pytest.raises(ConfigError) as err:
        _app(tmp_path, sources, {"PARTNER_SECRET": value})
    message = str(err.value)
    assert "sources.partner.secrets[0]" in message and "PARTNER_SECRET" in message
    assert f"is {length} bytes" in message and f"at least {minimum} bytes" in message


def test_short_literal_secret_is_refused_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"sources\.gh\.secrets\[0\].*written in the file"):
        _app(tmp_path, {"gh": {"scheme": "github", "secrets": ["hunter2"]}}, {})


def test_keys_at_the_minimum_start_and_empty_rotation_slots_are_skipped(tmp_path: Path) -> None:
    std_key = pysecrets.token_bytes(24)
    sources = {
        "std": {
            "scheme": "standard",
            "secrets": ["${STD_SECRET}", "whsec_${STD_SECRET_OLD:-}"],
        },
        "sf": {"scheme": "solveforce", "secrets": ["${SF_SECRET}", "${SF_SECRET_OLD:-}"]},
    }
    env = {"STD_SECRET": "whsec_" + base64.b64encode(std_key).decode(), "SF_SECRET": "s" * 16}
    app = _app(tmp_path, sources, env)
    assert app.state.hookline.sources["std"].keys == (std_key,)
    assert app.state.hookline.sources["sf"].keys == (b"s" * 16,)


# -- helpers -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _client(
    tmp_path: Path, peer: str = "127.0.0.1", **receiver: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, SQLiteInbox, Any]]:
    """The receiver in-process over its own SQLite inbox, seen from ``peer``."""
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3", writer="loop")
    await inbox.open()
    app = create_app(
        make_config(tmp_path, **receiver),
        settings=CoreSettings(home=tmp_path),
        inbox=inbox,
        environ=ENV,
    )
    transport = httpx.ASGITransport(app=app, client=(peer, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        yield client, inbox, app
    await inbox.close()


def _standard(body: bytes, msg_id: str, ts: int, prefix: str = "webhook") -> dict[str, str]:
    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")  # conftest's "standard" source
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": str(ts),
        f"{prefix}-signature": "v1," + base64.b64encode(mac).decode(),
    }


# -- 13. Svix header names -----------------------------------------------------------------


async def test_svix_headers_are_read_where_webhook_headers_are(harness: AppHarness) -> None:
    """Signed with svix-id/-timestamp/-signature: verified, then 400 "header webhook-id"."""
    ts = int(harness.now[0])
    body = encode({"type": "invoice.paid", "data": {}})
    r = await harness.client.post(
        "/webhooks/standard", content=body, headers=_standard(body, "msg_svix_1", ts, "svix")
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "accepted", "event_id": "msg_svix_1"}
    entry = await harness.inbox.find("standard", "msg_svix_1")
    assert entry is not None and entry.event_type == "invoice.paid"
    assert entry.event_time is not None and int(entry.event_time.timestamp()) == ts
    # the webhook-* names still work
    r = await harness.client.post(
        "/webhooks/standard", content=body, headers=_standard(body, "msg_std_1", ts)
    )
    assert r.json() == {"status": "accepted", "event_id": "msg_std_1"}


# -- 3. X-Forwarded-For on several header lines --------------------------------------------


async def test_forwarded_for_on_two_lines_is_read_whole(tmp_path: Path) -> None:
    """The client claims an allowed address on its own line; the trusted proxy appends the
    real one on a second line. Only the first line used to be read: 200 instead of 403."""
    async with _client(tmp_path, trusted_proxies=["127.0.0.1/32"]) as (client, inbox, _):
        body = encode(event("evt_xff"))
        two_lines = [
            *signed(body).items(),
            ("x-forwarded-for", "10.1.2.3"),  # forged by the client
            ("x-forwarded-for", "203.0.113.9"),  # appended by the proxy: the real client
        ]
        r = await client.post("/webhooks/office", content=body, headers=two_lines)
        assert r.status_code == 403
        assert await inbox.find("office", "evt_xff") is None
        # the same hops on one line, and a real client inside the allow-list, as before
        one_line = {**signed(body), "x-forwarded-for": "10.1.2.3, 203.0.113.9"}
        assert (
            await client.post("/webhooks/office", content=body, headers=one_line)
        ).status_code == 403
        inside = [
            *signed(body).items(),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "10.9.9.9"),
        ]
        r = await client.post("/webhooks/office", content=body, headers=inside)
        assert r.status_code == 200


# -- 11. ids and types no store takes; one bad row must not fail its batch -----------------


@pytest.mark.parametrize(
    ("overrides", "field", "detail"),
    [
        ({"event_id": "evt_\ud800"}, "event_id", "lone surrogate (\\ud800)"),
        ({"event_id": "evt_\x00"}, "event_id", "NUL character"),
        ({"event_type": "service.\udfff"}, "event_type", "lone surrogate (\\udfff)"),
        ({"event_type": "service\x00status"}, "event_type", "NUL character"),
    ],
)
async def test_id_or_type_with_surrogate_or_nul_is_400_naming_the_field(
    harness: AppHarness, overrides: dict[str, str], field: str, detail: str
) -> None:
    body = json.dumps(event(**overrides)).encode()  # ensure_ascii: "\\ud800", "\\u0000"
    good = encode(event("evt_good"))
    bad, ok = await asyncio.gather(
        harness.client.post("/webhooks/solveforce", content=body, headers=signed(body)),
        harness.client.post("/webhooks/solveforce", content=good, headers=signed(good)),
    )
    assert bad.status_code == 400, bad.text
    assert bad.json()["field"] == field and detail in bad.json()["detail"]
    assert ok.status_code == 200  # the event sent alongside was stored


async def test_one_unstorable_row_fails_alone_not_its_batch(any_inbox: Inbox) -> None:
    """A put the store refuses (here a lone surrogate, which no validation stopped) used to
    fail the group commit of every put in its batch: all 503, on every retry."""
    ids = ["ok_1", "ok_2", "bad_\ud800", "ok_3", "ok_4"]
    results = await asyncio.gather(
        *(any_inbox.put("s", i, "t", b"{}", {}, None, timeout=10) for i in ids),
        return_exceptions=True,
    )
    assert isinstance(results[2], InboxError) and "bad_" in str(results[2])
    good = [r for i, r in zip(ids, results, strict=True) if i != ids[2]]
    assert all(isinstance(r, tuple) and r[0] is True for r in good), results
    for i in ("ok_1", "ok_2", "ok_3", "ok_4"):
        assert await any_inbox.find("s", i) is not None
    # duplicates in a retried batch still resolve to the stored entry
    again = await asyncio.gather(
        any_inbox.put("s", "ok_1", "t", b"{}", {}, None),
        any_inbox.put("s", "bad_\udfff", "t", b"{}", {}, None),
        return_exceptions=True,
    )
    assert again[0] == (False, good[0][1])  # type: ignore[index]
    assert isinstance(again[1], InboxError)


# -- 17. deep JSON ---------------------------------------------------------------------------


def _nested(levels: int) -> str:
    """JSON text of ``levels`` lists and objects, alternating, around a string."""
    opens, closes = "", ""
    for i in range(levels):
        opens, closes = opens + ('{"k":' if i % 2 else "["), ("}" if i % 2 else "]") + closes
    return opens + '"leaf"' + closes


@pytest.mark.parametrize(("levels", "status"), [(64, 200), (65, 400), (993, 400)])
async def test_json_deeper_than_64_levels_is_400_saying_so(
    harness: AppHarness, levels: int, status: int
) -> None:
    """993 levels used to be stored; Prefect's visit_collection then failed every run."""
    # the envelope object is level 1, ``data`` level 2: "deep" holds levels - 2 more
    body = encode(event(data={"deep": "@"})).replace(b'"@"', _nested(levels - 2).encode())
    r = await post_raw(harness, body)
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["field"] == "body"
        assert r.json()["detail"] == "JSON nested deeper than 64 levels"


async def test_many_brackets_but_shallow_is_accepted(harness: AppHarness) -> None:
    payload = event(data={"rows": [{"id": i, "tags": [str(i)]} for i in range(500)]})
    assert (await post_raw(harness, encode(payload))).status_code == 200


async def post_raw(h: AppHarness, body: bytes, source: str = "solveforce") -> httpx.Response:
    return await h.client.post(f"/webhooks/{source}", content=body, headers=signed(body))


# -- 12. duplicates must not use up the rate limit -------------------------------------------


async def test_replayed_duplicates_do_not_use_up_the_rate_limit(harness: AppHarness) -> None:
    """Source "limited": 1 event/s, burst 2. Replays of one captured body used to take the
    tokens, so the sender's next real event got 429."""

    async def send(payload: dict[str, Any]) -> httpx.Response:
        return await post_raw(harness, encode(payload), "limited")

    captured = event("evt_captured")
    assert (await send(captured)).json()["status"] == "accepted"  # one token left
    for _ in range(10):
        r = await send(captured)
        assert r.status_code == 200 and r.json()["status"] == "duplicate"
    assert (await send(event("evt_real_1"))).json()["status"] == "accepted"  # the last token
    # with the bucket empty, a known event is still answered duplicate, a new one 429
    r = await send(captured)
    assert r.status_code == 200 and r.json()["status"] == "duplicate"
    assert (await send(event("evt_real_2"))).status_code == 429
    harness.mono[0] += 1.0
    assert (await send(event("evt_real_2"))).json()["status"] == "accepted"
    text = (await harness.client.get("/metrics")).text
    assert 'hookline_duplicates_total{source="limited"} 11.0' in text


# -- 16. a bug in put is not an outage -------------------------------------------------------


class _BuggyInbox(SQLiteInbox):
    async def put(self, *a: Any, **kw: Any) -> tuple[bool, int]:
        if a[1] == "evt_bug":
            raise ZeroDivisionError("division by zero")
        raise InboxError("sqlite:/x: not committed within 10 s")


async def test_unexpected_error_in_put_is_logged_with_traceback_and_still_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = _BuggyInbox(tmp_path / "x.sqlite3")
    app = create_app(
        make_config(tmp_path), settings=CoreSettings(home=tmp_path), inbox=inbox, environ=ENV
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as c:
        with caplog.at_level(logging.INFO, logger="hookline.receiver"):
            bug, outage = [
                await c.post("/webhooks/solveforce", content=b, headers=signed(b))
                for b in (encode(event("evt_bug")), encode(event("evt_outage")))
            ]
        metrics = (await c.get("/metrics")).text
    await inbox.close()
    for r in (bug, outage):  # the sender retries either way; no other 5xx
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
    records = {getattr(rec, "event_id", None): rec for rec in caplog.records}
    bug_rec, outage_rec = records["evt_bug"], records["evt_outage"]
    assert bug_rec.exc_info is not None and bug_rec.exc_info[0] is ZeroDivisionError
    assert bug_rec.outcome == "internal_error"  # type: ignore[attr-defined]
    assert outage_rec.exc_info is None and outage_rec.outcome == "unavailable"  # type: ignore[attr-defined]
    assert 'outcome="internal_error",source="solveforce"} 1.0' in metrics
    assert 'outcome="unavailable",source="solveforce"} 1.0' in metrics


# -- 2. replays through unsigned headers -----------------------------------------------------


def _github(body: bytes, delivery: str, kind: str) -> dict[str, str]:
    mac = hmac.new(b"It's a Secret to Everybody", body, hashlib.sha256).hexdigest()
    return {
        "content-type": "application/json",
        "x-hub-signature-256": "sha256=" + mac,
        "x-github-delivery": delivery,
        "x-github-event": kind,
    }


async def test_github_body_replayed_with_new_delivery_ids_is_a_duplicate(
    harness: AppHarness,
) -> None:
    """X-GitHub-Delivery and X-GitHub-Event are not signed: one captured body re-posted with
    new delivery ids and other types used to be stored once per post."""
    body = b'{"action": "opened", "issue": {"number": 1}}'
    first = await harness.client.post(
        "/webhooks/github", content=body, headers=_github(body, "d-1", "issues")
    )
    assert first.json()["status"] == "accepted"
    for delivery, kind in (("d-2", "push"), ("d-3", "deployment"), ("d-4", "release")):
        r = await harness.client.post(
            "/webhooks/github", content=body, headers=_github(body, delivery, kind)
        )
        assert r.status_code == 200 and r.json() == {**first.json(), "status": "duplicate"}
    assert (await harness.inbox.counts())["pending"] == 1
    [entry] = await harness.inbox.list()
    assert entry.event_type == "issues" and entry.headers["x-github-delivery"] == "d-1"
    other = b'{"action": "closed", "issue": {"number": 1}}'  # another body is another event
    r = await harness.client.post(
        "/webhooks/github", content=other, headers=_github(other, "d-5", "issues")
    )
    assert r.json()["status"] == "accepted"


def test_unsigned_type_header_is_warned_about_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hookline.receiver"):
        _app(tmp_path, {"gh": {"scheme": "github", "secrets": ["g" * 20]}}, {})
    [warning] = [r.getMessage() for r in caplog.records if "not signed" in r.getMessage()]
    assert "sources.gh.event_type" in warning and "X-GitHub-Event" in warning


@pytest.mark.parametrize(
    ("scheme", "locator", "ok"),
    [
        ("solveforce", "header:X-Request-Id", False),
        ("github", "header:X-GitHub-Delivery", False),
        ("stripe", "header:Idempotency-Key", False),
        ("standard", "header:webhook-id", True),
        ("standard", "header:svix-id", True),
        ("github", "body:sha256", True),
        ("slack", "json:event_id", True),
    ],
)
def test_event_id_from_an_unsigned_header_is_refused(
    tmp_path: Path, scheme: str, locator: str, ok: bool
) -> None:
    key = "whsec_" + base64.b64encode(b"k" * 24).decode() if scheme == "standard" else "k" * 16
    sources = {"s": {"scheme": scheme, "secrets": [key], "event_id": locator}}
    if ok:
        _app(tmp_path, sources, {})
        return
    with pytest.raises(ConfigError, match=r"sources\.s\.event_id: .* is not signed"):
        _app(tmp_path, sources, {})


# -- 7. log injection ------------------------------------------------------------------------


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """The receiver's log as `hookline serve` writes it (text format), into a buffer."""
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("hookline.receiver")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_newlines_from_senders_cannot_forge_text_log_lines(
    harness: AppHarness, text_log: io.StringIO
) -> None:
    forged = "2024-01-15T10:30:00.000Z INFO hookline.receiver accepted source=solveforce"
    r = await post_raw(harness, encode(event(f"evt_1\n{forged} event_id=fake")))
    assert r.status_code == 200
    r = await harness.client.post("/webhooks/nobody%0a" + forged.replace(" ", "%20"), content=b"{}")
    assert r.status_code == 404
    lines = text_log.getvalue().splitlines()
    assert len(lines) == 2, lines  # one line per request, whatever they carried
    assert all(not line.startswith("2024-01-15T10:30:00.000Z") for line in lines)
    assert "event_id=evt_1\\n2024-01-15T10:30:00.000Z INFO" in lines[0]
    assert "source=nobody\\n2024-01-15" in lines[1]


def test_fast_path_and_formatter_escape_every_control_character() -> None:
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("hookline.test_fast_path")
    logger.setLevel(logging.INFO)
    saved = logs._fast[0]
    logs._fast[0] = handler  # as configure_logging installs it
    try:
        assert logs.fast_info(logger, "accepted\r\n", {"event_id": "a\rb\x1b[2J\u2028c"})
    finally:
        logs._fast[0] = saved
    rec = logging.LogRecord("hookline.x", logging.INFO, "x", 1, "m\x00", None, None)
    rec.event_id = "e\n"
    line = stream.getvalue() + TextFormatter().format(rec)
    assert line.count("\n") == 1  # the fast path's own line end, and nothing else
    assert "accepted\\r\\n event_id=a\\rb\\x1b[2J\\u2028c" in line
    assert "m\\x00 event_id=e\\n" in line


# -- 9. file permissions ---------------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, whatever the test runner's: files 0644 and folders 0755 by default."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_inbox_and_home_are_owner_only(tmp_path: Path, umask_022: None) -> None:
    home = tmp_path / "home"
    inbox = SQLiteInbox(home / "inbox.sqlite3", writer="loop")
    await inbox.open()
    await inbox.put("s", "e1", "t", b"{}", {}, None)
    assert _mode(home) == 0o700
    assert _mode(home / "inbox.sqlite3") == 0o600
    assert _mode(home / "inbox.sqlite3-wal") == 0o600  # SQLite copies the database's mode
    await inbox.close()


async def test_existing_world_readable_inbox_and_home_are_tightened(
    tmp_path: Path, umask_022: None
) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    db = home / "inbox.sqlite3"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    async with SQLiteInbox(db) as inbox:
        assert await inbox.find("s", "nothing") is None
    assert _mode(home) == 0o700 and _mode(db) == 0o600


def test_dev_secret_is_owner_only_and_an_old_readable_one_is_tightened(
    tmp_path: Path, umask_022: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hookline.engine.up import dev_secret

    monkeypatch.delenv("SOLVEFORCE_WEBHOOK_SECRET", raising=False)
    home = tmp_path / "home"
    secret = dev_secret(home)
    assert _mode(home) == 0o700 and _mode(home / "dev-secret") == 0o600
    assert len(secret.encode()) >= 16  # long enough for the receiver's minimum
    (home / "dev-secret").chmod(0o644)
    home.chmod(0o755)
    monkeypatch.delenv("SOLVEFORCE_WEBHOOK_SECRET")
    assert dev_secret(home) == secret  # the same secret, kept
    assert _mode(home) == 0o700 and _mode(home / "dev-secret") == 0o600


def test_hookline_up_makes_a_slack_development_secret_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hookline.engine.up import dev_secret

    monkeypatch.delenv("SLACK_SIGNING_SECRET", raising=False)
    home = tmp_path / "home"
    secret = dev_secret(home, "SLACK_SIGNING_SECRET")
    assert len(secret) == 32 and int(secret, 16) >= 0  # like Slack's own: 32 hex digits
    assert _mode(home / "dev-slack-secret") == 0o600
    assert os.environ["SLACK_SIGNING_SECRET"] == secret  # what the receiver then reads
    monkeypatch.delenv("SLACK_SIGNING_SECRET")
    assert dev_secret(home, "SLACK_SIGNING_SECRET") == secret  # kept
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "8f742231b10e8888abcd99yyyzzz85a5")
    assert (
        dev_secret(home, "SLACK_SIGNING_SECRET") == "8f742231b10e8888abcd99yyyzzz85a5"
    )  # the user's wins


# -- 10. admin endpoints: a token, and an inbox depth that is not read on every scrape -------

ADMIN_TOKEN = "admin-" + "t" * 26


@pytest.mark.parametrize("where", ["hookline.yaml", "environment"])
async def test_admin_endpoints_require_the_token_when_set(tmp_path: Path, where: str) -> None:
    receiver = {"admin_token": ADMIN_TOKEN} if where == "hookline.yaml" else {}
    env = {**ENV, "HOOKLINE_ADMIN_TOKEN": ADMIN_TOKEN} if where == "environment" else ENV
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3", writer="loop")
    await inbox.open()
    app = create_app(
        make_config(tmp_path, **receiver),
        settings=CoreSettings(home=tmp_path),
        inbox=inbox,
        environ=env,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as c:
        for path in ("/metrics", "/readyz", "/openapi.json"):
            for auth in (None, "Bearer wrong-token-0123456789", f"Basic {ADMIN_TOKEN}"):
                r = await c.get(path, headers={"authorization": auth} if auth else {})
                assert r.status_code == 401, (path, auth)
                assert r.json() == {"error": "unauthorized"}
                assert r.headers["www-authenticate"] == "Bearer"
            r = await c.get(path, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
            assert r.status_code == 200, path
        assert (await c.get("/healthz")).status_code == 200  # liveness stays open
        body = encode(event())  # and webhooks need no token
        assert (await c.post("/webhooks/solveforce", content=body, headers=signed(body))).is_success
    await inbox.close()


def test_short_admin_token_is_refused_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"receiver\.admin_token.*HOOKLINE_ADMIN_TOKEN"):
        create_app(
            make_config(tmp_path),
            settings=CoreSettings(home=tmp_path),
            environ={**ENV, "HOOKLINE_ADMIN_TOKEN": "secret"},
        )


class _CountingInbox(SQLiteInbox):
    count_calls = 0

    async def counts(self) -> dict[str, int]:
        self.count_calls += 1
        return await super().counts()


async def test_metrics_scrapes_reuse_the_inbox_depth_for_a_few_seconds(tmp_path: Path) -> None:
    """Every scrape used to run COUNT ... GROUP BY on the inbox writer."""
    inbox = _CountingInbox(tmp_path / "inbox.sqlite3", writer="loop")
    await inbox.open()
    mono = [1000.0]
    app = create_app(
        make_config(tmp_path),
        settings=CoreSettings(home=tmp_path),
        inbox=inbox,
        environ=ENV,
        monotonic=lambda: mono[0],
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as c:
        body = encode(event())
        await c.post("/webhooks/solveforce", content=body, headers=signed(body))
        scrapes = await asyncio.gather(*(c.get("/metrics") for _ in range(5)))
        scrapes += [await c.get("/metrics") for _ in range(5)]
        assert inbox.count_calls == 1
        assert all('hookline_inbox_entries{status="pending"} 1.0' in r.text for r in scrapes)
        body = encode(event())
        await c.post("/webhooks/solveforce", content=body, headers=signed(body))
        mono[0] += 6.0  # stale: this scrape starts a read in the background ...
        r = await c.get("/metrics")
        assert 'hookline_inbox_entries{status="pending"} 1.0' in r.text  # ... and does not wait
        for _ in range(100):
            await asyncio.sleep(0.01)
            r = await c.get("/metrics")
            if 'hookline_inbox_entries{status="pending"} 2.0' in r.text:
                break
        assert 'hookline_inbox_entries{status="pending"} 2.0' in r.text
        assert inbox.count_calls == 2
    await inbox.close()


# -- 10. inbox retention ---------------------------------------------------------------------


async def test_prune_deletes_only_old_final_entries_and_their_steps(any_inbox: Inbox) -> None:
    clock = any_inbox.test_clock  # type: ignore[attr-defined]
    for event_id, status in (
        ("old_done", "done"),
        ("old_failed", "failed"),
        ("old_pending", "pending"),
        ("old_dispatched", "dispatched"),
    ):
        await any_inbox.put("s", event_id, "t", b"{}", {}, None, status=status)
    await any_inbox.record_step("s", "old_done", "r", "notify", {"ts": "1"})
    clock[0] += 31 * 86400
    await any_inbox.put("s", "new_done", "t", b"{}", {}, None, status="done")
    await any_inbox.record_step("s", "new_done", "r", "notify", {"ts": "2"})

    month = timedelta(days=30)
    assert await any_inbox.prune(month, statuses=PRUNABLE, dry_run=True) == 2
    assert await any_inbox.find("s", "old_done") is not None  # a dry run deletes nothing
    assert await any_inbox.prune(month, statuses=PRUNABLE, batch=1) == 2  # batch by batch
    kept = sorted(e.event_id for e in await any_inbox.list())
    assert kept == ["new_done", "old_dispatched", "old_pending"]  # never pending/dispatched
    assert await any_inbox.completed_steps("s", "old_done", "r") == {}
    assert await any_inbox.completed_steps("s", "new_done", "r") == {"notify": {"ts": "2"}}
    assert await any_inbox.prune(month, statuses=PRUNABLE) == 0
    with pytest.raises(ValueError, match="cannot prune statuses \\['pending'\\]"):
        await any_inbox.prune(month, statuses=("done", "pending"))
    with pytest.raises(ValueError, match="must not be negative"):
        await any_inbox.prune(-month, statuses=PRUNABLE)


def test_hookline_prune_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from hookline.cli import main
    from hookline.config import get_settings

    async def fill() -> None:
        old = time.time() - 40 * 86400
        async with SQLiteInbox(tmp_path / "inbox.sqlite3", clock=lambda: old) as inbox:
            await inbox.put("s", "e_old", "t", b"{}", {}, None, status="done")
            await inbox.put("s", "e_waiting", "t", b"{}", {}, None)

    asyncio.run(fill())
    monkeypatch.setenv("HOOKLINE_HOME", str(tmp_path))
    monkeypatch.delenv("HOOKLINE_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        r = runner.invoke(main, ["prune", "--older-than", "30d", "--dry-run"])
        assert r.exit_code == 0 and r.output.startswith("would delete 1 entry"), r.output
        r = runner.invoke(main, ["prune", "--older-than", "30d"])
        assert r.exit_code == 0 and r.output.startswith("deleted 1 entry"), r.output
        r = runner.invoke(main, ["prune", "--older-than", "a month"])
        assert r.exit_code == 2 and "e.g. 30d" in r.output
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("formatter", [TextFormatter(), logs.JsonFormatter()])
def test_the_fast_path_writes_exactly_the_formatters_line(formatter: logging.Formatter) -> None:
    """One line format: `fast_info` asks the handler's formatter, it does not copy it."""
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream)  # type: ignore[arg-type]
    handler.setFormatter(formatter)
    logger = logging.getLogger("hookline.test_same_line")
    logger.setLevel(logging.INFO)
    saved = logs._fast[0]
    logs._fast[0] = handler
    try:
        assert logs.fast_info(logger, "accepted", {"source": "s", "event_id": "e\n1"})
    finally:
        logs._fast[0] = saved
    fast = stream.getvalue().rstrip("\n")
    rec = logging.LogRecord(logger.name, logging.INFO, "x", 1, "accepted", None, None)
    rec.source, rec.event_id = "s", "e\n1"
    slow = formatter.format(rec)
    if isinstance(formatter, TextFormatter):  # equal after the time stamp
        assert fast.split(" ", 1)[1] == slow.split(" ", 1)[1]
    else:
        assert {k: v for k, v in json.loads(fast).items() if k != "time"} == {
            k: v for k, v in json.loads(slow).items() if k != "time"
        }


def test_a_line_not_flushed_at_once_is_flushed_within_the_interval() -> None:
    """A quiet process (a dispatcher reloading its recipes) logs a WARNING, then one INFO line
    and nothing more: the INFO line must not wait in the buffer for a next line."""

    class Flushes(io.StringIO):
        flushed = ""

        def flush(self) -> None:
            self.flushed = self.getvalue()

    stream = Flushes()
    handler = BufferedStreamHandler(stream, interval=0.1)  # type: ignore[arg-type]
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("hookline.test_quiet")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("flushed at once")
        logger.info("recipes reloaded")
        assert "recipes reloaded" not in stream.flushed  # buffered, not a syscall per line
        deadline = time.monotonic() + 2.0
        while "recipes reloaded" not in stream.flushed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "recipes reloaded" in stream.flushed
    finally:
        logger.removeHandler(handler)
