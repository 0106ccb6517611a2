"""Signed event in the inbox -> dispatcher -> Prefect flow run -> in-process worker -> fakes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterator
from uuid import UUID, uuid4

import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterTags

from hookline.engine.errors import PrefectUnavailable
from hookline.inbox import FINAL_STATUSES, InboxEntry
from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness, prefect_requests, run_ids_read
from vendor_fakes import FakeVendors

pytestmark = pytest.mark.anyio


@contextlib.contextmanager
def runs_held_in_the_pool(engine: EngineHarness) -> Iterator[list[object]]:
    """Inside: the dispatcher hands no new run to the worker (the list collects them) and the
    worker does not poll, so they wait in the work pool."""
    real_submit, real_poll = engine.dispatcher.on_created, engine.worker.poll_once
    created: list[object] = []

    async def no_poll() -> int:
        return 0

    engine.dispatcher.on_created = created.append
    engine.worker.poll_once = no_poll  # type: ignore[method-assign]
    try:
        yield created
    finally:
        engine.dispatcher.on_created = real_submit
        engine.worker.poll_once = real_poll  # type: ignore[method-assign]


async def _put_held(
    engine: EngineHarness, created: list[object], n: int, runs: int | None = None
) -> list[int]:
    """Store ``n`` degraded events inside `runs_held_in_the_pool`; their entry ids, once
    ``created`` holds ``runs`` (default ``n``) runs, or after 10 s."""
    ids = [await engine.put(sample(current_status="degraded")) for _ in range(n)]
    for _ in range(200):
        if len(created) >= (n if runs is None else runs):
            break
        await asyncio.sleep(0.05)
    return ids


async def _task_runs(client, flow_run_id: str, count: int) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Task run name -> state name, once ``count`` task runs are recorded in final states."""
    from prefect.client.schemas.filters import FlowRunFilter as F

    # task runs reach the server through its task-run recorder, asynchronously: a flow run
    # can be Completed while its last task run is missing or still reads Running for a moment
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        runs = await client.read_task_runs(
            flow_run_filter=F(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
        )
        settled = len(runs) >= count and all(
            tr.state is not None and tr.state.is_final() for tr in runs
        )
        if settled or asyncio.get_running_loop().time() > deadline:
            return {tr.name: tr.state.name if tr.state else "None" for tr in runs}
        await asyncio.sleep(0.05)


async def test_outage_runs_every_step_and_completes(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    payload = sample(current_status="outage", impact="high")
    entry_id = await engine.put(payload)
    entry = await engine.wait_final(entry_id)

    assert entry.status == "done", entry.last_error
    posts = fakes.slack.calls_to("chat.postMessage")
    # the thread reply goes to the channel id Slack answered with, as `steps.alert.channel`
    assert posts[0].json["channel"] == "#alerts"
    assert posts[1].json["channel"] == fakes.slack.messages[0]["channel"]
    assert posts[1].json["thread_ts"] == fakes.slack.messages[0]["ts"]
    assert len(fakes.servicenow.incidents) == 1
    incident = fakes.servicenow.incidents[0]
    assert incident["priority"] == "1"
    assert incident["correlation_id"] == f"solveforce:{payload['event_id']}:outage:incident"

    run_id = entry.flow_runs["outage"]
    [run] = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)]))
    )
    assert run.name == f"outage/{payload['event_id']}"
    assert run.state.is_completed()
    assert set(run.tags) == {
        "hookline",
        "recipe:outage",
        "event:service.status.changed",
        "source:solveforce",
        f"event-id:{payload['event_id']}",
    }
    assert "payload" not in run.parameters and set(run.parameters) == {
        "entry_id",
        "source",
        "event_id",
        "recipe",
    }


async def test_if_false_steps_show_as_skipped(engine: EngineHarness, fakes: FakeVendors) -> None:
    entry = await engine.wait_final(await engine.put(sample(current_status="degraded")))
    assert entry.status == "done", entry.last_error
    assert len(fakes.slack.calls_to("chat.postMessage")) == 1
    assert fakes.servicenow.incidents == []
    names = await _task_runs(engine.client, entry.flow_runs["outage"], 3)
    assert names == {"alert": "Completed", "incident": "Skipped", "link": "Skipped"}


async def test_not_matching_event_is_done_without_runs(engine: EngineHarness) -> None:
    entry = await engine.wait_final(await engine.put(sample(current_status="healthy")))
    assert entry.status == "done"
    assert entry.flow_runs == {}


