"""http.request with the real httpx client against the fake echo server over HTTPS."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hookline.connectors import http
from hookline.connectors.errors import PermanentError, TransientError
from vendor_fakes import FakeVendors

Client = Callable[..., Any]


def test_post_json_returns_status_headers_and_parsed_body(
    client: Client, fakes: FakeVendors
) -> None:
    out = http.request(
        client("http"),
        url=f"{fakes.echo.url}/accounting/invoices",
        json={"invoice_id": "inv_202401001", "amount": 2500.0},
        headers={"X-Api-Key": "k"},
        params={"source": "hookline"},
    )

    assert out["status"] == 200
    assert out["headers"]["content-type"] == "application/json"
    assert out["body"]["json"] == {"invoice_id": "inv_202401001", "amount": 2500.0}
    assert out["body"]["query"] == {"source": "hookline"}
    assert out["body"]["headers"]["X-Api-Key"] == "k"


def test_form_body_and_idempotency_header(client: Client, fakes: FakeVendors) -> None:
    out = http.request(
        client("http"),
        url=fakes.echo.url + "/pay",
        method="PUT",
        form={"amount": "2500.00"},
        idempotency_header="Idempotency-Key",
        idempotency_key="solveforce:evt_1:billing:post",
    )
    assert out["body"]["form"] == {"amount": "2500.00"}
    assert out["body"]["method"] == "PUT"
    assert out["body"]["headers"]["Idempotency-Key"] == "solveforce:evt_1:billing:post"


def test_expected_status_accepts_a_404(client: Client, fakes: FakeVendors) -> None:
    out = http.request(
        client("http"), url=fakes.echo.url + "/status/404", method="GET", expected_status=[404]
    )
    assert (out["status"], out["body"]) == (404, {"message": "status 404"})


def test_unexpected_2xx_is_permanent_when_statuses_are_listed(
    client: Client, fakes: FakeVendors
) -> None:
    with pytest.raises(PermanentError, match="HTTP 200"):
        http.request(client("http"), url=fakes.echo.url + "/x", expected_status=[201])


def test_validation_error_is_permanent_with_the_servers_message(
    client: Client, fakes: FakeVendors
) -> None:
    with pytest.raises(PermanentError, match="HTTP 422: status 422") as caught:
        http.request(client("http"), url=fakes.echo.url + "/status/422?token=s3cret")
    assert caught.value.status == 422
    assert "s3cret" not in str(caught.value), "query strings may hold secrets"


def test_401_is_permanent(client: Client, fakes: FakeVendors) -> None:
    with pytest.raises(PermanentError, match="HTTP 401"):
        http.request(client("http"), url=fakes.echo.url + "/status/401")


def test_429_is_transient_with_retry_after(client: Client, fakes: FakeVendors) -> None:
    fakes.echo.fail_next(1, status=429, retry_after=12)
    with pytest.raises(TransientError) as caught:
        http.request(client("http"), url=fakes.echo.url + "/a")
    assert caught.value.retry_after == 12.0


def test_http_date_retry_after(client: Client, fakes: FakeVendors) -> None:
    fakes.echo.fail_next(1, status=503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    with pytest.raises(TransientError) as caught:
        http.request(client("http"), url=fakes.echo.url + "/a")
    assert caught.value.retry_after == 0.0, "a date in the past means: retry now"


def test_500_then_success(client: Client, fakes: FakeVendors) -> None:
    c = client("http")
    fakes.echo.fail_next(1, status=500)
    with pytest.raises(TransientError, match="HTTP 500: injected HTTP 500"):
        http.request(c, url=fakes.echo.url + "/a")
    assert http.request(c, url=fakes.echo.url + "/a")["status"] == 200
    assert len(fakes.echo.calls) == 2


def test_timeout_is_transient_and_per_call_timeout_wins(client: Client, fakes: FakeVendors) -> None:
    fakes.echo.fail_next(1, status=None, delay=0.6)
    with pytest.raises(TransientError, match="timed out"):
        http.request(client("http"), url=fakes.echo.url + "/slow", timeout=0.2)


def test_connection_refused_is_transient(client: Client) -> None:
    with pytest.raises(TransientError, match="failed"):
        http.request(client("http"), url="https://127.0.0.1:9/x")


def test_json_and_form_together_are_rejected(client: Client, fakes: FakeVendors) -> None:
    with pytest.raises(PermanentError, match="json or form, not both"):
        http.request(client("http"), url=fakes.echo.url, json={}, form={"a": "b"})
    assert fakes.echo.calls == []


def test_empty_body_is_none(client: Client, fakes: FakeVendors) -> None:
    out = http.request(client("http"), url=fakes.echo.url + "/status/204", method="DELETE")
    assert (out["status"], out["body"]) == (204, None)


# --- which hosts http.request may call (issue 11, item 6) -------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://169.254.170.2/v2/credentials",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.google.internal./computeMetadata/v1/",
        "http://100.100.100.200/latest/meta-data/",
    ],
)
def test_metadata_and_link_local_hosts_are_refused_by_default(client: Client, url: str) -> None:
    with pytest.raises(PermanentError, match="is not allowed: link-local and cloud metadata"):
        http.request(client("http"), url=url, method="GET")


def test_a_name_resolving_to_a_metadata_address_is_refused() -> None:
    policy = http.HostPolicy(resolver=lambda host: ["169.254.169.254"])
    with pytest.raises(PermanentError, match="'callback.evil.test' is not allowed"):
        policy.check("callback.evil.test")
    http.HostPolicy(resolver=lambda host: ["203.0.113.7"]).check("callback.example.com")


def test_allow_and_deny_lists_from_hookline_yaml(tmp_path: Any, fakes: FakeVendors) -> None:
    from hookline.config import load_config
    from hookline.connectors import build_client

    path = tmp_path / "hookline.yaml"
    path.write_text(
        "connections:\n  http:\n    allow_hosts: ['127.0.0.1', '*.example.com']\n"
        "    deny_hosts: ['blocked.example.com']\n",
        encoding="utf-8",
    )
    with build_client("http", load_config(path), environ=fakes.env) as c:
        assert http.request(c, url=fakes.echo.url + "/ok", method="GET")["status"] == 200
        with pytest.raises(PermanentError, match="'192.0.2.1' is not allowed: it is not in allow"):
            http.request(c, url="http://192.0.2.1/x", method="GET")
        with pytest.raises(PermanentError, match="it is in deny_hosts"):
            http.request(c, url="https://blocked.example.com/x")
        with pytest.raises(PermanentError, match="'169.254.169.254' is not allowed"):
            http.request(c, url="http://169.254.169.254/")
    # an explicit allow is the way to reach a link-local service on purpose
    http.HostPolicy(allow=["169.254.10.0/24"]).check("169.254.10.5")
    assert fakes.echo.calls[0].path == "/ok" and len(fakes.echo.calls) == 1
