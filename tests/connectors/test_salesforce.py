"""Salesforce actions with the real simple-salesforce client against the fake REST API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hookline.connectors import salesforce
from hookline.connectors.errors import PermanentError, TransientError
from vendor_fakes import FakeVendors

Client = Callable[..., Any]


@pytest.fixture
def account(fakes: FakeVendors) -> str:
    return fakes.salesforce.add_record(
        "Account", {"Name": "Acme Corporation", "SolveForce_Account_Id__c": "acc_123456"}
    )


def test_update_account_sets_the_seeds_service_fields(
    client: Client, fakes: FakeVendors, account: str
) -> None:
    out = salesforce.update_account(
        client("salesforce"),
        account_id=account,
        service_type="fiber_internet",
        service_date="2024-01-15T14:45:00Z",
    )

    assert out == {"object": "Account", "id": account}
    record = fakes.salesforce.records["Account"][account]
    assert record["Latest_Service_Addition__c"] == "fiber_internet"
    assert record["Last_Service_Date__c"] == "2024-01-15T14:45:00Z"
    assert record["Service_Status__c"] == "Active"
    call = fakes.salesforce.calls[-1]
    assert (call.method, call.path) == ("PATCH", f"/services/data/v59.0/sobjects/Account/{account}")
    assert call.headers["Authorization"] == "Bearer 00DHOOKLINE!fake.salesforce.session"


def test_update_record_with_unknown_field_carries_salesforce_error(
    client: Client, account: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        salesforce.update_record(
            client("salesforce"), object="Account", id=account, fields={"Nope__c": 1}
        )
    assert "HTTP 400: INVALID_FIELD: No such column 'Nope__c'" in str(caught.value)


def test_update_missing_record_is_permanent(client: Client) -> None:
    with pytest.raises(PermanentError, match="HTTP 404: NOT_FOUND"):
        salesforce.update_record(
            client("salesforce"), object="Account", id="001000000000000AAA", fields={"Name": "x"}
        )


def test_object_name_must_be_an_api_name(client: Client, fakes: FakeVendors) -> None:
    with pytest.raises(PermanentError, match="not an API name"):
        salesforce.update_record(client("salesforce"), object="../x", id="1", fields={})
    assert fakes.salesforce.calls == []


def test_upsert_twice_makes_one_record(client: Client, fakes: FakeVendors) -> None:
    c = client("salesforce")
    first = salesforce.upsert(
        c,
        object="Account",
        external_id_field="SolveForce_Account_Id__c",
        external_id="acc_777",
        fields={"Name": "Globex", "SolveForce_Account_Id__c": "acc_777"},
    )
    second = salesforce.upsert(
        c,
        object="Account",
        external_id_field="SolveForce_Account_Id__c",
        external_id="acc_777",
        fields={"Name": "Globex Corporation"},
    )

    assert first["created"] is True and second["created"] is False
    assert first["id"] == second["id"]
    [record] = fakes.salesforce.records["Account"].values()
    assert record["Name"] == "Globex Corporation"
    assert fakes.salesforce.calls[0].path.endswith("/Account/SolveForce_Account_Id__c/acc_777")
    assert "SolveForce_Account_Id__c" not in fakes.salesforce.calls[0].json


def test_expired_session_is_permanent_without_the_session_id(client: Client) -> None:
    c = client("salesforce", SALESFORCE_SESSION_ID="00Dexpired!secret")
    with pytest.raises(PermanentError) as caught:
        salesforce.update_record(c, object="Account", id="001000000000000AAA", fields={})
    assert "HTTP 401: INVALID_SESSION_ID: Session expired or invalid" in str(caught.value)
    assert "00Dexpired!secret" not in str(caught.value)


def test_429_is_transient_with_retry_after(
    client: Client, fakes: FakeVendors, account: str
) -> None:
    fakes.salesforce.fail_next(1, status=429, retry_after=5)
    with pytest.raises(TransientError) as caught:
        salesforce.update_account(
            client("salesforce"), account_id=account, service_type="x", service_date="2024-01-01"
        )
    assert caught.value.retry_after == 5.0
    assert len(fakes.salesforce.calls) == 1


def test_500_then_success(client: Client, fakes: FakeVendors, account: str) -> None:
    c = client("salesforce")
    fakes.salesforce.fail_next(1, status=500)
    with pytest.raises(TransientError, match="SERVER_ERROR"):
        salesforce.update_account(
            c, account_id=account, service_type="x", service_date="2024-01-01"
        )
    salesforce.update_account(c, account_id=account, service_type="x", service_date="2024-01-01")
    assert fakes.salesforce.records["Account"][account]["Latest_Service_Addition__c"] == "x"


@pytest.fixture
def login_env(env: dict[str, str], fakes: FakeVendors) -> dict[str, str]:
    from vendor_fakes import salesforce as fake

    without_session = {
        k: v
        for k, v in env.items()
        if k not in {"SALESFORCE_INSTANCE_URL", "SALESFORCE_SESSION_ID"}
    }
    return {
        **without_session,
        "SALESFORCE_USERNAME": fake.USERNAME,
        "SALESFORCE_PASSWORD": fake.PASSWORD,
        "SALESFORCE_SECURITY_TOKEN": fake.SECURITY_TOKEN,
        "SALESFORCE_DOMAIN": fakes.salesforce.login_domain(),
    }


def test_password_login_then_update(
    login_env: dict[str, str], fakes: FakeVendors, account: str
) -> None:
    from hookline.connectors import build_client

    c = build_client("salesforce", environ=login_env)
    salesforce.update_account(
        c, account_id=account, service_type="voice", service_date="2024-01-02"
    )
    assert fakes.salesforce.records["Account"][account]["Latest_Service_Addition__c"] == "voice"


def test_wrong_password_is_permanent_not_a_retried_500(login_env: dict[str, str]) -> None:
    from hookline.connectors import build_client

    with pytest.raises(PermanentError) as caught:
        build_client("salesforce", environ={**login_env, "SALESFORCE_PASSWORD": "nope-pw"})
    assert not isinstance(caught.value, TransientError)
    assert "failed: INVALID_LOGIN: Invalid username, password" in str(caught.value)
    assert "nope-pw" not in str(caught.value)


def test_login_503_is_transient(login_env: dict[str, str], fakes: FakeVendors) -> None:
    from hookline.connectors import build_client

    fakes.salesforce.fail_next(1, status=503, path="/Soap/")
    with pytest.raises(TransientError, match="login failed: HTTP 503"):
        build_client("salesforce", environ=login_env)


def test_object_named_like_a_client_method_is_still_an_sobject(client: Client) -> None:
    with pytest.raises(PermanentError, match="HTTP 404: NOT_FOUND"):
        salesforce.update_record(
            client("salesforce"), object="query", id="001000000000000AAA", fields={"a": 1}
        )
