"""Status and exception mapping shared by every connector."""

from __future__ import annotations

import ssl
import urllib.error

import httpx
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from hookline.connectors._http import (
    error_for_exception,
    error_for_status,
    parse_retry_after,
    safe_url,
)
from hookline.connectors.errors import PermanentError, TransientError

NOW = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        (" 1.5 ", 1.5),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


@given(st.text())
def test_parse_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after(value, now=NOW)
    assert result is None or result >= 0


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, PermanentError), (401, PermanentError), (404, PermanentError), (409, PermanentError),
     (422, PermanentError), (429, TransientError), (500, TransientError), (502, TransientError),
     (503, TransientError)],
)  # fmt: skip
def test_status_classes(status: int, kind: type[Exception]) -> None:
    error = error_for_status("x", status, {"retry-after": "2"}, "nope", what="GET /a")
    assert type(error) is kind
    assert str(error).startswith(f"x: GET /a failed: HTTP {status}: nope")
    if isinstance(error, TransientError):
        assert error.retry_after == 2.0


@pytest.mark.parametrize(
    "exc",
    [
        TimeoutError("timed out"),
        ConnectionRefusedError(111, "refused"),
        ConnectionResetError(104, "reset"),
        urllib.error.URLError(ConnectionRefusedError(111, "refused")),
        requests.ConnectTimeout(),
        requests.ConnectionError(),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("peer closed"),
    ],
)
def test_network_failures_are_transient(exc: Exception) -> None:
    assert isinstance(error_for_exception("x", exc, what="call"), TransientError)


def test_untrusted_certificate_is_permanent_even_wrapped() -> None:
    wrapped = urllib.error.URLError(ssl.SSLCertVerificationError(1, "certificate verify failed"))
    assert isinstance(error_for_exception("x", wrapped, what="call"), PermanentError)


def test_other_exceptions_are_not_mapped() -> None:
    assert error_for_exception("x", ValueError("bug"), what="call") is None


def test_safe_url_drops_credentials_and_query() -> None:
    assert safe_url("https://u:pw@h.example:8443/p/a?token=s#f") == "https://h.example:8443/p/a"
