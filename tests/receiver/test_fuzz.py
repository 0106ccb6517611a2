"""Fuzzing: nothing a client sends produces a 5xx other than 503, or a crash.

- schemathesis generates requests from the receiver's own OpenAPI document and sends them to
  a real uvicorn server;
- hypothesis generates headers and bodies (JSON-ish, binary, signed correctly or not; ids and
  types with lone surrogates or NUL, JSON nested up to 3000 levels, X-Forwarded-For on
  several lines, Standard Webhooks signed as webhook-* or svix-*) and sends them in-process.

The default run is kept small (about 1,500 requests); ``bench/fuzz.py`` runs the same
strategies at volume (20,000+ requests) against a real server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookline.config import CoreSettings
from hookline.inbox import SQLiteInbox
from hookline.receiver.app import create_app
from hookline.receiver.openapi import openapi_schema

from .conftest import ENV, SECRET, SOURCES, AppHarness, Server, make_config, signed

pytestmark = pytest.mark.anyio

EXPECTED = {200, 400, 401, 403, 404, 405, 413, 415, 429}

schema = schemathesis.openapi.from_dict(openapi_schema(sorted(SOURCES)))


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_schemathesis_against_real_server(case: Any, server: Server) -> None:
    response = case.call(base_url=server.url, timeout=10)
    assert response.status_code < 500 or response.status_code == 503, response.text
    if response.status_code == 503:
        assert "retry-after" in {k.lower() for k in response.headers}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)

envelopes = st.fixed_dictionaries(
    {},
    optional={
        "event_type": st.one_of(st.text(max_size=30), json_values),
        "event_id": st.one_of(st.text(max_size=300), json_values),
        "timestamp": st.one_of(
            st.datetimes().map(lambda d: d.isoformat()), st.text(max_size=30), json_values
        ),
        "data": json_values,
        "account": json_values,
    },
)

# Text no store takes as an id or a type: lone surrogates and NUL (json.dumps writes them as
# \ud800 / \u0000 escapes, which json.loads turns back into them).
bad_text = st.text(
    alphabet=st.one_of(st.characters(categories=["Cs"]), st.sampled_from(["\x00", "\n", "a", "-"])),
    min_size=1,
    max_size=12,
)
bad_ids = st.fixed_dictionaries(
    {
        "event_type": st.one_of(bad_text, st.just("service.status.changed")),
        "event_id": st.one_of(bad_text, st.text(min_size=1, max_size=8)),
        "timestamp": st.just("2024-01-15T10:30:00Z"),
        "data": st.just({}),
    }
)


def _deep(levels: int, kind: int) -> bytes:
    """An envelope whose ``data`` nests ``levels`` deep (lists, objects, or both)."""
    opens = "".join(("[", '{"k":')[(i + kind) % 2] if kind < 2 else "[" for i in range(levels))
    closes = "".join(("]", "}")[(i + kind) % 2] if kind < 2 else "]" for i in range(levels))[::-1]
    env = '{"event_type":"t","event_id":"deep","timestamp":"2024-01-15T10:30:00Z","data":{"d":'
    return (env + opens + "1" + closes + "}}").encode()


bodies = st.one_of(
    envelopes.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    bad_ids.map(lambda d: json.dumps(d).encode()),
    st.builds(_deep, st.integers(1, 3000), st.integers(0, 2)),
)

header_names = st.sampled_from(
    [
        "content-type",
        "content-length",
        "x-solveforce-signature",
        "x-hub-signature-256",
        "x-github-delivery",
        "x-github-event",
        "x-slack-signature",
        "x-slack-request-timestamp",
        "stripe-signature",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "svix-id",
        "svix-timestamp",
        "svix-signature",
        "x-forwarded-for",
        "authorization",
        "x-anything",
    ]
)
header_values = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=80),
)


# Repeated X-Forwarded-For lines (the receiver below trusts 127.0.0.0/8 as its proxy).
xff_lines = st.lists(
    st.sampled_from(["10.1.2.3", "203.0.113.9", "10.0.0.1, 198.51.100.7", "::1", "garbage", ""]),
    max_size=3,
)


def standard_signed(body: bytes, prefix: str, msg_id: str, now: float) -> dict[str, str]:
    """Headers of a Standard Webhooks request signed with conftest's key, as webhook-* or
    svix-* (Svix's names)."""
    key = base64.b64decode(SOURCES["standard"]["secrets"][0].removeprefix("whsec_"))
    ts = str(int(now))
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return {
        "content-type": "application/json",
        f"{prefix}-id": msg_id,
        f"{prefix}-timestamp": ts,
        f"{prefix}-signature": "v1," + base64.b64encode(mac).decode(),
    }


@pytest.fixture
async def proxied(tmp_path: Path) -> AsyncIterator[AppHarness]:
    """The receiver behind a trusted proxy (127.0.0.0/8), so X-Forwarded-For is parsed."""
    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3", writer="loop")
    await inbox.open()
    app = create_app(
        make_config(tmp_path, trusted_proxies=["127.0.0.0/8"]),
        settings=CoreSettings(home=tmp_path),
        inbox=inbox,
        environ=ENV,
    )
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        yield AppHarness(app, client, inbox)
    await inbox.close()


@settings(max_examples=700, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    source=st.sampled_from([*sorted(SOURCES), "nobody", "x" * 300]),
    body=bodies,
    headers=st.dictionaries(header_names, header_values, max_size=6),
    xff=xff_lines,
    sign=st.sampled_from(["no", "solveforce", "webhook", "svix"]),
    msg_id=st.one_of(st.text(max_size=10), bad_text),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
)
async def test_hypothesis_headers_and_bodies(
    proxied: AppHarness,
    source: str,
    body: bytes,
    headers: dict[str, str],
    xff: list[str],
    sign: str,
    msg_id: str,
    method: str,
) -> None:
    headers = {k: v for k, v in headers.items() if k != "content-length"}
    if sign == "solveforce":
        headers = {**headers, **signed(body, SECRET)}
    elif sign != "no":
        msg_id = msg_id.encode("latin-1", "replace").decode("latin-1")  # a header is bytes
        headers = {**headers, **standard_signed(body, sign, msg_id, time.time())}
    encoded = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    encoded += [(b"x-forwarded-for", v.encode()) for v in xff]
    try:
        r = await proxied.client.request(
            method, f"/webhooks/{source}", content=body, headers=encoded
        )
    except httpx.TransportError as exc:  # pragma: no cover - would be a crash
        pytest.fail(f"transport error: {exc}")
    assert r.status_code in EXPECTED, (r.status_code, r.text)
    if sign == "solveforce" and source in ("solveforce", "small", "limited") and method == "POST":
        assert r.status_code != 401  # a correctly signed body is never a signature failure
