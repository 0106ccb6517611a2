"""Engine fixtures: fake vendors, a recipe folder, and an in-process Hookline engine
(inbox + dispatcher + worker) against the session's real Prefect server."""

from __future__ import annotations

import os
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from hookline.config import HooklineConfig
from tests.engine.harness import EngineHarness, running_engine
from vendor_fakes import FakeVendors

OUTAGE_RECIPE = """
name: outage
on: service.status.changed
when: data.current_status in ['degraded', 'outage']
defaults: { retries: 3, retry_backoff: 0.01s, timeout: 5s }
steps:
  - id: alert
    uses: slack.post_message
    with:
      channel: "#alerts"
      text: "{{ data.service_name }} is {{ data.current_status }}"
  - id: incident
    if: data.current_status == 'outage'
    uses: servicenow.create_incident
    with:
      short_description: "SOLVEFORCE Service Outage: {{ data.service_name }}"
      priority: "{{ 1 if data.impact == 'high' else 2 }}"
  - id: link
    if: steps.incident is defined
    uses: slack.post_message
    with:
      channel: "{{ steps.alert.channel }}"
      thread_ts: "{{ steps.alert.ts }}"
      text: "Incident {{ steps.incident.number }}"
on_failure:
  - id: tell_oncall
    uses: slack.post_message
    with:
      channel: "#oncall"
      text: "{{ recipe.name }} failed at {{ failure.step }}: {{ failure.error }} {{ run.url }}"
"""


TICKET_RECIPE = """
name: tickets
on: support.ticket.*
steps:
  - id: thread
    if: event_type == 'support.ticket.resolved'
    uses: memory.recall
    with: { key: "ticket:{{ data.ticket_id }}" }
  - id: post
    uses: slack.post_message
    with:
      channel: "#support"
      text: "{{ event_type }} {{ data.ticket_id }}"
      thread_ts: >-
        {{ steps.thread.value.ts if steps.thread is defined and steps.thread.found else none }}
  - id: keep
    if: event_type == 'support.ticket.created'
    uses: memory.remember
    with: { key: "ticket:{{ data.ticket_id }}", value: { ts: "{{ steps.post.ts }}" } }
"""


ORDERED_RECIPE = """
name: ordered
on: service.maintenance.scheduled
order_by: "{{ data.maintenance_id }}"
steps:
  - id: notice
    uses: slack.post_message
    with: { channel: "#maintenance", text: "{{ data.title }}" }
"""

ORDERED_TOO_RECIPE = """
name: ordered-too
on: webhook.test
order_by: "{{ data.maintenance_id }}"
steps:
  - id: notice
    uses: slack.post_message
    with: { channel: "#maintenance", text: "test {{ data.maintenance_id }}" }
"""

TOLERANT_RECIPE = """
name: tolerant
on: billing.usage.threshold_exceeded
defaults: { retries: 0 }
steps:
  - id: ticket
    uses: servicenow.create_incident
    continue_on_error: true
    with: { short_description: "usage {{ data.current_usage }}" }
  - id: alert
    uses: slack.post_message
    with: { channel: "#billing", text: "usage {{ data.current_usage }}" }
"""


COALESCING_RECIPE = """
name: flapping
on: security.alert.created
coalesce: { key: "{{ data.alert_id }}", quiet: 1s, max_wait: 3s }
steps:
  - id: post
    uses: slack.post_message
    with:
      channel: "#security"
      text: >-
        {{ data.severity }} after {{ coalesced.count }}:
        {{ coalesced.events | map(attribute='data.severity') | join(',') }}
"""


def sample(event_type: str = "service.status.changed", **data: Any) -> dict[str, Any]:
    from hookline import samples

    payload = samples.load(event_type)
    # unique per test: Prefect's idempotency keys outlive each test's inbox
    payload["event_id"] = f"evt_{uuid.uuid4().hex[:12]}"
    payload["data"].update(data)
    return payload


@pytest.fixture
def fakes() -> Iterator[FakeVendors]:
    with FakeVendors() as f:
        yield f


@pytest.fixture
def recipes_dir(tmp_path: Path) -> Path:
    d = tmp_path / "recipes"
    d.mkdir()
    (d / "outage.yaml").write_text(textwrap.dedent(OUTAGE_RECIPE))
    (d / "tickets.yaml").write_text(textwrap.dedent(TICKET_RECIPE))
    (d / "ordered.yaml").write_text(textwrap.dedent(ORDERED_RECIPE))
    (d / "ordered-too.yaml").write_text(textwrap.dedent(ORDERED_TOO_RECIPE))
    (d / "tolerant.yaml").write_text(textwrap.dedent(TOLERANT_RECIPE))
    (d / "flapping.yaml").write_text(textwrap.dedent(COALESCING_RECIPE))
    return d


@pytest.fixture
async def engine(
    prefect_api: str, tmp_path: Path, recipes_dir: Path, fakes: FakeVendors
) -> AsyncIterator[EngineHarness]:
    async with running_engine(
        prefect_api,
        tmp_path / "home",
        str(recipes_dir),
        HooklineConfig(env=[]),
        {**os.environ, **fakes.env},
    ) as harness:
        yield harness