async def test_vendor_500_twice_then_ok_retries_and_sends_once(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    fakes.slack.fail_next(2, status=500, path="chat.postMessage")
    entry = await engine.wait_final(await engine.put(sample(current_status="degraded")))

    assert entry.status == "done", entry.last_error
    answered = [c for c in fakes.slack.calls_to("chat.postMessage")]
    assert len(answered) == 3  # two 500s, then the one message Slack kept
    assert len(fakes.slack.messages) == 1
    logs = await _flow_run_logs(engine.client, entry.flow_runs["outage"])
    assert sum("attempt" in m and "retrying" in m for m in logs) == 2


async def test_vendor_down_fails_tells_oncall_then_replay_skips_finished_steps(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    from prefect.client.schemas.filters import FlowRunFilter

    fakes.servicenow.fail_next(100, status=500, path="/api/now/table/incident")
    payload = sample(current_status="outage", impact="high")
    entry_id = await engine.put(payload)
    entry = await engine.wait_final(entry_id)

    assert entry.status == "failed"
    assert "incident" in (entry.last_error or "")
    first_run = entry.flow_runs["outage"]
    from vendor_fakes.slack import channel_id

    texts = [(m["channel"], m["text"]) for m in fakes.slack.messages]
    assert len(texts) == 2
    oncall = [t for c, t in texts if c == channel_id("#oncall")]
    assert len(oncall) == 1
    assert "outage failed at incident" in oncall[0]
    assert f"/runs/flow-run/{first_run}" in oncall[0]
    assert fakes.servicenow.incidents == []
    [run] = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(first_run)]))
    )
    assert run.state.is_failed()

    # ServiceNow is back; the replay opens the incident without re-sending the alert
    fakes.servicenow.reset()
    await engine.inbox.requeue(entry_id)
    engine.dispatcher.notify()
    entry = await engine.wait_final(entry_id)

    assert entry.status == "done", entry.last_error
    assert entry.flow_runs["outage"] != first_run
    assert len(fakes.servicenow.incidents) == 1
    alerts = [
        m
        for m in fakes.slack.messages
        if m["channel"] == channel_id("#alerts") and "thread_ts" not in m
    ]
    assert len(alerts) == 1  # the alert was not sent again
    names = await _task_runs(engine.client, entry.flow_runs["outage"], 3)
    assert names == {"alert": "Replayed", "incident": "Completed", "link": "Completed"}
    # both runs of the event share its tag; the replay says it is a rerun
    runs = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[f"event-id:{payload['event_id']}"])
        )
    )
    assert {str(r.id): "rerun" in r.tags for r in runs} == {
        first_run: False,
        entry.flow_runs["outage"]: True,
    }
    # and the replay's artifact links the run it follows
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    [story] = await engine.client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(entry.flow_runs["outage"])])
        )
    )
    assert "**Earlier runs of this event**" in str(story.data)
    assert f"- [{first_run}](" in str(story.data) and "): Failed" in str(story.data)


async def _flow_run_logs(client, flow_run_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()
    logs = await client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))
    )
    return [log.message for log in logs]


async def test_memory_carries_the_thread_from_created_to_resolved(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    created = sample("support.ticket.created")
    assert (await engine.wait_final(await engine.put(created))).status == "done"
    resolved = sample("support.ticket.resolved")
    entry = await engine.wait_final(await engine.put(resolved))
    assert entry.status == "done", entry.last_error
    first, reply = fakes.slack.messages
    assert "thread_ts" not in first or first["thread_ts"] in (None, "")
    assert reply["thread_ts"] == first["ts"]


async def test_connector_secret_from_a_prefect_secret_block(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    from prefect.blocks.system import Secret

    from hookline.flows import runtime

    await Secret(value=fakes.env["SLACK_BOT_TOKEN"]).save("slack-bot-token", overwrite=True)
    rt = runtime.current()
    rt.environ = {**rt.environ, "SLACK_BOT_TOKEN": "prefect-secret:slack-bot-token"}
    entry = await engine.wait_final(await engine.put(sample(current_status="degraded")))
    assert entry.status == "done", entry.last_error
    [call] = fakes.slack.calls_to("chat.postMessage")
    headers = {k.lower(): v for k, v in call.headers.items()}
    assert headers["authorization"] == f"Bearer {fakes.env['SLACK_BOT_TOKEN']}"


async def test_run_left_running_by_a_dead_worker_is_crashed_and_sent_again(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    from prefect.states import Running

    # a worker that claims the run and dies: nothing executes it, it stays Running
    with runs_held_in_the_pool(engine) as claimed:
        entry_id = await engine.put(sample(current_status="degraded"))
        for _ in range(200):
            if claimed:
                break
            await asyncio.sleep(0.05)
        lost = claimed[0]
        await engine.client.set_flow_run_state(lost.id, Running(), force=True)  # type: ignore[attr-defined]

    # the worker is back; time passes beyond anything the recipe could take
    engine.dispatcher.clock = lambda: time.time() + 3600
    for _ in range(200):
        current = await engine.inbox.get(entry_id)
        if current is not None and current.status == "pending":
            break
        await asyncio.sleep(0.05)
    engine.dispatcher.clock = time.time
    entry = await engine.wait_final(entry_id)

    assert entry.status == "done", entry.last_error
    assert entry.flow_runs["outage"] != str(lost.id)  # type: ignore[attr-defined]
    [old] = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[lost.id]))  # type: ignore[attr-defined]
    )
    assert old.state.type.value == "CRASHED"
    assert len(fakes.slack.messages) == 1


