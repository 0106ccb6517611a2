"""Prefect UI actions are Hookline actions: what the UI's Retry and "Mark as" do to a run,
through the same API calls the UI makes, is reflected in the inbox (and so in metrics and
`hookline events`)."""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import State, StateType
from prefect.states import Completed, Failed

from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness, prefect_requests, run_ids_read
from tests.waiting import wait_until
from vendor_fakes import FakeVendors
from vendor_fakes.slack import channel_id

pytestmark = pytest.mark.anyio


async def _run(engine: EngineHarness, run_id: str):  # type: ignore[no-untyped-def]
    [run] = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)]))
    )
    return run


async def _wait_status(engine: EngineHarness, entry_id: int, status: str, timeout: float = 60):  # type: ignore[no-untyped-def]
    async def reached():  # type: ignore[no-untyped-def]
        entry = await engine.inbox.get(entry_id)
        return entry if entry is not None and entry.status == status else None

    return await wait_until(reached, timeout=timeout, what=f"entry {entry_id} {status}")


async def _failed_outage(engine: EngineHarness, fakes: FakeVendors) -> tuple[int, str]:
    """An outage event whose run posted its alert, then failed on ServiceNow."""
    fakes.servicenow.fail_next(100, status=500, path="/api/now/table/incident")
    entry = await engine.run(sample(current_status="outage", impact="high"))
    assert entry.status == "failed"
    fakes.servicenow.reset()
    return entry.id, entry.flow_runs["outage"]


async def test_retry_from_the_ui_reuses_finished_steps_and_settles_the_event_done(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    entry_id, run_id = await _failed_outage(engine, fakes)
    assert (await engine.inbox.counts())["failed"] == 1

    # exactly what the UI's Retry button sends (prefect-ui-library `retryFlowRun`)
    await engine.client.set_flow_run_state(
        UUID(run_id),
        State(type=StateType.SCHEDULED, name="AwaitingRetry", message="Retry from the UI"),
        force=False,
    )
    entry = await _wait_status(engine, entry_id, "done")

    assert entry.flow_runs["outage"] == run_id  # the same run, retried: no second run
    run = await _run(engine, run_id)
    assert run.state.is_completed()
    assert run.run_count == 2
    assert (await engine.inbox.counts())["failed"] == 0
    assert len(fakes.servicenow.incidents) == 1
    alerts = [
        m
        for m in fakes.slack.messages
        if m["channel"] == channel_id("#alerts") and "thread_ts" not in m
    ]
    assert len(alerts) == 1, "the retry posted the alert again instead of reusing it"
    links = [m for m in fakes.slack.messages if m.get("thread_ts") == alerts[0]["ts"]]
    assert len(links) == 1  # the link step ran once, in the retry
    # the retry's artifact (a new version under the event's key) says what it is
    stories = await _stories(engine, run_id)
    assert len(stories) == 2
    assert "Outcome**: completed" in stories[-1]
    assert f"- {run_id}: this run, attempt 2 (a Retry from the UI" in stories[-1]


async def _stories(engine: EngineHarness, run_id: str) -> list[str]:
    """The run's Markdown artifacts, oldest first."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = await engine.client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(run_id)]))
    )
    return [str(a.data) for a in sorted(artifacts, key=lambda a: a.created) if a.type == "markdown"]


async def test_a_run_marked_by_hand_in_the_ui_settles_its_event_to_match(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    engine.dispatcher.recover_seconds = 0.2  # the reconcile runs with the recovery check
    entry_id, run_id = await _failed_outage(engine, fakes)

    # the UI's "Mark as Completed" on the failed run: a forced state, nothing is executed
    await engine.client.set_flow_run_state(
        UUID(run_id), Completed(message="fixed in ServiceNow by hand"), force=True
    )
    entry = await _wait_status(engine, entry_id, "done", timeout=10)
    assert len(fakes.servicenow.incidents) == 0  # nothing ran

    await engine.client.set_flow_run_state(
        UUID(run_id), Failed(message="it was not fixed after all"), force=True
    )
    entry = await _wait_status(engine, entry_id, "failed", timeout=10)
    assert "it was not fixed after all" in (entry.last_error or "")


async def test_an_event_failed_for_its_own_reason_is_not_settled_by_its_old_runs(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    """Only a run state newer than the event's last change counts: old Completed runs of an
    event that failed later (here: marked failed by hand in the inbox) leave it failed."""
    entry = await engine.run(sample(current_status="outage", impact="high"))
    assert entry.status == "done"
    await asyncio.sleep(0.01)
    assert await engine.inbox.mark_failed(entry.id, "failed for another reason", expect="done")

    assert await engine.dispatcher.reconcile_once() == 0
    entry = await engine.inbox.get(entry.id)  # type: ignore[assignment]
    assert entry is not None and entry.status == "failed"


async def test_reconcile_reads_a_bounded_slice_per_pass_and_comes_round(
    engine: EngineHarness,
) -> None:
    """A reconcile pass checks at most `reconcile_batch` settled events and the next pass goes
    on from there: a busy system's hour of done events is not read from Prefect whole every
    `recover_seconds`, and a change by hand to the newest one is still found, a pass later."""
    from hookline.engine.dispatcher import Dispatcher

    entries = [await engine.run(sample(current_status="degraded")) for _ in range(5)]
    assert [e.status for e in entries] == ["done"] * 5
    engine.stop.set()  # the engine's own passes would find the change first
    await asyncio.sleep(0.5)
    [run_id] = entries[-1].flow_runs.values()
    await engine.client.set_flow_run_state(
        UUID(run_id), Failed(message="marked failed by hand"), force=True
    )
    d = Dispatcher(
        engine.inbox,
        engine.recipes,
        engine.client,
        engine.dispatcher.deployment_id,
        reconcile_batch=2,
        follow_page=2,
    )
    changed, per_pass = [], []
    for _ in range(4):
        with prefect_requests(engine.client, "/flow_runs/filter") as reads:
            changed.append(await d.reconcile_once())
        per_pass.append(sum(run_ids_read(reads)))
    assert changed == [0, 0, 1, 0]  # events 1-2, 3-4, 5 (changed), then 1-2 again
    assert max(per_pass) <= 2, per_pass
    last = await engine.inbox.get(entries[-1].id)
    assert last is not None and last.status == "failed"
    assert "marked failed by hand" in (last.last_error or "")
