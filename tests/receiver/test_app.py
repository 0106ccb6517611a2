"""The receiver in-process (httpx ASGI transport): every answer, what gets stored, metrics."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from hookline.config import CoreSettings, HooklineConfig
from hookline.errors import ConfigError
from hookline.inbox import COUNTED, InboxError, SQLiteInbox
from hookline.logs import JsonFormatter
from hookline.receiver.app import add_readiness_check, create_app
from hookline.receiver.handler import audit_headers

from .conftest import ENV, OLD_SECRET, SECRET, AppHarness, encode, event, make_config, signed

pytestmark = pytest.mark.anyio


async def post(
    h: AppHarness, payload: Any, source: str = "solveforce", **kw: Any
) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else encode(payload)
    headers = kw.pop("headers", None) or signed(body)
    return await h.client.post(f"/webhooks/{source}", content=body, headers=headers, **kw)


async def test_accepted_then_duplicate_and_stored_exactly(harness: AppHarness) -> None:
    body = encode(event("evt_1"))
    headers = signed(body, **{"user-agent": "SolveForce/1.0", "authorization": "Bearer x"})
    r = await harness.client.post("/webhooks/solveforce", content=body, headers=headers)
    assert r.status_code == 200
    assert r.json() == {"status": "accepted", "event_id": "evt_1"}
    r = await harness.client.post("/webhooks/solveforce", content=body, headers=headers)
    assert r.json() == {"status": "duplicate", "event_id": "evt_1"}

    entry = await harness.inbox.find("solveforce", "evt_1")
    assert entry is not None
    assert entry.body == body  # raw bytes exactly as received
    assert entry.event_type == "service.status.changed" and entry.status == "pending"
    assert (
        entry.event_time is not None and entry.event_time.isoformat() == "2024-01-15T10:30:00+00:00"
    )
    assert entry.headers["user-agent"] == "SolveForce/1.0"
    assert entry.headers["x-hookline-client"] == "127.0.0.1"
    assert "x-solveforce-signature" not in entry.headers and "authorization" not in entry.headers
    assert (await harness.inbox.counts())["pending"] == 1


async def test_old_secret_still_accepted_during_rotation(harness: AppHarness) -> None:
    body = encode(event())
    r = await post(harness, body, headers=signed(body, OLD_SECRET))
    assert r.status_code == 200
    r = await post(harness, body, headers=signed(body, "never-configured"))
    assert r.status_code == 401


async def test_naive_timestamp_from_the_seed_test_tool_is_utc(harness: AppHarness) -> None:
    r = await post(harness, event("e_naive", timestamp="2024-01-15T10:30:00.123456"))
    assert r.status_code == 200
    entry = await harness.inbox.find("solveforce", "e_naive")
    assert entry is not None and entry.event_time is not None
    assert entry.event_time.isoformat() == "2024-01-15T10:30:00.123456+00:00"
    r = await post(harness, event("e_zone", timestamp="2024-01-15T12:30:00+02:00"))
    entry = await harness.inbox.find("solveforce", "e_zone")
    assert entry is not None and entry.event_time is not None
    assert entry.event_time.isoformat() == "2024-01-15T10:30:00+00:00"


async def test_webhook_test_event_is_stored_done(harness: AppHarness) -> None:
    r = await post(harness, event("test_123", event_type="webhook.test", data={"test": True}))
    assert r.status_code == 200 and r.json()["status"] == "accepted"
    entry = await harness.inbox.find("solveforce", "test_123")
    assert entry is not None and entry.status == "done"
    assert await harness.inbox.claim(10, lease_seconds=5) == []  # runs no recipe


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (b"{not json", "body"),
        (b"\xff\xfe{}", "body"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
        (b"[1, 2]", "body"),
        ({"event_id": "e", "timestamp": "2024-01-01T00:00:00Z", "data": {}}, "event_type"),
        (event(event_type=""), "event_type"),
        (event(event_type=7), "event_type"),
        ({**event(), "event_id": None}, "event_id"),
        (event(event_id="x" * 256), "event_id"),
        (event(timestamp="yesterday"), "timestamp"),
        (event(timestamp=1705314600), "timestamp"),
        ({k: v for k, v in event().items() if k != "timestamp"}, "timestamp"),
        ({k: v for k, v in event().items() if k != "data"}, "data"),
        (event(data=[1]), "data"),
        (event(account="acme"), "account"),
    ],
)
async def test_invalid_envelope_is_400_naming_the_field(
    harness: AppHarness, payload: Any, field: str
) -> None:
    r = await post(harness, payload)
    assert r.status_code == 400
    assert r.json()["field"] == field
    assert await harness.inbox.counts() == dict.fromkeys(COUNTED, 0)


async def test_account_is_optional_and_may_be_null(harness: AppHarness) -> None:
    no_account = {k: v for k, v in event("e_noacc").items() if k != "account"}
    assert (await post(harness, no_account)).status_code == 200
    assert (await post(harness, event("e_nullacc", account=None))).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "application/json"},
        {"content-type": "application/json", "x-solveforce-signature": "sha256=00"},
        {"content-type": "application/json", "x-solveforce-signature": "sha256=" + "0" * 64},
        {"content-type": "application/json", "x-solveforce-signature": "garbage"},
        {"content-type": "application/json", "x-solveforce-signature": b"sha256=\xe9\xff"},
    ],
)
async def test_bad_or_missing_signature_is_401_generic(
    harness: AppHarness, headers: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hookline.receiver"):
        r = await post(harness, event(), headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": "invalid_signature"}  # the log, not the answer, says why
    assert any(getattr(rec, "reason", None) for rec in caplog.records)


async def test_signature_is_over_the_raw_bytes(harness: AppHarness) -> None:
    body = encode(event("e_raw"))
    headers = signed(body)
    reformatted = json.dumps(json.loads(body), indent=2).encode()  # same JSON, other bytes
    r = await harness.client.post("/webhooks/solveforce", content=reformatted, headers=headers)
    assert r.status_code == 401


async def test_unknown_source_404(harness: AppHarness) -> None:
    r = await post(harness, event(), source="nobody")
    assert r.status_code == 404 and r.json()["error"] == "unknown_source"


async def test_method_not_allowed_405(harness: AppHarness) -> None:
    for method in ("GET", "PUT", "DELETE"):
        r = await harness.client.request(method, "/webhooks/solveforce")
        assert r.status_code == 405
        assert "POST" in r.headers["allow"]


async def test_ip_allowlist_403(harness: AppHarness) -> None:
    assert (await post(harness, event(), source="office")).status_code == 403
    transport = httpx.ASGITransport(app=harness.app, client=("10.1.2.3", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as inside:
        body = encode(event())
        r = await inside.post("/webhooks/office", content=body, headers=signed(body))
    assert r.status_code == 200


async def test_body_limit_413(harness: AppHarness) -> None:
    big = event(data={"blob": "x" * 300})
    assert (await post(harness, big, source="small")).status_code == 413
    # chunked upload without Content-Length is cut off while reading
    body = encode(big)

    async def chunks() -> Any:
        for i in range(0, len(body), 50):
            yield body[i : i + 50]

    r = await harness.client.post("/webhooks/small", content=chunks(), headers=signed(body))
    assert r.status_code == 413
    assert (await post(harness, event(data={}), source="small")).status_code == 200


async def test_not_json_415(harness: AppHarness) -> None:
    body = encode(event())
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = signed(body)
        if ctype is None:
            del headers["content-type"]
        else:
            headers["content-type"] = ctype
        r = await harness.client.post("/webhooks/solveforce", content=body, headers=headers)
        assert r.status_code == 415
    headers = signed(body, **{"content-type": "application/json; charset=utf-8"})
    assert (
        await harness.client.post("/webhooks/solveforce", content=body, headers=headers)
    ).status_code == 200


async def test_rate_limit_429_with_retry_after(harness: AppHarness) -> None:
    codes = [(await post(harness, event(), source="limited")).status_code for _ in range(2)]
    assert codes == [200, 200]  # the burst
    r = await post(harness, event(), source="limited")
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    harness.mono[0] += 1.0  # one second later, one more token
    assert (await post(harness, event(), source="limited")).status_code == 200
    # unsigned requests do not use up the sender's budget
    harness.mono[0] += 1.0
    bad = {"content-type": "application/json", "x-solveforce-signature": "sha256=" + "0" * 64}
    for _ in range(5):
        assert (await post(harness, event(), source="limited", headers=bad)).status_code == 401
    assert (await post(harness, event(), source="limited")).status_code == 200


async def test_store_failure_is_503_with_retry_after(tmp_path: Path) -> None:
    class BrokenInbox(SQLiteInbox):
        async def put(self, *a: Any, **kw: Any) -> tuple[bool, int]:
            raise InboxError("disk full")

    inbox = BrokenInbox(tmp_path / "x.sqlite3")
    app = create_app(
        make_config(tmp_path), settings=CoreSettings(home=tmp_path), inbox=inbox, environ=ENV
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
        body = encode(event())
        r = await c.post("/webhooks/solveforce", content=body, headers=signed(body))
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json()["error"] == "unavailable"
    await inbox.close()


async def test_store_too_slow_is_503(tmp_path: Path) -> None:
    """Another process holds the write lock past store_timeout_seconds: 503, not a hang."""
    import sqlite3

    inbox = SQLiteInbox(tmp_path / "x.sqlite3", busy_timeout=30, writer="loop")
    await inbox.open()
    cfg = make_config(tmp_path, store_timeout_seconds=0.2, retry_after_seconds=2)
    app = create_app(cfg, settings=CoreSettings(home=tmp_path), inbox=inbox, environ=ENV)
    locker = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://r"
        ) as c:
            body = encode(event("slow_1"))
            started = time.monotonic()
            r = await c.post("/webhooks/solveforce", content=body, headers=signed(body))
            assert time.monotonic() - started < 5
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert await inbox.find("solveforce", "slow_1") is None  # the sender was told to retry
    await inbox.close()


def test_the_receiver_opens_its_inbox_with_hookline_yaml_s_sqlite_settings(
    tmp_path: Path,
) -> None:
    def inbox_of(**receiver: Any) -> Any:
        app = create_app(
            make_config(tmp_path, **receiver), settings=CoreSettings(home=tmp_path), environ=ENV
        )
        return app.state.hookline.inbox

    default = inbox_of()
    assert isinstance(default, SQLiteInbox)
    assert (default.writer, default.synchronous) == ("loop", "FULL")
    chosen = inbox_of(sqlite_writer="thread", sqlite_synchronous="NORMAL")
    assert (chosen.writer, chosen.synchronous) == ("thread", "NORMAL")


async def test_unexpected_error_is_503_never_500(tmp_path: Path) -> None:
    class BuggyInbox(SQLiteInbox):
        async def counts(self) -> dict[str, int]:
            raise ZeroDivisionError

    inbox = BuggyInbox(tmp_path / "x.sqlite3")
    app = create_app(
        make_config(tmp_path), settings=CoreSettings(home=tmp_path), inbox=inbox, environ=ENV
    )

    async def boom() -> str:
        raise RuntimeError("dispatcher lag 900 s")

    add_readiness_check(app, "dispatch_lag", boom)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
        assert (await c.get("/metrics")).status_code == 200  # depth unknown, scrape still works
        r = await c.get("/readyz")
        assert r.status_code == 503
        checks = {x["name"]: x for x in r.json()["checks"]}
        assert checks["inbox"]["ok"] is True
        assert checks["dispatch_lag"] == {
            "name": "dispatch_lag",
            "ok": False,
            "detail": "RuntimeError: dispatcher lag 900 s",
        }
    await inbox.close()


async def test_health_ready_metrics(harness: AppHarness) -> None:
    assert (await harness.client.get("/healthz")).json() == {"status": "ok"}
    r = await harness.client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    assert [c["name"] for c in r.json()["checks"]] == ["inbox"]  # no PREFECT_API_URL in ENV

    body = encode(event("m1"))
    await post(harness, body)
    await post(harness, body)
    await post(harness, event(), headers={"content-type": "application/json"})
    text = (await harness.client.get("/metrics")).text
    assert 'hookline_webhook_requests_total{outcome="accepted",source="solveforce"} 1.0' in text
    assert 'hookline_webhook_requests_total{outcome="duplicate",source="solveforce"} 1.0' in text
    assert 'hookline_signature_failures_total{reason="missing",source="solveforce"} 1.0' in text
    assert 'hookline_duplicates_total{source="solveforce"} 1.0' in text
    assert 'hookline_inbox_entries{status="pending"} 1.0' in text
    assert 'hookline_inbox_oldest_seconds{status="dispatched"} 0.0' in text
    assert 'hookline_ack_seconds_count{source="solveforce"} 2.0' in text


async def test_readyz_reports_unreachable_prefect(tmp_path: Path) -> None:
    env = {**ENV, "PREFECT_API_URL": "http://127.0.0.1:1/api"}
    app = create_app(make_config(tmp_path), settings=CoreSettings(home=tmp_path), environ=env)
    inbox = app.state.hookline.inbox
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as c:
        r = await c.get("/readyz")
    await inbox.close()
    assert r.status_code == 503
    checks = {x["name"]: x["ok"] for x in r.json()["checks"]}
    assert checks == {"inbox": True, "prefect_api": False}


async def test_other_schemes_end_to_end(harness: AppHarness) -> None:
    now = int(harness.now[0])
    # GitHub: id from the signed body's digest (X-GitHub-Delivery is not signed), type from
    # X-GitHub-Event
    body = b'{"zen": "Keep it logically awesome."}'
    sig = "sha256=" + hmac.new(b"It's a Secret to Everybody", body, hashlib.sha256).hexdigest()
    gh = {
        "content-type": "application/json",
        "x-hub-signature-256": sig,
        "x-github-delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "x-github-event": "ping",
    }
    r = await harness.client.post("/webhooks/github", content=body, headers=gh)
    digest_id = "sha256:" + hashlib.sha256(body).hexdigest()[:32]
    assert r.json() == {"status": "accepted", "event_id": digest_id}
    entry = await harness.inbox.find("github", digest_id)
    assert entry is not None and entry.event_type == "ping"
    assert entry.headers["x-github-delivery"] == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    r = await harness.client.post(
        "/webhooks/github", content=body, headers={**gh, "x-github-event": ""}
    )
    assert r.status_code == 400 and r.json()["field"] == "header X-GitHub-Event"

    # Stripe: id / type / created in the JSON
    body = encode({"id": "evt_1NG8", "type": "invoice.paid", "created": now, "data": {}})
    mac = hmac.new(b"whsec_stripe_test", f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    st = {"content-type": "application/json", "stripe-signature": f"t={now},v1={mac}"}
    r = await harness.client.post("/webhooks/stripe", content=body, headers=st)
    assert r.json()["status"] == "accepted"
    entry = await harness.inbox.find("stripe", "evt_1NG8")
    assert entry is not None and entry.event_type == "invoice.paid" and entry.event_time is not None

    # Slack: url_verification is echoed, not stored; events are stored by event_id
    def slack(body: bytes) -> dict[str, str]:
        base = f"v0:{now}:".encode() + body
        mac = hmac.new(b"8f742231b10e8888abcd99yyyzzz85a5", base, hashlib.sha256).hexdigest()
        return {
            "content-type": "application/json",
            "x-slack-request-timestamp": str(now),
            "x-slack-signature": f"v0={mac}",
        }

    body = encode({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595"})
    r = await harness.client.post("/webhooks/slack", content=body, headers=slack(body))
    assert r.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595"}
    body = encode({"type": "event_callback", "event_id": "Ev08", "event": {"type": "app_mention"}})
    r = await harness.client.post("/webhooks/slack", content=body, headers=slack(body))
    assert r.json() == {"status": "accepted", "event_id": "Ev08"}

    # Standard Webhooks: id from webhook-id, type from JSON
    import base64

    key = base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = encode({"type": "invoice.paid", "data": {}})
    mac_b = hmac.new(key, f"msg_1.{now}.".encode() + body, hashlib.sha256).digest()
    sw = {
        "content-type": "application/json",
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": "v1," + base64.b64encode(mac_b).decode(),
    }
    r = await harness.client.post("/webhooks/standard", content=body, headers=sw)
    assert r.json() == {"status": "accepted", "event_id": "msg_1"}
    harness.now[0] += 400  # replayed 400 s later: outside the 5-minute tolerance
    r = await harness.client.post("/webhooks/standard", content=body, headers=sw)
    assert r.status_code == 401


async def test_concurrent_identical_requests_store_once(harness: AppHarness) -> None:
    body = encode(event("evt_race"))
    results = await asyncio.gather(
        *(
            harness.client.post("/webhooks/solveforce", content=body, headers=signed(body))
            for _ in range(40)
        )
    )
    statuses = [r.json()["status"] for r in results]
    assert all(r.status_code == 200 for r in results)
    assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 39
    assert len(await harness.inbox.find_event("evt_race")) == 1


def test_audit_headers_never_keep_secrets() -> None:
    kept = audit_headers(
        {
            "User-Agent": "ua",
            "X-SolveForce-Signature": "sha256=abc",
            "Authorization": "Bearer t",
            "X-Api-Token": "t",
            "X-Echo": f"prefix {SECRET} suffix",
            "X-Request-Id": "r1",
        },
        (SECRET,),
        "10.0.0.1",
    )
    assert kept == {"user-agent": "ua", "x-request-id": "r1", "x-hookline-client": "10.0.0.1"}


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    def app(
        sources: dict[str, Any], receiver: dict[str, Any] | None = None, env: Any = ENV
    ) -> None:
        cfg = HooklineConfig(sources=sources, receiver=receiver or {})
        cfg.path = tmp_path / "hookline.yaml"
        create_app(cfg, settings=CoreSettings(home=tmp_path), environ=env)

    with pytest.raises(ConfigError, match="SOLVEFORCE_WEBHOOK_SECRET"):
        app({"s": {"scheme": "solveforce", "secrets": ["${SOLVEFORCE_WEBHOOK_SECRET}"]}}, env={})
    with pytest.raises(ConfigError, match=r"sources\.s\.scheme.*valid schemes"):
        app({"s": {"scheme": "hmac", "secrets": ["x"]}})
    with pytest.raises(ConfigError, match=r"sources\.s\.allow_ips"):
        app({"s": {"scheme": "github", "secrets": ["x"], "allow_ips": ["10.0.0.300/8"]}})
    with pytest.raises(ConfigError, match=r"sources\.s\.sekrets"):
        app({"s": {"scheme": "github", "sekrets": ["x"]}})
    with pytest.raises(ConfigError, match=r"receiver\.max_body_bytes"):
        app({}, {"max_body_bytes": 0})
    with pytest.raises(ConfigError, match="empty"):
        app({"s": {"scheme": "github", "secrets": ["${NOPE:-}"]}})


def test_json_log_lines_carry_the_event_id() -> None:
    rec = logging.LogRecord("hookline.receiver", logging.INFO, "x", 1, "accepted", None, None)
    rec.event_id = "evt_1"
    rec.source = "solveforce"
    line = json.loads(JsonFormatter().format(rec))
    assert line["event_id"] == "evt_1" and line["msg"] == "accepted" and line["level"] == "INFO"
    logged = datetime.fromisoformat(line["time"].replace("Z", "+00:00"))
    assert logged.tzinfo is not None
    assert abs(logged.timestamp() - rec.created) < 0.001  # the record's own time, in UTC


def test_shipped_hookline_yaml(tmp_path: Path) -> None:
    """The repository's hookline.yaml declares solveforce with its secret from the environment."""
    from hookline.config import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "hookline.yaml")
    env = {"SOLVEFORCE_WEBHOOK_SECRET": "s" * 16}
    app = create_app(cfg, settings=CoreSettings(home=tmp_path), environ=env)
    source = app.state.hookline.sources["solveforce"]
    assert source.scheme == "solveforce" and source.keys == (b"s" * 16,)  # empty slot skipped
    assert app.state.hookline.config.max_body_bytes == 1024 * 1024
    with pytest.raises(ConfigError, match="SOLVEFORCE_WEBHOOK_SECRET"):
        create_app(cfg, settings=CoreSettings(home=tmp_path), environ={})
