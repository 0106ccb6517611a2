"""The shipped recipes run by the real engine on the fake vendors, with the worker's memory
store (in the inbox database): outage -> recovery lands in the outage alert's
thread and resolves the incident; a provisioned service with an account reference updates
Salesforce. Channels are unset here, so the recipes' defaults apply. (Every seed sample sent
signed to `hookline up`, the ticket thread included, is tests/docs/test_readme.py.)"""

from __future__ import annotations

import pytest

from tests.recipes_shipped.conftest import Shipped, sample
from vendor_fakes import FakeVendors
from vendor_fakes.slack import channel_id

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ALERTS = channel_id("#service-alerts")


async def test_outage_recovery_and_crm(shipped: Shipped, fakes: FakeVendors) -> None:
    f = fakes
    account = f.salesforce.add_record("Account", {"Name": "Acme Corporation"})
    # The outage, then (as in real life, minutes later) the recovery; a provisioned service
    # meanwhile. (Within the outage recipe's coalesce quiet period they would be one run:
    # tests/engine/test_storm.py.)
    outage = await shipped.put(
        sample(
            "service.status.changed",
            timestamp="2024-01-15T10:45:00Z",
            data={"current_status": "outage", "impact": "high"},
        )
    )
    provisioned = await shipped.put(
        sample("service.provisioned", account={"id": "acc_123456", "salesforce_id": account})
    )
    first = await shipped.wait_final(outage)
    assert first.status == "done", first.last_error
    recovered = await shipped.put(
        sample(
            "service.status.changed",
            timestamp="2024-01-15T11:30:00Z",
            data={"previous_status": "outage", "current_status": "healthy"},
        )
    )
    entries = [first, await shipped.wait_final(recovered), await shipped.wait_final(provisioned)]
    assert [e.status for e in entries] == ["done"] * 3, [e.last_error for e in entries]

    # outage -> healthy: one incident, opened then resolved; the recovery is a
    # broadcast reply in the outage alert's thread, and that alert turned green.
    [incident] = f.servicenow.incidents
    assert incident["short_description"] == "SOLVEFORCE Service Outage: Primary Voice Service"
    assert (incident["priority"], incident["category"], incident["subcategory"]) == (
        "1",
        "Network",
        "Telecommunications",
    )
    assert incident["assignment_group"] == "Network Operations"
    assert incident["state"] == "6"  # resolved
    alerts = [m for m in f.slack.messages if m.get("attachments") and m["channel"] == ALERTS]
    [outage_alert] = alerts
    recovery = next(m for m in f.slack.messages if "healthy again" in m["text"])
    assert (recovery["channel"], recovery["thread_ts"]) == (ALERTS, outage_alert["ts"])
    assert recovery["reply_broadcast"] is True
    assert f"Incident {incident['number']} resolved." in recovery["text"]
    assert outage_alert.get("edited") and "RESOLVED" in outage_alert["text"]
    assert await shipped.memory("service-alert:svc_voice_001") == {
        "open": False,
        "status": "healthy",
        "recovered_at": "2024-01-15T11:30:00Z",
    }

    # A provisioned service with a Salesforce account reference updates that account.
    record = f.salesforce.records["Account"][account]
    assert record["Latest_Service_Addition__c"] == "fiber_internet"
    assert record["Service_Status__c"] == "Active"
    assert record["Last_Service_Date__c"] == "2024-01-15T14:45:00Z"


async def test_a_usage_storm_is_one_alert(shipped: Shipped, fakes: FakeVendors) -> None:
    """A service hovering around its threshold: 60 threshold events in a burst give one
    billing alert for the latest, saying how many it covers and the peak."""
    ids = []
    for n in range(60):
        ids.append(
            await shipped.put(
                sample(
                    "billing.usage.threshold_exceeded",
                    timestamp=f"2024-01-15T18:{n // 60:02d}:{n % 60:02d}Z",
                    data={"current_usage": 81 + (n * 7) % 19},
                )
            )
        )
    entries = [await shipped.wait_final(i, timeout=90) for i in ids]
    assert [e.status for e in entries] == ["superseded"] * 59 + ["done"]
    [alert] = [m for m in fakes.slack.messages if m["channel"] == channel_id("#billing")]
    shown = str(alert)
    assert f"is at {81 + (59 * 7) % 19}% against a threshold of 80%" in shown  # the latest
    assert "60 threshold events since 2024-01-15T18:00:00Z; peak 99." in shown
