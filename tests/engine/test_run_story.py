"""What a run leaves for on-call in Prefect: its final state (Failed, Preview), its keyed
artifact (failure, Next:, event, masked payload) and one traceback per failure in its logs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)

from hookline.config import HooklineConfig
from hookline.flows import runtime
from hookline.flows.artifact import artifact_key
from hookline.recipes.dryrun import MASK
from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness, running_engine
from vendor_fakes import FakeVendors

pytestmark = pytest.mark.anyio

TRACEBACK = "Traceback (most recent call last)"

INVOICE_RECIPE = """
name: invoice-incident
on: billing.invoice.generated
defaults: { retries: 0 }
steps:
  - id: incident
    uses: servicenow.create_incident
    with: { short_description: "invoice {{ data.invoice_id }}" }
"""


@pytest.fixture
def recipes_dir(recipes_dir: Path) -> Path:
    (recipes_dir / "invoice-incident.yaml").write_text(INVOICE_RECIPE)
    return recipes_dir


async def run_of(engine: EngineHarness, flow_run_id: str) -> Any:
    [run] = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
    )
    return run


async def story_of(engine: EngineHarness, flow_run_id: str) -> Any:
    """The run's one Markdown artifact."""
    artifacts = await engine.client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(flow_run_id)])
        )
    )
    [story] = [a for a in artifacts if a.type == "markdown"]
    return story


async def logs_of(engine: EngineHarness, flow_run_id: str) -> list[str]:
    """Every log line of the run, its task runs' included, as Prefect's API returns them."""
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    logs = await engine.client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
    )
    return [log.message for log in logs]


def unconfigured(environ: dict[str, str], *prefixes: str) -> dict[str, str]:
    return {k: v for k, v in environ.items() if not k.startswith(prefixes)}


async def test_a_failed_run_logs_one_traceback_and_its_artifact_says_what_to_do_next(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    fakes.servicenow.fail_next(100, status=500, path="/api/now/table/incident")
    payload = sample(current_status="outage", impact="high")
    entry = await engine.run(payload)

    assert entry.status == "failed"
    assert "step 'incident' (servicenow.create_incident) failed after 4 attempt(s)" in str(
        entry.last_error
    )
    run_id = entry.flow_runs["outage"]
    run = await run_of(engine, run_id)
    assert run.state.is_failed()
    assert "HTTP 500" in str(run.state.message)

    # the failed step's task run logs the cause once; the flow adds no traceback of its own
    logs = await logs_of(engine, run_id)
    assert sum(m.count(TRACEBACK) for m in logs) == 1, logs
    [cause] = [m for m in logs if TRACEBACK in m]
    assert "HTTP 500" in cause

    story = await story_of(engine, run_id)
    assert story.key == artifact_key("outage", payload["event_id"])
    assert story.key.startswith("hookline-outage-evt-")
    md = story.data
    assert "**Outcome**: FAILED at step `incident`" in md
    [error] = [line for line in md.splitlines() if "HTTP 500" in line]
    assert error == f"`{entry.last_error.split(' attempt(s): ', 1)[1]}`"  # whole, own paragraph
    assert (
        "**Next:** servicenow was unreachable or failing (4 attempt(s)): retry later; once it "
        f"answers, `hookline replay {payload['event_id']} --source solveforce`"
    ) in md
    assert (
        "| incident | `servicenow.create_incident` | failed | 4 | error: see Failure above |" in md
    )
    assert f"- **id**: `{payload['event_id']}`" in md
    assert '"current_status": "outage"' in md  # the payload, as pretty JSON
    assert story.description.startswith("FAILED at step incident | outage for ")


async def test_a_missing_variable_names_the_variable_to_set(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    rt = runtime.current()
    rt.environ = unconfigured(rt.environ, "SERVICENOW_PASSWORD")
    payload = sample("billing.invoice.generated")
    entry = await engine.run(payload)
    assert entry.status == "failed"
    md = (await story_of(engine, entry.flow_runs["invoice-incident"])).data
    assert "**Next:** set SERVICENOW_PASSWORD for the worker" in md
    assert f"hookline replay {payload['event_id']} --source solveforce" in md


async def test_a_previewed_run_is_named_preview_and_a_replay_sends_it_once_configured(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    rt = runtime.current()
    full = dict(rt.environ)
    rt.preview = True
    rt.environ = unconfigured(full, "SLACK_", "SERVICENOW_")
    payload = sample(current_status="outage", impact="high")
    entry_id = await engine.put(payload)
    entry = await engine.wait_final(entry_id)

    assert entry.status == "done", entry.last_error  # a Preview is a Completed state
    run = await run_of(engine, entry.flow_runs["outage"])
    assert run.state.is_completed()
    assert run.state.name == "Preview"
    assert "PREVIEW: nothing was sent (slack, servicenow are not configured)" in str(
        run.state.message
    )
    assert "preview" in run.tags and "recipe:outage" in run.tags
    md = (await story_of(engine, entry.flow_runs["outage"])).data
    assert "**Outcome**: PREVIEW: nothing was sent (slack, servicenow are not configured)" in md
    assert fakes.slack.calls == [] and fakes.servicenow.calls == []

    # configured now: the replay runs the recipe for real (a completed run would be kept)
    rt.environ = full
    await engine.inbox.requeue(entry_id)
    engine.dispatcher.notify()
    entry = await engine.wait_final(entry_id)
    assert entry.status == "done", entry.last_error
    run = await run_of(engine, entry.flow_runs["outage"])
    assert run.state.name == "Completed" and "preview" not in run.tags
    assert len(fakes.servicenow.incidents) == 1
    assert len(fakes.slack.messages) == 2


async def test_the_payload_is_masked_as_configured(
    prefect_api: str, tmp_path: Path, recipes_dir: Path, fakes: FakeVendors
) -> None:
    environ = {**os.environ, **fakes.env}
    token = environ["SLACK_BOT_TOKEN"]
    config = HooklineConfig(env=[], artifacts={"mask": ["Customer_SSN"]})
    payload = sample(
        "billing.invoice.generated",
        api_token="tok-123456",
        customer_ssn="123-45-6789",
        note=f"pasted by mistake: {token}",
    )
    async with running_engine(
        prefect_api, tmp_path / "home", str(recipes_dir), config, environ
    ) as engine:
        entry = await engine.run(payload)
        [run_id] = entry.flow_runs.values()
        md = (await story_of(engine, run_id)).data
    assert '"invoice_id"' in md  # the payload is there ...
    assert f'"api_token": "{MASK}"' in md  # ... with a secret-looking key masked,
    assert f'"customer_ssn": "{MASK}"' in md  # a configured key (any case),
    assert f'"note": "pasted by mistake: {MASK}"' in md  # and a known secret value
    assert "tok-123456" not in md and "123-45-6789" not in md and token not in md

    config = HooklineConfig(env=[], artifacts={"payload": False})
    async with running_engine(
        prefect_api, tmp_path / "home2", str(recipes_dir), config, environ
    ) as engine:
        entry = await engine.run(sample("billing.invoice.generated"))
        [run_id] = entry.flow_runs.values()
        md = (await story_of(engine, run_id)).data
    assert '"invoice_id"' not in md
    assert "Not shown: hookline.yaml sets `artifacts.payload: false`." in md
