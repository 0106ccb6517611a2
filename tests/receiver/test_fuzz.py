"""Fuzzing: nothing a client sends produces a 5xx other than 503, or a crash.

- schemathesis generates requests from the receiver's own OpenAPI document and sends them to
  a real uvicorn server;
- hypothesis generates headers and bodies (JSON-ish, binary, signed correctly or not) and
  sends them in-process.

The default run is kept small (about 1,500 requests); ``bench/fuzz.py`` runs the same
strategies at volume (20,000+ requests) against a real server.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hookline.receiver.openapi import openapi_schema

from .conftest import SECRET, SOURCES, AppHarness, Server, signed

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

bodies = st.one_of(
    envelopes.map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
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
        "x-forwarded-for",
        "authorization",
        "x-anything",
    ]
)
header_values = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain", ""]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=255), max_size=80),
)


@settings(max_examples=700, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    source=st.sampled_from([*sorted(SOURCES), "nobody", "x" * 300]),
    body=bodies,
    headers=st.dictionaries(header_names, header_values, max_size=6),
    sign=st.booleans(),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]),
)
async def test_hypothesis_headers_and_bodies(
    harness: AppHarness,
    source: str,
    body: bytes,
    headers: dict[str, str],
    sign: bool,
    method: str,
) -> None:
    headers = {k: v for k, v in headers.items() if k != "content-length"}
    if sign:
        headers = {**headers, **signed(body, SECRET)}
    encoded = [(k.encode(), v.encode("latin-1")) for k, v in headers.items()]
    try:
        r = await harness.client.request(
            method, f"/webhooks/{source}", content=body, headers=encoded
        )
    except httpx.TransportError as exc:  # pragma: no cover - would be a crash
        pytest.fail(f"transport error: {exc}")
    assert r.status_code in EXPECTED, (r.status_code, r.text)
    if sign and source in ("solveforce", "small", "limited") and method == "POST":
        assert r.status_code != 401  # a correctly signed body is never a signature failure