async def test_readiness_fails_while_prefect_is_unreachable(engine: EngineHarness) -> None:
    from prefect.client.orchestration import PrefectClient

    assert "pending" in await engine.dispatcher.readiness()
    real = engine.dispatcher.client
    async with PrefectClient("http://127.0.0.1:9/api") as down:  # nothing listens there
        engine.dispatcher.client = down
        try:
            entry_id = await engine.put(sample(current_status="degraded"))
            for _ in range(200):
                try:
                    await engine.dispatcher.readiness()
                except PrefectUnavailable as exc:
                    assert "Prefect API unavailable" in str(exc)
                    assert "1 event(s) pending, kept in the inbox" in str(exc)
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("readiness never failed")
        finally:
            engine.dispatcher.client = real
    # kept pending, and dispatched once Prefect answers again (after the dispatcher's pause)
    assert (await engine.wait_final(entry_id)).status == "done"
    assert "pending" in await engine.dispatcher.readiness()


async def test_order_by_lane_runs_one_at_a_time_in_event_time_order(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    ids = []
    with engine.dispatcher.paused():  # let all three arrive first
        for title, ts in (("third", "12:00:03"), ("first", "12:00:01"), ("second", "12:00:02")):
            payload = sample("service.maintenance.scheduled", title=title)
            payload["timestamp"] = f"2024-01-10T{ts}Z"
            ids.append(await engine.put(payload))
    entries = [await engine.wait_final(i) for i in ids]

    assert [e.status for e in entries] == ["done"] * 3
    assert [m["text"] for m in fakes.slack.messages] == ["first", "second", "third"]
    runs = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[UUID(e.flow_runs["ordered"]) for e in entries])
        )
    )
    spans = sorted((r.start_time, r.end_time) for r in runs)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # no overlap


async def test_order_by_lane_is_shared_by_recipes(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    """Two recipes ordering by the same key: the later event's run waits for the earlier
    event's run of the other recipe (as ticket created -> resolved in the shipped recipes)."""
    fakes.slack.fail_next(status=None, delay=1.0)  # the earlier event's run is slow
    first = sample("service.maintenance.scheduled", title="scheduled")
    first["timestamp"] = "2024-01-10T12:00:01Z"
    second = sample("webhook.test", maintenance_id=first["data"]["maintenance_id"])
    second["timestamp"] = "2024-01-10T12:00:02Z"
    with engine.dispatcher.paused():  # let both arrive first
        ids = [await engine.put(second), await engine.put(first)]
    later, earlier = [await engine.wait_final(i) for i in ids]

    assert (earlier.status, later.status) == ("done", "done")
    assert [m["text"] for m in fakes.slack.messages] == [
        "scheduled",
        f"test {first['data']['maintenance_id']}",
    ]
    [a] = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(earlier.flow_runs["ordered"])]))
    )
    [b] = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[UUID(later.flow_runs["ordered-too"])])
        )
    )
    assert a.end_time <= b.start_time


