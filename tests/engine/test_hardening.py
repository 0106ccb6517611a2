"""The recipe flow against what the review of issue 11 found: forged run parameters, a vendor
call outliving its timeout, a secret that cannot be read right now, a template that would
stall the worker. In-process engine, real Prefect server, fake vendors."""

from __future__ import annotations

import asyncio
import re
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from hookline.flows import runtime
from hookline.flows.recipe_flow import recipe_flow
from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness
from vendor_fakes import FakeVendors

pytestmark = pytest.mark.anyio

SLOW_VENDOR_RECIPE = """
name: slow-vendor
on: billing.invoice.generated
defaults: { retries: 2, retry_backoff: 0.01s, timeout: 0.5s }
steps:
  - id: post
    uses: slack.post_message
    with: { channel: "#billing", text: "invoice {{ data.invoice_id }}" }
"""

HEAVY_TEMPLATE_RECIPE = """
name: heavy-template
on: service.provisioned
defaults: { retries: 0 }
steps:
  - id: post
    uses: slack.post_message
    with:
      channel: "#provisioning"
      text: >-
        {% for i in range(100000) %}{% for j in range(30) %}{{ i }}{% endfor %}{% endfor %}
"""

HALF_CONFIGURED_RECIPE = """
name: half-configured
on: security.alert.created
defaults: { retries: 0 }
steps:
  - id: incident
    uses: servicenow.create_incident
    with: { short_description: "alert {{ data.alert_id }}" }
"""


@pytest.fixture
def recipes_dir(recipes_dir: Path) -> Path:
    for name, text in (
        ("slow-vendor", SLOW_VENDOR_RECIPE),
        ("heavy-template", HEAVY_TEMPLATE_RECIPE),
        ("half-configured", HALF_CONFIGURED_RECIPE),
    ):
        (recipes_dir / f"{name}.yaml").write_text(textwrap.dedent(text))
    return recipes_dir


async def test_a_run_with_forged_parameters_is_refused_before_any_step(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    """Anyone who can create runs of the deployment used to be able to run any recipe on any
    event: page on-call or open a P1 for an event that matches nothing."""
    quiet = sample(current_status="operational")  # matches no recipe: done, nothing sent
    entry_id = await engine.put(quiet)
    assert (await engine.wait_final(entry_id)).status == "done"
    good = {"entry_id": entry_id, "source": "solveforce", "event_id": quiet["event_id"]}

    forged = [
        ({**good, "recipe": "outage"}, "does not match the event: .* but when"),
        ({**good, "recipe": "tickets"}, "does not match the event: event type"),
        ({**good, "recipe": "outage", "event_id": "evt_other"}, "do not match inbox entry"),
        ({**good, "recipe": "outage", "source": "github"}, "do not match inbox entry"),
        ({**good, "recipe": "outage", "entry_id": 10**9}, "which does not exist"),
        ({**good, "recipe": "outage", "entry_id": str(entry_id)}, "not an integer"),
    ]
    for params, why in forged:
        state = await recipe_flow(**params, return_state=True)
        assert state.is_failed(), params
        message = str(state.message)
        assert "refused: this run's parameters" in message, message
        assert re.search(why, message), message
    assert fakes.slack.calls == [] and fakes.servicenow.calls == []


async def test_a_timed_out_call_ends_before_its_retry_starts(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    """The step's timeout used to abandon the call's thread, whose client waited 10 s more: the
    retry ran beside it. Now the client has the step's timeout and the retry waits for it."""
    fakes.slack.fail_next(status=None, delay=3.0, path="chat.postMessage")
    start = time.monotonic()
    entry = await engine.run(sample("billing.invoice.generated"))
    assert entry.status == "done", entry.last_error
    first, retry = fakes.slack.calls_to("chat.postMessage")
    assert first.abandoned_at is not None, "the first call's client never gave up"
    assert first.abandoned_at - first.received_at < 1.5
    assert retry.received_at >= first.abandoned_at
    assert time.monotonic() - start < 20


async def test_a_secret_that_cannot_be_read_now_is_retried_not_previewed(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    """Prefect's API down while reading a Secret block used to be NotConfiguredError: under
    `hookline up` (preview) a "Preview" step, a Completed run, and no alert."""
    reads: list[str] = []

    def flaky(name: str) -> str:
        reads.append(name)
        if len(reads) == 1:  # the API is unreachable for the first read: a real refused call
            with httpx.Client() as client:
                client.get("http://127.0.0.1:9/api/block_documents/filter")
        return fakes.env["SLACK_BOT_TOKEN"]

    rt = runtime.current()
    rt.preview = True
    rt.secrets = flaky
    rt.environ = {**rt.environ, "SLACK_BOT_TOKEN": "prefect-secret:slack-bot-token"}
    entry = await engine.run(sample("billing.invoice.generated"))
    assert entry.status == "done", entry.last_error
    assert reads == ["slack-bot-token", "slack-bot-token"]
    assert len(fakes.slack.calls_to("chat.postMessage")) == 1  # really sent, not previewed


async def test_preview_is_only_for_a_connector_with_no_configuration(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    rt = runtime.current()
    rt.preview = True
    half = {k: v for k, v in rt.environ.items() if k != "SERVICENOW_PASSWORD"}
    rt.environ = half
    entry = await engine.run(sample("security.alert.created"))
    assert entry.status == "failed"
    assert "set SERVICENOW_PASSWORD" in str(entry.last_error)

    rt.environ = {k: v for k, v in half.items() if not k.startswith("SERVICENOW_")}
    entry = await engine.run(sample("security.alert.created"))
    assert entry.status == "done", entry.last_error  # nothing configured: a Preview step
    assert fakes.servicenow.calls == []


async def test_a_heavy_template_fails_its_step_without_stalling_the_worker(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    """Rendering used to run on the worker's event loop with no time limit (this template:
    about 6 s, during which every other run and heartbeat of the worker stood still). Later,
    each work-pool poll rebuilt Prefect settings (a dozen GIL-releasing stats, each waiting a
    switch interval behind the render): 0.2-0.66 s stalls; now about 0.05 s."""
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    try:
        entry = await engine.run(sample("service.provisioned"))
    finally:
        beat.cancel()
    assert entry.status == "failed"
    assert "took longer than 1s, the time limit of a recipe template" in str(entry.last_error)
    assert max(gaps) < 0.3, f"the event loop stalled {max(gaps):.2f}s"
    assert fakes.slack.calls_to("chat.postMessage") == []
