"""Each seed sample, run by the real engine with the shipped recipes, makes the documented calls
on the fake vendors; and the cross-event stories (outage -> recovery, ticket -> resolution)
land in the right Slack threads. Channels are unset here, so the recipes' defaults apply."""

from __future__ import annotations

from typing import Any

import pytest

from hookline import samples
from tests.fakes.slack import channel_id
from tests.recipes_shipped.conftest import Shipped, sample

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ALERTS, ONCALL, OPS, BILLING = (
    channel_id(c) for c in ("#service-alerts", "#oncall", "#service-ops", "#billing")
)


def titles(shipped: Shipped) -> list[tuple[str, str]]:
    return [(m["channel"], m["text"]) for m in shipped.fakes.slack.messages]


async def test_every_seed_sample_makes_the_documented_calls(shipped: Shipped) -> None:
    # All at once: the ticket's two events are ordered by order_by (ticket id, event time).
    ids = {name: await shipped.put(sample(name)) for name in samples.names()}
    entries: dict[str, Any] = {name: await shipped.wait(i) for name, i in ids.items()}
    assert {n: e.status for n, e in entries.items()} == {n: "done" for n in samples.names()}
    assert entries["webhook.test"].flow_runs == {}
    f = shipped.fakes

    messages = titles(shipped)
    assert (BILLING, "WARNING: Usage threshold exceeded: bandwidth usage on svc_data_001") in (
        messages
    )
    assert (ALERTS, "MAJOR: SOLVEFORCE Primary Voice Service is degraded") in messages
    assert (OPS, "INFO: Scheduled maintenance: Network Equipment Upgrade") in messages
    assert any(c == OPS and "New SolveForce service *svc_data_002*" in t for c, t in messages)
    security = next(m for m in f.slack.messages if "security alert (critical)" in m["text"])
    assert security["channel"] == ONCALL
    assert "/runs/flow-run/" in str(security["attachments"])  # the run link

    # The ticket's resolution is a reply in the ticket's thread (memory across two events).
    ticket = next(m for m in f.slack.messages if "Support ticket tkt_456789" in m["text"])
    assert ticket["channel"] == ALERTS  # high priority
    resolved = next(m for m in f.slack.messages if "Ticket tkt_456789 resolved" in m["text"])
    assert (resolved["channel"], resolved["thread_ts"]) == (ticket["channel"], ticket["ts"])
    assert "in 4h 30m" in resolved["text"]

    [incident] = f.servicenow.incidents  # the degraded sample opens none; security opens one
    assert (incident["priority"], incident["category"]) == ("1", "Security")
    assert f.inventory.services["svc_data_002"]["service_type"] == "fiber_internet"
    assert [(c.method, c.path) for c in f.echo.calls] == [
        ("POST", "/accounting/invoices"),
        ("POST", "/accounting/payments"),
    ]
    keys = [{k.lower(): v for k, v in c.headers.items()}["idempotency-key"] for c in f.echo.calls]
    assert all(keys) and len(set(keys)) == 2
    assert not any(c == BILLING and "Payment" in t for c, t in messages)  # it succeeded


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