async def test_continue_on_error_step_fails_and_the_recipe_goes_on(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    fakes.servicenow.fail_next(5, status=400, path="/api/now/table/incident")
    entry = await engine.wait_final(await engine.put(sample("billing.usage.threshold_exceeded")))

    assert entry.status == "done", entry.last_error
    assert [m["text"] for m in fakes.slack.messages] == ["usage 85"]
    names = await _task_runs(engine.client, entry.flow_runs["tolerant"], 2)
    assert names == {"ticket": "Failed", "alert": "Completed"}


async def _run_state(engine: EngineHarness, run_id: str) -> str:
    [run] = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(run_id)]))
    )
    return str(run.state.name)


async def _outage_run_with_its_alert_in_flight(
    engine: EngineHarness, fakes: FakeVendors
) -> tuple[int, str]:
    """An outage event whose run is in its first step: the alert is posted, its answer slow."""
    fakes.slack.fail_next(status=None, delay=2.0)
    entry_id = await engine.put(sample(current_status="outage", impact="high"))
    for _ in range(200):
        current = await engine.inbox.get(entry_id)
        run_id = (current.flow_runs if current else {}).get("outage", "")
        if run_id and fakes.slack.calls_to("chat.postMessage"):
            return entry_id, run_id
        await asyncio.sleep(0.05)
    raise AssertionError("no run reached its first step")


