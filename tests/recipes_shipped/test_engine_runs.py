"""The shipped recipes run by the real engine on the fake vendors, with the worker's memory
store: the cross-event stories (outage -> recovery, ticket -> resolution) land in the right
Slack threads. Channels are unset here, so the recipes' defaults apply. (Every seed sample
sent signed to `hookline up` is tests/docs/test_readme.py.)"""

from __future__ import annotations

import pytest

from tests.fakes.slack import channel_id
from tests.recipes_shipped.conftest import Shipped, sample

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ALERTS, ONCALL, BILLING = (channel_id(c) for c in ("#service-alerts", "#oncall", "#billing"))


def titles(shipped: Shipped) -> list[tuple[str, str]]:
    return [(m["channel"], m["text"]) for m in shipped.fakes.slack.messages]


async def test_outage_recovery_payment_failure_crm_and_oncall(shipped: Shipped) -> None:
    f = shipped.fakes
    degraded = await shipped.run(sample("service.status.changed"))
    outage = await shipped.run(
        sample("service.status.changed", data={"current_status": "outage", "impact": "high"})
    )
    assert (degraded.status, outage.status) == ("done", "done")
    [incident] = f.servicenow.incidents
    assert incident["short_description"] == "SOLVEFORCE Service Outage: Primary Voice Service"
    assert (incident["priority"], incident["category"], incident["subcategory"]) == (
        "1",
        "Network",
        "Telecommunications",
    )
    assert incident["assignment_group"] == "Network Operations"

    healthy = await shipped.run(
        sample(
            "service.status.changed",
            data={"previous_status": "outage", "current_status": "healthy"},
        )
    )
    assert healthy.status == "done", healthy.last_error
    assert f.servicenow.incidents[0]["state"] == "6"  # resolved
    alerts = [m for m in f.slack.messages if m.get("attachments") and m["channel"] == ALERTS]
    assert len(alerts) == 2  # degraded, then outage
    outage_alert = alerts[1]
    recovery = next(m for m in f.slack.messages if "healthy again" in m["text"])
    assert (recovery["channel"], recovery["thread_ts"]) == (ALERTS, outage_alert["ts"])
    assert recovery["reply_broadcast"] is True
    assert "Incident INC" in recovery["text"] and "resolved" in recovery["text"]
    assert outage_alert.get("edited") and "RESOLVED" in outage_alert["text"]  # turned green
    assert shipped.runtime.memory.get("service-alert:svc_voice_001") == {
        "open": False,
        "status": "healthy",
        "recovered_at": "2024-01-15T10:30:00Z",
    }

    created = await shipped.run(sample("support.ticket.created"))
    resolved = await shipped.run(sample("support.ticket.resolved"))
    assert (created.status, resolved.status) == ("done", "done")
    ticket = next(m for m in f.slack.messages if "Support ticket tkt_456789" in m["text"])
    assert ticket["channel"] == ALERTS  # high priority
    reply = next(m for m in f.slack.messages if "Ticket tkt_456789 resolved" in m["text"])
    assert (reply["channel"], reply["thread_ts"]) == (ticket["channel"], ticket["ts"])
    assert "in 4h 30m" in reply["text"] and "thread not found" not in reply["text"]

    account = f.salesforce.add_record("Account", {"Name": "Acme Corporation"})
    f.servicenow.fail_next(10, status=400, path="/api/now/table/incident")
    ids = [
        await shipped.put(
            sample("service.provisioned", account={"id": "acc_123456", "salesforce_id": account})
        ),
        await shipped.put(sample("billing.payment.processed", data={"status": "failed"})),
        await shipped.put(sample("security.alert.created")),
    ]
    provisioned, failed, broken = [await shipped.wait(i) for i in ids]
    assert provisioned.status == "done", provisioned.last_error
    record = f.salesforce.records["Account"][account]
    assert record["Latest_Service_Addition__c"] == "fiber_internet"
    assert record["Service_Status__c"] == "Active"
    assert record["Last_Service_Date__c"] == "2024-01-15T14:45:00Z"

    assert failed.status == "done"
    assert any(c == BILLING and "Payment pay_987654321 failed" in t for c, t in titles(shipped))

    assert broken.status == "failed"
    page = next(m for m in f.slack.messages if "failed at step incident" in m["text"])
    assert page["channel"] == ONCALL
    assert f"/runs/flow-run/{broken.flow_runs['security-alert']}" in page["text"]
