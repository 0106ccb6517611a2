"""ServiceNow actions with the real pysnc ServiceNowClient against the fake Table API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from hookline.connectors import servicenow
from hookline.connectors.errors import PermanentError, TransientError
from vendor_fakes import FakeVendors

Client = Callable[..., Any]
KEY = "solveforce:evt_1234567890:outage:incident"


def test_create_incident_sends_fields_and_returns_number_link(
    client: Client, fakes: FakeVendors
) -> None:
    out = servicenow.create_incident(
        client("servicenow"),
        short_description="SOLVEFORCE Service Outage: Primary Voice Service",
        description="Service outage detected",
        impact=1,
        urgency=1,
        category="Network",
        subcategory="Telecommunications",
        assignment_group="Network Operations",
        caller_id="solveforce_integration",
        fields={"u_affected_users": 150},
        idempotency_key=KEY,
    )

    [incident] = fakes.servicenow.incidents
    assert out == {
        "number": incident["number"],
        "sys_id": incident["sys_id"],
        "link": f"{fakes.servicenow.url}/incident.do?sys_id={incident['sys_id']}",
        "created": True,
    }
    assert incident["correlation_id"] == KEY
    assert incident["impact"] == incident["urgency"] == "1"
    assert incident["assignment_group"] == "Network Operations"
    assert incident["u_affected_users"] == "150"


def test_create_incident_twice_with_same_correlation_id_opens_one(
    client: Client, fakes: FakeVendors
) -> None:
    c = client("servicenow")
    first = servicenow.create_incident(c, short_description="outage", idempotency_key=KEY)
    again = servicenow.create_incident(c, short_description="outage", idempotency_key=KEY)

    assert len(fakes.servicenow.incidents) == 1
    assert again == {**first, "created": False}
    lookup = fakes.servicenow.calls_to("/table/incident")[-1]
    assert lookup.method == "GET"
    assert lookup.query["sysparm_query"].startswith(f"correlation_id={KEY}")


def test_retry_after_a_lost_response_finds_the_incident(client: Client, fakes: FakeVendors) -> None:
    c = client("servicenow")
    # ServiceNow commits the insert but the answer arrives after the client gave up.
    fakes.servicenow.fail_next(1, status=None, delay=1.6, method="POST")
    with pytest.raises(TransientError, match="timed out"):
        servicenow.create_incident(c, short_description="outage", correlation_id="corr-9")

    retried = servicenow.create_incident(c, short_description="outage", correlation_id="corr-9")

    assert retried["created"] is False
    assert len(fakes.servicenow.incidents) == 1


def test_per_service_correlation_opens_a_new_incident_after_resolution(
    client: Client, fakes: FakeVendors
) -> None:
    c = client("servicenow")
    first = servicenow.create_incident(c, short_description="a", correlation_id="svc_voice_001")
    servicenow.resolve_incident(c, correlation_id="svc_voice_001", close_notes="fixed")

    second = servicenow.create_incident(c, short_description="b", correlation_id="svc_voice_001")
    third = servicenow.create_incident(c, short_description="c", correlation_id="svc_voice_001")
    reused = servicenow.create_incident(
        c, short_description="d", correlation_id="svc_voice_001", only_open=False
    )

    assert second["created"] is True and second["number"] != first["number"]
    assert third == {**second, "created": False}
    assert reused == {**second, "created": False}
    resolved = servicenow.resolve_incident(c, correlation_id="svc_voice_001", close_notes="ok")
    assert (resolved["number"], resolved["resolved"]) == (second["number"], True)
    assert len(fakes.servicenow.incidents) == 2


def test_explicit_correlation_id_wins_and_long_keys_are_digested(
    client: Client, fakes: FakeVendors
) -> None:
    c = client("servicenow")
    servicenow.create_incident(
        c, short_description="a", correlation_id="ext-1", idempotency_key=KEY
    )
    long_key = "x" * 150
    servicenow.create_incident(c, short_description="b", idempotency_key=long_key)
    servicenow.create_incident(c, short_description="b", idempotency_key=long_key)

    ids = sorted(i["correlation_id"] for i in fakes.servicenow.incidents)
    assert ids[0] == "ext-1"
    assert ids[1].startswith("hookline-") and len(ids[1]) <= 100
    assert len(ids) == 2


def test_correlation_id_with_caret_cannot_widen_the_query(
    client: Client, fakes: FakeVendors
) -> None:
    c = client("servicenow")
    servicenow.create_incident(c, short_description="a", correlation_id="one")
    sneaky = "x^ORcorrelation_id=one"
    out = servicenow.create_incident(c, short_description="b", correlation_id=sneaky)
    again = servicenow.create_incident(c, short_description="b", correlation_id=sneaky)

    assert (out["created"], again["created"]) == (True, False)
    assert len(fakes.servicenow.incidents) == 2
    assert all(
        "ORcorrelation" not in c.query.get("sysparm_query", "") for c in fakes.servicenow.calls
    )
    with pytest.raises(PermanentError, match="contains '\\^'"):
        servicenow.update_incident(c, number="INC1^ORactive=true", work_notes="x")


def test_update_incident_by_number_sets_fields_and_work_notes(
    client: Client, fakes: FakeVendors
) -> None:
    c = client("servicenow")
    created = servicenow.create_incident(c, short_description="outage")

    out = servicenow.update_incident(
        c,
        number=created["number"],
        fields={"urgency": "2", "u_customer": "Acme Corporation"},
        work_notes="ETA 11:00Z",
    )

    assert out["sys_id"] == created["sys_id"]
    [incident] = fakes.servicenow.incidents
    assert incident["urgency"] == "2"
    assert incident["u_customer"] == "Acme Corporation", "a field the record lacked is sent too"
    assert incident["work_notes_history"] == ["ETA 11:00Z"]


def test_update_missing_incident_is_permanent(client: Client) -> None:
    with pytest.raises(PermanentError, match="no incident with number='INC0099999'"):
        servicenow.update_incident(client("servicenow"), number="INC0099999", work_notes="x")


def test_update_needs_exactly_one_key(client: Client) -> None:
    with pytest.raises(PermanentError, match="exactly one of number, correlation_id or sys_id"):
        servicenow.update_incident(client("servicenow"), number="INC1", correlation_id="c")


def test_resolve_incident_by_correlation_id_then_again_is_a_no_op(
    client: Client, fakes: FakeVendors
) -> None:
    c = client("servicenow")
    created = servicenow.create_incident(c, short_description="outage", idempotency_key=KEY)

    out = servicenow.resolve_incident(c, correlation_id=KEY, close_notes="Replaced router")
    again = servicenow.resolve_incident(c, correlation_id=KEY, close_notes="Replaced router")

    assert out["resolved"] is True and out["number"] == created["number"]
    assert again["resolved"] is False
    [incident] = fakes.servicenow.incidents
    assert (incident["state"], incident["close_notes"]) == ("6", "Replaced router")
    assert incident["close_code"] == "Solution provided"


def test_resolve_missing_incident(client: Client) -> None:
    c = client("servicenow")
    with pytest.raises(PermanentError, match="missing_ok"):
        servicenow.resolve_incident(c, number="INC0000404")
    out = servicenow.resolve_incident(c, number="INC0000404", missing_ok=True)
    assert out == {"number": None, "sys_id": None, "link": None, "resolved": False}


def test_get_incident_says_whether_it_is_already_resolved(
    client: Client, fakes: FakeVendors
) -> None:
    c = client("servicenow")
    created = servicenow.create_incident(c, short_description="outage", idempotency_key=KEY)

    open_ = servicenow.get_incident(c, number=created["number"])
    servicenow.update_incident(c, number=created["number"], fields={"state": 2})
    in_progress = servicenow.get_incident(c, correlation_id=KEY)
    servicenow.resolve_incident(c, number=created["number"])
    resolved = servicenow.get_incident(c, number=created["number"])

    assert (open_["found"], open_["state"], open_["resolved"]) == (True, "1", False)
    assert open_["link"] == created["link"]
    assert (in_progress["state"], in_progress["resolved"]) == ("2", False)
    assert (resolved["state"], resolved["resolved"]) == ("6", True)
    assert servicenow.get_incident(c, number="INC0000404") == {
        "found": False,
        "number": None,
        "sys_id": None,
        "link": None,
        "state": None,
        "resolved": False,
    }


def test_create_record_in_another_table(client: Client, fakes: FakeVendors) -> None:
    out = servicenow.create_record(
        client("servicenow"),
        table="change_request",
        fields={"short_description": "Network Equipment Upgrade", "type": "normal"},
    )
    [change] = fakes.servicenow.tables["change_request"].values()
    assert out["number"] == change["number"] and out["number"].startswith("CHG")
    assert out["link"].endswith(f"/change_request.do?sys_id={change['sys_id']}")


def test_create_record_in_unknown_table_carries_servicenow_message(client: Client) -> None:
    with pytest.raises(PermanentError, match="HTTP 400: Invalid table nope"):
        servicenow.create_record(client("servicenow"), table="nope", fields={"a": "b"})


def test_validation_error_carries_message_and_detail(client: Client) -> None:
    with pytest.raises(PermanentError) as caught:
        servicenow.create_incident(client("servicenow"), short_description="")
    assert "HTTP 403: Operation Failed (Data Policy Exception:" in str(caught.value)
    assert "Short description is mandatory" in str(caught.value)


def test_out_of_range_priority_fails_before_calling(client: Client, fakes: FakeVendors) -> None:
    with pytest.raises(PermanentError, match="priority must be 1..5, not 9"):
        servicenow.create_incident(client("servicenow"), short_description="x", priority=9)
    assert fakes.servicenow.calls == []


def test_bad_credentials_are_permanent_without_the_password(client: Client) -> None:
    c = client("servicenow", SERVICENOW_PASSWORD="wrong-password")
    with pytest.raises(PermanentError) as caught:
        servicenow.create_incident(c, short_description="x", idempotency_key=KEY)
    message = str(caught.value)
    assert "HTTP 401: User Not Authenticated" in message
    assert "docs/connectors.md#servicenow" in message
    assert "wrong-password" not in message


def test_429_is_transient_with_retry_after_and_no_sdk_retry(
    client: Client, fakes: FakeVendors
) -> None:
    fakes.servicenow.fail_next(1, status=429, retry_after=30)
    with pytest.raises(TransientError) as caught:
        servicenow.create_incident(client("servicenow"), short_description="x", correlation_id="c")
    assert caught.value.retry_after == 30.0
    assert "Rate limit exceeded" in str(caught.value)
    assert len(fakes.servicenow.calls) == 1, "pysnc's urllib3 retries must be off"


def test_500_on_insert_then_retry_creates_one(client: Client, fakes: FakeVendors) -> None:
    c = client("servicenow")
    fakes.servicenow.fail_next(1, status=500, path="/table/incident")
    with pytest.raises(TransientError, match="HTTP 500: Internal server error") as caught:
        servicenow.create_incident(c, short_description="x", correlation_id="c-500")
    assert caught.value.status == 500
    out = servicenow.create_incident(c, short_description="x", correlation_id="c-500")
    assert out["created"] is True
    assert len(fakes.servicenow.incidents) == 1


def test_connection_refused_is_transient(client: Client) -> None:
    c = client("servicenow", SERVICENOW_INSTANCE="https://127.0.0.1:9")
    with pytest.raises(TransientError, match="ConnectionRefusedError"):
        servicenow.create_incident(c, short_description="x", correlation_id="c")
