"""Runs are executed exactly once, and runs of a dead worker come back: in-process engine,
real Prefect server. (tests/engine/test_scale_out.py does the same with real processes,
SIGKILL and PostgreSQL.)"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest

from hookline.engine import follow
from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness
from vendor_fakes import FakeVendors
from vendor_fakes.slack import channel_id

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

DEAD = "hookline-host-that-died-4242"


async def _state(engine: EngineHarness, run_id: str) -> Any:
    run = await engine.client.read_flow_run(UUID(run_id))
    return run.state


async def _created_but_not_taken(engine: EngineHarness, payload: dict[str, Any]) -> Any:
    """The flow run of ``payload``, Scheduled and not taken by the live worker (its slots are
    closed meanwhile): what a run looks like right after another worker polled it."""
    limit = engine.worker.handoff_backlog
    engine.worker.handoff_backlog = -engine.worker.limit  # no room: takes nothing
    created: list[Any] = []
    engine.dispatcher.on_created = created.append
    engine.dispatcher.handoff_room = None  # the dispatcher creates regardless
    try:
        entry_id = await engine.put(payload)
        for _ in range(200):
            if created:
                break
            await asyncio.sleep(0.05)
        [flow_run] = created
        while (entry := await engine.inbox.get(entry_id)) is None or entry.status != "dispatched":
            await asyncio.sleep(0.05)
        return entry_id, flow_run
    finally:
        engine.dispatcher.hand_to(engine.worker)
        engine.worker.handoff_backlog = limit


def _fast_recovery(engine: EngineHarness) -> None:
    engine.dispatcher.worker_timeout = 3.0  # the harness's worker beats every second
    engine.dispatcher.recover_seconds = 0.2


async def test_a_pending_run_of_a_dead_worker_is_crashed_and_sent_again(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    from prefect.states import Pending

    _fast_recovery(engine)
    entry_id, flow_run = await _created_but_not_taken(engine, sample(current_status="degraded"))
    # a worker claims it and moves it to Pending, then dies (no heartbeat, ever)
    assert await engine.inbox.claim_run(str(flow_run.id), str(flow_run.state.id), DEAD)
    await engine.client.set_flow_run_state(flow_run.id, Pending())

    entry = await engine.wait_final(entry_id, timeout=30)
    assert entry.status == "done", entry.last_error
    assert entry.attempts == 1 and "worker stopped heartbeating" in (entry.last_error or "")
    assert (await _state(engine, str(flow_run.id))).type.value == "CRASHED"
    assert entry.flow_runs["outage"] != str(flow_run.id)  # a new run did the work, once
    assert len(fakes.slack.calls_to("chat.postMessage")) == 1


async def test_a_run_claimed_by_a_dead_worker_but_never_started_is_scheduled_again(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    _fast_recovery(engine)
    lost_before = engine.worker.stats.lost_claims
    entry_id, flow_run = await _created_but_not_taken(engine, sample(current_status="degraded"))
    assert await engine.inbox.claim_run(str(flow_run.id), str(flow_run.state.id), DEAD)

    entry = await engine.wait_final(entry_id, timeout=30)
    assert entry.status == "done", entry.last_error
    assert entry.attempts == 0  # the same run, scheduled again and run by the live worker
    assert entry.flow_runs["outage"] == str(flow_run.id)
    assert engine.worker.stats.lost_claims > lost_before  # it did not take the dead claim
    assert len(fakes.slack.calls_to("chat.postMessage")) == 1


async def test_a_stale_copy_of_a_completed_run_is_not_executed_again(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    """Prefect accepts Pending from Completed: a worker that polled a run into its backlog
    and claims it after another worker completed it would run it twice."""
    seen: list[Any] = []

    def keep(flow_run: Any) -> bool:
        seen.append(flow_run.model_copy(deep=True))  # as another worker's poll saw it
        return engine.worker.submit(flow_run)

    engine.dispatcher.on_created = keep
    entry = await engine.run(sample(current_status="degraded"))
    assert entry.status == "done"
    [stale] = seen
    lost_before = engine.worker.stats.lost_claims

    assert engine.worker.submit(stale)  # the stale backlog entry gets a slot
    for _ in range(100):
        if engine.worker.stats.lost_claims > lost_before:
            break
        await asyncio.sleep(0.05)
    assert engine.worker.stats.lost_claims == lost_before + 1
    assert (await _state(engine, str(stale.id))).type.value == "COMPLETED"
    assert len(fakes.slack.calls_to("chat.postMessage")) == 1


async def test_on_failure_tells_oncall_once_per_failure_until_retried_or_replayed(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    """on_failure steps are in the step log, so a run of a still-dispatched event executed
    again does not repeat them; a retry from the UI or a replay by hand is a new attempt by a
    person: if it fails again, on-call hears about it again."""
    from prefect.states import Scheduled

    fakes.servicenow.fail_next(1000, status=500, path="/api/now/table/incident")
    entry_id = await engine.put(sample(current_status="outage", impact="high"))
    entry = await engine.wait_final(entry_id)
    assert entry.status == "failed"

    def oncall() -> int:
        return sum(1 for m in fakes.slack.messages if m["channel"] == channel_id("#oncall"))

    assert oncall() == 1
    # the step log keeps the event's on_failure steps while it is dispatched
    done = await engine.inbox.completed_steps(entry.source, entry.event_id, "outage")
    assert "on_failure.tell_oncall" in done
    # the same run sent back to Scheduled after it ended (a Retry): the event is reopened
    run_id = UUID(entry.flow_runs["outage"])
    await engine.client.set_flow_run_state(run_id, Scheduled(), force=True)
    for _ in range(400):
        state = await _state(engine, str(run_id))
        if state.is_final() and state.type.value != "SCHEDULED":
            break
        await asyncio.sleep(0.05)
    assert state.is_failed()
    assert (await engine.wait_final(entry_id)).status == "failed"
    assert oncall() == 2
    # a replay by hand that fails again tells on-call again
    await engine.inbox.requeue(entry_id)
    engine.dispatcher.notify()
    for _ in range(50):
        if (e := await engine.inbox.get(entry_id)) is not None and e.status == "dispatched":
            break
        await asyncio.sleep(0.05)
    assert (await engine.wait_final(entry_id)).status == "failed"
    assert oncall() == 3


async def test_follow_pages_past_prefects_query_limit(
    engine: EngineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Prefect answers 422 to a flow_runs/filter limit above 200; following pages its
    queries (here with a limit of 2, so 7 events need 4 queries a page of 3 entries)."""
    monkeypatch.setattr(follow, "PREFECT_MAX_LIMIT", 2)
    engine.dispatcher.follow_page = 3
    ids = [await engine.put(sample(current_status="degraded")) for _ in range(7)]
    entries = [await engine.wait_final(i) for i in ids]
    assert [e.status for e in entries] == ["done"] * 7
