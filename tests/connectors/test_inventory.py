"""Inventory actions with httpx against the fake inventory API (docs/connectors.md#inventory)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hookline.connectors import inventory
from hookline.connectors.errors import PermanentError, TransientError
from vendor_fakes import FakeVendors

Client = Callable[..., Any]
LOCATION = {"address": "123 Main St, Chicago, IL 60601", "site_id": "site_001"}


def test_upsert_service_creates_then_replaces(client: Client, fakes: FakeVendors) -> None:
    c = client("inventory")
    first = inventory.upsert_service(
        c,
        service_id="svc_data_002",
        service_type="fiber_internet",
        account_id="acc_123456",
        location=LOCATION,
        attributes={"bandwidth": "1000mbps"},
        idempotency_key="solveforce:evt_1234567891:provision:inventory",
    )
    second = inventory.upsert_service(
        c, service_id="svc_data_002", service_type="fiber_internet", status="degraded"
    )

    assert first == {"service_id": "svc_data_002", "created": True, "status": "active"}
    assert second["created"] is False
    [service] = fakes.inventory.services.values()
    assert service["status"] == "degraded"
    call = fakes.inventory.calls[0]
    assert (call.method, call.path) == ("PUT", "/v1/services/svc_data_002")
    assert call.headers["Authorization"] == "Bearer inv-hookline-fake-token"
    assert call.headers["Idempotency-Key"] == "solveforce:evt_1234567891:provision:inventory"
    assert call.json["location"] == LOCATION


def test_remove_service_is_idempotent(client: Client, fakes: FakeVendors) -> None:
    c = client("inventory")
    inventory.upsert_service(c, service_id="svc/1", service_type="voice")
    assert inventory.remove_service(c, service_id="svc/1") == {
        "service_id": "svc/1",
        "removed": True,
    }
    assert inventory.remove_service(c, service_id="svc/1")["removed"] is False
    assert fakes.inventory.calls[0].path == "/v1/services/svc%2F1"


def test_validation_error_carries_the_apis_message(client: Client) -> None:
    with pytest.raises(PermanentError, match="HTTP 422: validation_error: service_type"):
        inventory.upsert_service(client("inventory"), service_id="s", service_type="")


def test_bad_token_is_permanent_without_the_token(client: Client) -> None:
    c = client("inventory", INVENTORY_API_TOKEN="wrong-token")
    with pytest.raises(PermanentError, match="HTTP 401: unauthorized") as caught:
        inventory.remove_service(c, service_id="s")
    assert "wrong-token" not in str(caught.value)


def test_429_is_transient_with_retry_after(client: Client, fakes: FakeVendors) -> None:
    fakes.inventory.fail_next(1, status=429, retry_after=2)
    with pytest.raises(TransientError) as caught:
        inventory.upsert_service(client("inventory"), service_id="s", service_type="voice")
    assert caught.value.retry_after == 2.0


def test_500_then_success(client: Client, fakes: FakeVendors) -> None:
    c = client("inventory")
    fakes.inventory.fail_next(1, status=500)
    with pytest.raises(TransientError, match="HTTP 500: internal"):
        inventory.upsert_service(c, service_id="s", service_type="voice")
    assert inventory.upsert_service(c, service_id="s", service_type="voice")["created"] is True


@pytest.mark.parametrize("service_id", ["..", ".", "", " "])
@pytest.mark.parametrize("action", ["remove", "upsert"])
def test_an_id_that_would_address_the_collection_is_refused(
    client: Client, fakes: FakeVendors, service_id: str, action: str
) -> None:
    """remove_service(service_id="..") used to send DELETE /v1/services/.. = the collection."""
    c = client("inventory")
    with pytest.raises(PermanentError, match="not a valid id"):
        if action == "remove":
            inventory.remove_service(c, service_id=service_id)
        else:
            inventory.upsert_service(c, service_id=service_id, service_type="voice")
    assert fakes.inventory.calls == []  # nothing was sent
