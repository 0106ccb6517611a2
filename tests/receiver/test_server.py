"""The receiver as a real uvicorn process (`python -m hookline serve`), spoken to over TCP."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import sqlite3
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests

from hookline.inbox import PostgresInbox

from .conftest import PG_DSN, SECRET, Server, encode, event, signed, write_config

pytestmark = pytest.mark.slow


# -- the seed's own client code (../shared/spec/solveforce-webhooks.md) -------------------------
def verify_webhook_signature(payload: str, signature: str, secret: str) -> bool:
    """Verify webhook payload signature"""
    expected_signature = hmac.new(
        secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256
    ).hexdigest()

    return hmac.compare_digest(f"sha256={expected_signature}", signature)


def generate_signature(payload: str, secret: str) -> str:
    """Not shown in the seed; the counterpart of its verify_webhook_signature above."""
    return (
        "sha256="
        + hmac.new(secret.encode("utf-8"), payload.encode("utf-8"), hashlib.sha256).hexdigest()
    )


def validate_webhook_endpoint(url: str, secret: str) -> dict[str, Any]:
    """Validate webhook endpoint configuration (verbatim from the seed)"""
    test_payload = {
        "event_type": "webhook.test",
        "event_id": "test_123",
        "timestamp": datetime.utcnow().isoformat(),
        "data": {"test": True},
    }

    signature = generate_signature(json.dumps(test_payload), secret)

    try:
        response = requests.post(
            url,
            json=test_payload,
            headers={"X-SolveForce-Signature": signature, "Content-Type": "application/json"},
            timeout=30,
        )

        return {
            "status": "success" if response.status_code == 200 else "failed",
            "response_code": response.status_code,
            "response_time": response.elapsed.total_seconds(),
        }
    except Exception as e:
        return {"status": "error", "error": str(e)}


def test_seed_validate_webhook_endpoint_reports_success(server: Server) -> None:
    url = server.url + "/webhooks/solveforce"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # utcnow() on Python >= 3.12
        first = validate_webhook_endpoint(url, SECRET)
        again = validate_webhook_endpoint(url, SECRET)  # same event id: a duplicate, still 200
    assert first["status"] == "success" and first["response_code"] == 200
    assert again["status"] == "success"
    wrong = validate_webhook_endpoint(url, "not-the-secret")
    assert wrong == {**wrong, "status": "failed", "response_code": 401}


def test_seed_payloads_signed_like_the_seed(server: Server) -> None:
    """A sender using the seed's signature over json.dumps of a spec example."""
    payload = event("evt_1234567890")
    text = json.dumps(payload)
    sig = generate_signature(text, SECRET)
    assert verify_webhook_signature(text, sig, SECRET)
    r = requests.post(
        server.url + "/webhooks/solveforce",
        data=text.encode(),
        headers={"X-SolveForce-Signature": sig, "Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["status"] in ("accepted", "duplicate")


def test_every_answer_over_real_http(server: Server) -> None:
    base = server.url
    with httpx.Client(base_url=base, timeout=10) as c:

        def post(
            source: str, payload: Any, headers: dict[str, str] | None = None
        ) -> httpx.Response:
            body = payload if isinstance(payload, bytes) else encode(payload)
            return c.post(f"/webhooks/{source}", content=body, headers=headers or signed(body))

        ok = post("solveforce", event("real_1"))
        assert ok.status_code == 200 and ok.json() == {"status": "accepted", "event_id": "real_1"}
        dup = post("solveforce", event("real_1"))
        assert dup.json()["status"] == "duplicate"
        bad = post(
            "solveforce",
            event("x"),
            {"content-type": "application/json", "x-solveforce-signature": "sha256=zz"},
        )
        assert bad.status_code == 401
        assert post("solveforce", b"{oops").json()["field"] == "body"
        assert post("solveforce", event(timestamp="noon")).json()["field"] == "timestamp"
        assert post("office", event()).status_code == 403
        # a client cannot talk its way into the allowlist with X-Forwarded-For
        office = encode(event())
        spoofed = signed(office, **{"x-forwarded-for": "10.1.2.3"})
        assert c.post("/webhooks/office", content=office, headers=spoofed).status_code == 403
        assert post("nobody", event()).status_code == 404
        assert c.get("/webhooks/solveforce").status_code == 405
        huge = encode(event(data={"blob": "x" * (1024 * 1024 + 10)}))
        assert post("solveforce", huge).status_code == 413
        body = encode(event())
        assert (
            c.post(
                "/webhooks/solveforce",
                content=body,
                headers={**signed(body), "content-type": "text/plain"},
            ).status_code
            == 415
        )
        codes = [post("limited", event()).status_code for _ in range(6)]
        assert 429 in codes and codes[:2] == [200, 200]
        limited = post("limited", event())
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").json()["status"] == "ready"
        assert "hookline_webhook_requests_total" in c.get("/metrics").text
        # the connection survives all of that (no 5xx, no reset)
        assert post("solveforce", event("real_2")).status_code == 200


def test_503_when_the_inbox_cannot_commit(server: Server) -> None:
    """Another process holds SQLite's write lock longer than store_timeout: 503, then fine."""
    locker = sqlite3.connect(server.home / "inbox.sqlite3", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        body = encode(event("blocked_1"))
        r = httpx.post(
            server.url + "/webhooks/solveforce", content=body, headers=signed(body), timeout=10
        )
        assert r.status_code == 503 and r.headers["retry-after"] == "5"
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    # the sender retries: stored once, whichever attempt got there
    r = httpx.post(
        server.url + "/webhooks/solveforce", content=body, headers=signed(body), timeout=10
    )
    assert r.status_code == 200 and r.json()["status"] in ("accepted", "duplicate")


async def _blast(url: str, bodies: list[bytes], connections: int = 32) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        return await asyncio.gather(*(c.post(url, content=b, headers=signed(b)) for b in bodies))


def test_concurrent_identical_requests_over_tcp(server: Server) -> None:
    body = encode(event("evt_same_over_tcp"))
    responses = asyncio.run(_blast(server.url + "/webhooks/solveforce", [body] * 64))
    statuses = [r.json()["status"] for r in responses]
    assert [r.status_code for r in responses] == [200] * 64
    assert statuses.count("accepted") == 1 and statuses.count("duplicate") == 63
    conn = sqlite3.connect(server.home / "inbox.sqlite3")
    n = conn.execute("SELECT COUNT(*) FROM inbox WHERE event_id = 'evt_same_over_tcp'").fetchone()[
        0
    ]
    conn.close()
    assert n == 1


def test_sigkill_loses_nothing_that_was_answered(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    """N events answered 200, kill -9, restart: all N are in the inbox and are duplicates now."""
    srv = server_factory()
    url = srv.url + "/webhooks/solveforce"
    bodies = [encode(event(f"kill_{i}")) for i in range(300)]
    responses = asyncio.run(_blast(url, bodies))
    assert all(r.status_code == 200 and r.json()["status"] == "accepted" for r in responses)
    srv.stop(signal.SIGKILL)
    assert srv.proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(tmp_path / "inbox.sqlite3")
    stored = {row[0] for row in conn.execute("SELECT event_id FROM inbox")}
    conn.close()
    assert stored >= {f"kill_{i}" for i in range(300)}

    again = server_factory()
    responses = asyncio.run(_blast(again.url + "/webhooks/solveforce", bodies))
    assert all(r.json()["status"] == "duplicate" for r in responses)


@pytest.mark.postgres
def test_postgres_backed_server(
    server_factory: Callable[..., Server], tmp_path: Path, pg_schema: str
) -> None:
    srv = server_factory(
        config=write_config(tmp_path / "hookline.yaml"),
        env={"HOOKLINE_DATABASE_URL": f"{PG_DSN}?schema={pg_schema}"},
    )
    url = srv.url + "/webhooks/solveforce"
    bodies = [encode(event(f"pg_{i}")) for i in range(50)] + [encode(event("pg_same"))] * 20
    responses = asyncio.run(_blast(url, bodies))
    assert [r.status_code for r in responses] == [200] * 70
    assert sum(r.json()["status"] == "accepted" for r in responses) == 51
    assert httpx.get(srv.url + "/readyz").json()["checks"][0]["detail"].startswith("postgresql://")
    srv.stop(signal.SIGKILL)

    async def count() -> dict[str, int]:
        async with PostgresInbox(PG_DSN, schema=pg_schema) as inbox:
            return await inbox.counts()

    assert asyncio.run(count())["pending"] == 51


def test_serve_reports_config_errors(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "hookline.yaml"
    cfg.write_text("sources:\n  s:\n    scheme: solveforce\n    secrets: ['${UNSET_SECRET_VAR}']\n")
    out = subprocess.run(
        [sys.executable, "-m", "hookline", "serve", "--config", str(cfg), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOOKLINE_HOME": str(tmp_path)},
    )
    assert out.returncode != 0
    assert "UNSET_SECRET_VAR" in out.stderr and "Traceback" not in out.stderr


def test_json_logs_carry_event_ids_and_no_secret(
    server_factory: Callable[..., Server], tmp_path: Path
) -> None:
    srv = server_factory(env={"HOOKLINE_LOG_FORMAT": "json"})
    body = encode(event("evt_logged"))
    httpx.post(srv.url + "/webhooks/solveforce", content=body, headers=signed(body))
    bad = {"content-type": "application/json", "x-solveforce-signature": "sha256=" + "1" * 64}
    httpx.post(srv.url + "/webhooks/solveforce", content=body, headers=bad)
    srv.stop()
    text = srv.log.read_text()
    assert SECRET not in text and signed(body)["x-solveforce-signature"] not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    accepted = [x for x in lines if x.get("msg") == "accepted"]
    assert accepted and accepted[0]["event_id"] == "evt_logged"
    rejected = [x for x in lines if x.get("msg") == "signature rejected"]
    assert rejected and rejected[0]["reason"] == "mismatch"
    # the app's lifespan ran: the inbox was opened at startup and closed at shutdown
    assert any(x.get("msg") == "receiver ready" for x in lines)
    assert "lifespan' protocol appears unsupported" not in text
