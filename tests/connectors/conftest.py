"""Fixtures: the fake vendors over HTTPS (trustme CA), and clients built the way the engine does.

Clients are built with `build_client(..., environ=env)` from the fakes' env vars, so no test
touches ``os.environ``; the autouse fixture only removes variables that would leak in from the
developer's shell (CA bundles, proxies).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hookline.connectors import build_client
from vendor_fakes import FakeVendors

_LEAKY = (
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _LEAKY:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def _vendors() -> Iterator[FakeVendors]:
    with FakeVendors(tls=True) as fakes:
        yield fakes


@pytest.fixture
def fakes(_vendors: FakeVendors) -> FakeVendors:
    """The session's fake vendors, with calls, failures and data forgotten."""
    _vendors.reset()
    return _vendors


@pytest.fixture
def env(fakes: FakeVendors) -> dict[str, str]:
    """Environment pointing every connector at the fakes, with 1 s timeouts (slack_sdk takes
    whole seconds; loopback answers in milliseconds, so 1 s never fires by accident)."""
    names = ("SLACK", "SERVICENOW", "SALESFORCE", "INVENTORY", "HTTP")
    return {**fakes.env, **{f"{name}_TIMEOUT": "1" for name in names}}


@pytest.fixture
def client(env: dict[str, str]) -> Callable[..., Any]:
    """``client("slack")`` -> a client built by build_client from ``env`` (+ overrides)."""

    def make(connector: str, **overrides: str) -> Any:
        return build_client(connector, environ={**env, **overrides})

    return make