async def test_run_suspended_from_the_ui_stops_at_its_next_step_and_resumes_without_repeats(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    """The worker watches every run it executes for suspension with one shared observer
    (hookline/engine/prefect_internals.py): suspending a running run through the API, as the
    UI does, stops it before its next step; resuming it runs the rest once."""
    from prefect.flow_runs import aresume_flow_run
    from prefect.states import Suspended

    entry_id, run_id = await _outage_run_with_its_alert_in_flight(engine, fakes)

    # what the UI's "Suspend" does: a Suspended state proposed through the API, not in-process
    await engine.client.set_flow_run_state(
        UUID(run_id), Suspended(timeout_seconds=600, pause_key="ops")
    )
    for _ in range(200):
        if await _run_state(engine, run_id) == "Suspended" and not engine.worker.busy:
            break
        await asyncio.sleep(0.05)
    assert await _run_state(engine, run_id) == "Suspended"
    assert not engine.worker.busy
    assert len(fakes.slack.messages) == 1
    assert fakes.servicenow.incidents == []  # stopped before the incident step

    await aresume_flow_run(UUID(run_id))
    entry = await engine.wait_final(entry_id)

    assert entry.status == "done", entry.last_error
    assert await _run_state(engine, run_id) == "Completed"
    assert len(fakes.servicenow.incidents) == 1
    # the alert was not posted again; the thread reply went under it
    assert len(fakes.slack.messages) == 2
    assert fakes.slack.messages[1]["thread_ts"] == fakes.slack.messages[0]["ts"]


async def test_run_cancelled_from_the_ui_stops_before_its_next_step(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    """The UI's Cancel (a Cancelling state through the API): the worker's cancellation
    observer stops the run between steps, never mid-call; the event is failed, replayable."""
    from prefect.states import Cancelling

    entry_id, run_id = await _outage_run_with_its_alert_in_flight(engine, fakes)

    await engine.client.set_flow_run_state(UUID(run_id), Cancelling())
    entry = await engine.wait_final(entry_id)

    assert entry.status == "failed"
    assert "cancelled before step 'incident'" in (entry.last_error or "")
    assert await _run_state(engine, run_id) == "Cancelled"
    assert len(fakes.slack.messages) == 1  # the alert in flight finished; nothing after it
    assert fakes.servicenow.incidents == []


async def test_a_poll_asks_the_pool_for_no_more_runs_than_the_worker_has_room_for(
    engine: EngineHarness,
) -> None:
    from hookline.engine.deployment import WORK_POOL
    from hookline.engine.worker import _scheduled_runs

    # three runs wait in the pool: the dispatcher hands none over, the worker does not poll
    with runs_held_in_the_pool(engine) as created:
        ids = await _put_held(engine, created, 3)

        # a burst left in the pool must not be read whole for a worker with room for two
        # (bench/README.md, "Sustained": up to 200 whole runs per poll)
        assert len(await _scheduled_runs(engine.client, WORK_POOL, limit=2)) == 2
        assert len(await _scheduled_runs(engine.client, WORK_POOL, limit=10)) == 3

    for entry_id in ids:
        assert (await engine.wait_final(entry_id)).status == "done"


async def test_a_run_that_ends_in_process_has_its_event_followed_alone(
    engine: EngineHarness,
) -> None:
    """The in-process worker says a run ended: its event is done at once, without reading
    every event still in flight from Prefect (which, once per ended run, kept the Prefect
    server busy with reads through a burst), nor the run itself: the worker tells its
    Completed state, as Prefect's server answered it."""
    engine.dispatcher.follow_seconds = 3600.0  # one whole cycle at most, from now on
    try:
        with runs_held_in_the_pool(engine) as created:  # no poll takes them meanwhile
            await _put_held(engine, created, 10)
            assert len(created) == 10
            with prefect_requests(engine.client, "/flow_runs/filter") as reads:
                started = time.monotonic()
                for flow_run in created:  # one after another
                    assert engine.worker.submit(flow_run)
                    entry_id = flow_run.parameters["entry_id"]  # type: ignore[attr-defined]
                    assert (await engine.wait_final(entry_id, timeout=30)).status == "done"
                took = time.monotonic() - started
            ids_read = run_ids_read(reads)
    finally:
        engine.dispatcher.follow_seconds = 0.5
    # one whole cycle at most (of at most 10 ids); a read per ended run made 10 requests, a
    # cycle per ended run read 10 + 9 + ... + 1 = 55 ids
    assert len(ids_read) <= 1 and sum(ids_read) <= 10, ids_read
    assert took < 20, f"10 runs one after another took {took:.1f} s"


async def _storm_through(
    engine: EngineHarness, count: Callable[[list[InboxEntry]], Awaitable[int]]
) -> tuple[bool, int]:
    """Put a storm of 12 events and watch it to the end: whether any waited in the inbox,
    pending, and the most ``count`` saw at once; every event ends done."""
    peak = 0
    waited = False
    ids = [await engine.put(sample(current_status="degraded")) for _ in range(12)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = [await engine.inbox.get(i) for i in ids]
        entries = [e for e in got if e is not None]
        waited = waited or any(e.status == "pending" for e in entries)
        peak = max(peak, await count(entries))
        if len(entries) == len(ids) and all(e.status in FINAL_STATUSES for e in entries):
            break
        await asyncio.sleep(0.01)
    for entry_id in ids:
        assert (await engine.wait_final(entry_id)).status == "done"
    return waited, peak


async def test_a_storm_waits_in_the_inbox_while_the_in_process_worker_is_full(
    engine: EngineHarness,
) -> None:
    """The dispatcher creates no more runs than its in-process worker takes: the rest of a
    storm waits in the inbox, pending, not as Scheduled runs in Prefect, whose every waiting
    run made each follow read, recovery pass and poll dearer; all of it still runs."""
    from hookline.engine.follow import _LIVE, read_runs

    async def live_in_prefect(entries: list[InboxEntry]) -> int:
        runs = [UUID(r) for e in entries for r in e.flow_runs.values()]
        return len(await read_runs(engine.client, runs, _LIVE))

    worker = engine.worker
    saved = worker.handoff_backlog
    worker.handoff_backlog = 3 - worker.limit  # room for 3 runs in all
    try:
        waited, peak = await _storm_through(engine, live_in_prefect)
    finally:
        worker.handoff_backlog = saved
    assert waited, "the storm never waited in the inbox"
    assert 1 <= peak <= 3, f"{peak} runs live in Prefect for a worker with room for 3"


async def test_a_separate_dispatcher_keeps_few_runs_waiting_for_workers(
    engine: EngineHarness,
) -> None:
    """`hookline dispatch` (no worker in its process) creates no more runs than
    `max_waiting` that no worker has claimed yet: the rest of a storm waits in the inbox,
    and the workers' polls, not a handover, take them; all of it runs."""

    async def unclaimed(entries: list[InboxEntry]) -> int:
        runs = {r for e in entries for r in e.flow_runs.values()}
        return len(runs - (await engine.inbox.run_claims(runs)).keys())

    dispatcher = engine.dispatcher
    dispatcher.on_created = dispatcher.handoff_room = None  # as a dispatcher of its own
    dispatcher.max_waiting = 3
    try:
        waited, peak = await _storm_through(engine, unclaimed)
    finally:
        dispatcher.max_waiting = 100
        dispatcher.hand_to(engine.worker)
    assert waited, "the storm never waited in the inbox"
    assert 1 <= peak <= 3, f"{peak} runs waited for a worker to claim them, max_waiting 3"
    assert dispatcher.waiting_runs == set()  # all claimed, or their events settled


async def test_a_restarted_dispatcher_counts_the_runs_left_waiting_before_it(
    engine: EngineHarness,
) -> None:
    """A separate dispatcher restarted in a storm finds the runs its previous process created
    that no worker has claimed yet, and creates no more than `max_waiting` on top of them."""
    dispatcher = engine.dispatcher
    real_room = dispatcher.handoff_room
    dispatcher.handoff_room = None  # as a dispatcher of its own
    dispatcher.max_waiting = 3
    try:
        with runs_held_in_the_pool(engine):
            dispatcher.on_created = None  # no worker in its process: it counts its runs
            held = [await engine.put(sample(current_status="degraded")) for _ in range(3)]
            deadline = time.monotonic() + 10
            while len(dispatcher.waiting_runs) < 3:  # 3 runs nobody claims
                assert time.monotonic() < deadline, dispatcher.waiting_runs
                await asyncio.sleep(0.05)
            left = set(dispatcher.waiting_runs)
            # the restart: a new process, which knew none of them
            restarted = dataclasses.replace(dispatcher, waiting_runs=set())
            later = [await engine.put(sample(current_status="degraded")) for _ in range(2)]
            await asyncio.sleep(0.3)  # both due; the running dispatcher has no room for them
            assert await restarted.dispatch_once() == 0  # 3 already wait: no room
            assert restarted.waiting_runs == left
            for entry_id in later:
                entry = await engine.inbox.get(entry_id)
                assert entry is not None and entry.status == "pending"
        for entry_id in held + later:  # the worker polls again, and all five run
            assert (await engine.wait_final(entry_id)).status == "done"
    finally:
        dispatcher.max_waiting = 100
        dispatcher.handoff_room = real_room
        dispatcher.hand_to(engine.worker)


async def test_a_run_whose_event_settled_unclaimed_stops_counting_as_waiting(
    engine: EngineHarness,
) -> None:
    # a run cancelled in the UI while Scheduled is never claimed: once its event is no longer
    # in flight, the next follow cycle stops counting it against max_waiting
    gone = str(uuid4())
    engine.dispatcher.waiting_runs.add(gone)
    deadline = time.monotonic() + 5
    while gone in engine.dispatcher.waiting_runs and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert gone not in engine.dispatcher.waiting_runs


async def test_a_storm_waits_in_the_inbox_beyond_max_in_flight(engine: EngineHarness) -> None:
    engine.dispatcher.max_in_flight = 2
    try:
        # five events, none of whose runs can end while held: two go to Prefect, three wait
        with runs_held_in_the_pool(engine) as created:
            ids = await _put_held(engine, created, 5, runs=2)
            await asyncio.sleep(1.5)  # several dispatch and follow cycles: no third run
            assert len(created) == 2
            counts = await engine.inbox.counts()
            assert (counts.get("dispatched"), counts.get("pending")) == (2, 3)
        # runs end, room frees, the rest go out in turn
        for entry_id in ids:
            assert (await engine.wait_final(entry_id)).status == "done"
        assert engine.dispatcher.in_flight == 0
    finally:
        engine.dispatcher.max_in_flight = 1000


async def test_a_worker_polls_only_once_its_backlog_runs_low(engine: EngineHarness) -> None:
    """While more than half its handoff backlog waits for a slot, a worker does not poll: in a
    burst a poll would take the runs another engine's dispatcher handed to its own worker (to
    lose their claims later), and every poll costs the Prefect server ~25 ms."""
    from prefect.client.schemas.actions import WorkPoolCreate

    from hookline.engine.worker import Worker

    pool = f"hookline-backlog-{time.monotonic_ns()}"
    await engine.client.create_work_pool(WorkPoolCreate(name=pool, type="hookline"))
    worker = Worker(engine.client, work_pool=pool, inbox=engine.inbox, limit=2, handoff_backlog=4)
    loop = asyncio.get_running_loop()
    held = {f"run-{i}": loop.create_future() for i in range(2 + 3)}  # 2 slots, 3 waiting
    worker._inflight.update(held)  # type: ignore[arg-type]
    try:
        with prefect_requests(engine.client, "/get_scheduled_flow_runs") as polls:
            assert await worker.poll_once() == 0
            assert polls == []  # 3 of 4 backlog places taken: no poll
            worker._inflight.pop("run-4")  # 2 of 4: low
            assert await worker.poll_once() == 0  # the pool is empty
            assert len(polls) == 1
    finally:
        for f in held.values():
            f.cancel()
