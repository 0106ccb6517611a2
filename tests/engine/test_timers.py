"""Timers through the engine: a recipe step's `timer.start` fires, when due, an event of
source `hookline` that runs a second recipe (its vendor call made once); `timer.cancel`
before the due time fires nothing; with two dispatchers on PostgreSQL a timer makes one
flow run. The in-process engine against the session's real Prefect server."""

from __future__ import annotations

import asyncio
import os
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

from hookline.config import CoreSettings, HooklineConfig
from hookline.engine.dispatcher import Dispatcher
from hookline.inbox import TIMER_SOURCE, InboxEntry, open_inbox
from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness, running_engine, running_pg_engine
from vendor_fakes import FakeVendors
from vendor_fakes.slack import channel_id

pytestmark = pytest.mark.anyio

ARM = """
name: arm
on: service.status.changed
when: data.current_status in ['degraded', 'outage']
defaults: { retries: 0, timeout: 5s }
steps:
  - id: arm
    uses: timer.start
    with:
      key: "escalate:{{ data.service_id }}"
      after: "{{ data.escalate_after | default('1s') }}"
      event_type: outage.escalate
      data: { service_id: "{{ data.service_id }}" }
"""

DISARM = """
name: disarm
on: service.status.changed
when: data.current_status == 'operational'
steps:
  - id: disarm
    uses: timer.cancel
    with: { key: "escalate:{{ data.service_id }}" }
"""

ESCALATE = """
name: escalate
source: hookline
on: outage.escalate
steps:
  - id: page
    uses: slack.post_message
    with:
      channel: "#oncall"
      text: >-
        escalate {{ data.service_id }} (timer {{ event.timer.key }},
        started by {{ event.timer.started_by.recipe }})
"""


@pytest.fixture
def timer_recipes(tmp_path: Path) -> Path:
    d = tmp_path / "recipes"
    d.mkdir()
    for name, text in (("arm", ARM), ("disarm", DISARM), ("escalate", ESCALATE)):
        (d / f"{name}.yaml").write_text(textwrap.dedent(text))
    return d


@pytest.fixture
async def engine(
    prefect_api: str, tmp_path: Path, timer_recipes: Path, fakes: FakeVendors
) -> AsyncIterator[EngineHarness]:
    async with running_engine(
        prefect_api,
        tmp_path / "home",
        str(timer_recipes),
        HooklineConfig(env=[]),
        {**os.environ, **fakes.env},
    ) as harness:
        yield harness


def outage(service: str, status: str = "degraded", **data: Any) -> dict[str, Any]:
    return sample(service_id=service, current_status=status, **data)


async def timer_entry(engine: EngineHarness, armed: InboxEntry) -> InboxEntry:
    """The inbox entry of the timer the `arm` run of ``armed`` started."""
    steps = await engine.inbox.completed_steps(armed.source, armed.event_id, "arm")
    entry = await engine.inbox.find(TIMER_SOURCE, steps["arm"]["event_id"])
    assert entry is not None
    return entry


def pages(fakes: FakeVendors) -> list[str]:
    return [m["text"] for m in fakes.slack.messages if m["channel"] == channel_id("#oncall")]


async def test_a_started_timer_fires_a_hookline_event_that_runs_its_recipe_once(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    service = f"svc_{uuid.uuid4().hex[:8]}"
    armed = await engine.run(outage(service))
    assert armed.status == "done", armed.last_error
    timer = await timer_entry(engine, armed)
    assert timer.timer_key == f"escalate:{service}"
    fired = await engine.wait_final(timer.id, timeout=60)

    assert fired.status == "done", fired.last_error
    assert list(fired.flow_runs) == ["escalate"]
    assert pages(fakes) == [f"escalate {service} (timer escalate:{service}, started by arm)"]
    # tagged and named like any event's run, with source hookline
    runs = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"event-id:{timer.event_id}"]))
    )
    assert [str(r.id) for r in runs] == [fired.flow_runs["escalate"]]
    assert {"hookline", "source:hookline", "event:outage.escalate"} <= set(runs[0].tags)
    assert runs[0].name == f"escalate/{timer.event_id}"
    await asyncio.sleep(1.0)
    assert len(pages(fakes)) == 1  # once


async def test_cancel_before_due_fires_nothing(engine: EngineHarness, fakes: FakeVendors) -> None:
    service = f"svc_{uuid.uuid4().hex[:8]}"
    armed = await engine.run(outage(service, escalate_after="3s"))
    assert armed.status == "done", armed.last_error
    recovered = await engine.run(outage(service, "operational"))
    assert recovered.status == "done", recovered.last_error
    steps = await engine.inbox.completed_steps(recovered.source, recovered.event_id, "disarm")
    assert steps["disarm"] == {"key": f"escalate:{service}", "cancelled": True}

    timer = await timer_entry(engine, armed)
    assert (timer.status, timer.note) == ("cancelled", "cancelled by timer.cancel")
    await asyncio.sleep(4.0)  # past the due time, with the dispatcher polling throughout
    timer = await timer_entry(engine, armed)
    assert timer.status == "cancelled" and timer.flow_runs == {}
    assert pages(fakes) == []


async def test_starting_again_replaces_the_pending_timer(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    service = f"svc_{uuid.uuid4().hex[:8]}"
    first = await engine.run(outage(service, escalate_after="2s"))
    second = await engine.run(outage(service, "outage", escalate_after="2s"))
    old, new = await timer_entry(engine, first), await timer_entry(engine, second)
    assert old.status == "cancelled" and old.note == f"replaced by hookline:{new.event_id}"
    fired = await engine.wait_final(new.id, timeout=60)
    assert fired.status == "done", fired.last_error
    await asyncio.sleep(0.5)
    assert len(pages(fakes)) == 1


async def test_a_timer_survives_a_restart_of_the_engine(
    prefect_api: str, tmp_path: Path, timer_recipes: Path, fakes: FakeVendors
) -> None:
    service = f"svc_{uuid.uuid4().hex[:8]}"
    args = (prefect_api, tmp_path / "home", str(timer_recipes), HooklineConfig(env=[]))
    env = {**os.environ, **fakes.env}
    async with running_engine(*args, env) as first:
        armed = await first.run(outage(service, escalate_after="2s"))
        assert armed.status == "done", armed.last_error
        timer = await timer_entry(first, armed)
    assert timer.status == "pending" and pages(fakes) == []  # stopped before it was due
    await asyncio.sleep(2.5)  # due while nothing runs
    async with running_engine(*args, env) as second:
        fired = await second.wait_final(timer.id, timeout=60)
    assert fired.status == "done", fired.last_error
    assert pages(fakes) == [f"escalate {service} (timer escalate:{service}, started by arm)"]


# -- PostgreSQL, two dispatchers -----------------------------------------------------------------


@pytest.fixture
async def pg_engine(
    prefect_api: str, tmp_path: Path, timer_recipes: Path, fakes: FakeVendors
) -> AsyncIterator[EngineHarness]:
    async with running_pg_engine(
        prefect_api,
        tmp_path / "home",
        str(timer_recipes),
        {**os.environ, **fakes.env},
        schema_prefix="hl_timers",
    ) as harness:
        yield harness


@pytest.mark.postgres
async def test_two_dispatchers_on_postgres_fire_each_timer_once(
    pg_engine: EngineHarness, fakes: FakeVendors, tmp_path: Path
) -> None:
    engine = pg_engine
    settings = CoreSettings(
        home=tmp_path / "home",
        database_url=engine.inbox.dsn + f"?schema={engine.inbox.schema}",  # type: ignore[attr-defined]
    )
    stop = asyncio.Event()

    async def second_dispatcher() -> None:
        inbox = await open_inbox(settings)  # its own pool, as another process has
        try:
            d = Dispatcher(
                inbox,
                engine.recipes,
                engine.client,
                engine.dispatcher.deployment_id,
                on_created=engine.worker.submit,
                poll_seconds=0.02,
            )
            await d.run(stop)
        finally:
            await inbox.close()

    other = asyncio.create_task(second_dispatcher())
    try:
        services = [f"svc_{uuid.uuid4().hex[:8]}" for _ in range(4)]
        armed = [await engine.put(outage(s, escalate_after="1s")) for s in services]
        timers = []
        for entry_id in armed:
            entry = await engine.wait_final(entry_id)
            assert entry.status == "done", entry.last_error
            timers.append(await timer_entry(engine, entry))
        fired = [await engine.wait_final(t.id, timeout=60) for t in timers]
    finally:
        stop.set()
        await other
    assert [f.status for f in fired] == ["done"] * 4
    for t in timers:
        runs = await engine.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"event-id:{t.event_id}"]))
        )
        assert len(runs) == 1, t.event_id
    assert sorted(pages(fakes)) == sorted(
        f"escalate {s} (timer escalate:{s}, started by arm)" for s in services
    )


# -- hookline events -------------------------------------------------------------------------------


async def test_hookline_events_shows_scheduled_and_cancelled_timers(tmp_path: Path) -> None:
    import json

    from hookline.connectors.timer import DictTimerStore, start
    from hookline.engine import events as view
    from hookline.inbox import SQLiteInbox

    clock = [1_705_314_600.0]  # 2024-01-15T10:30:00Z
    store = DictTimerStore(clock=lambda: clock[0])
    out = start(
        store,
        key="escalate:svc_1",
        after="15m",
        event_type="outage.escalate",
        idempotency_key="solveforce:evt_1:outage:escalate",
    )
    timer = store.pending()["escalate:svc_1"]
    address = view.PrefectAddress(None, None)
    async with SQLiteInbox(tmp_path / "inbox.sqlite3", clock=lambda: clock[0]) as inbox:
        entry_id, _ = await inbox.start_timer(
            timer.key, timer.event_id, timer.event_type, timer.body, timer.due
        )
        e = await inbox.get(entry_id)
        assert e is not None
        clock[0] += 60
        lines = view.entry_lines(e, view.PrefectView(), address, None, now=clock[0])
        assert f"scheduled  hookline:{out['event_id']}  outage.escalate" in lines[0]
        assert lines[1] == "    timer escalate:svc_1 due 10:45:00 (in 14m)"
        line = view.entry_json(e, view.PrefectView(), address, None, now=clock[0])
        assert line["status"] == "scheduled"
        assert line["timer"]["started_by"]["recipe"] == "outage"
        detail = await view.load_detail(inbox, e)
        shown = "\n".join(view.detail_lines(detail, view.PrefectView(), address, [], now=clock[0]))
        assert "timer       escalate:svc_1 (after 15m)" in shown
        assert "started by  solveforce:evt_1 recipe outage" in shown
        assert json.loads(e.body)["timer"]["after"] == "15m"

        assert await inbox.cancel_timer("escalate:svc_1")
        e = await inbox.get(entry_id)
        assert e is not None
        lines = view.entry_lines(e, view.PrefectView(), address, None, now=clock[0])
        assert lines[0].split()[2] == "cancelled"
        assert lines[1:] == [
            "    timer escalate:svc_1 was due 2024-01-15 10:45:00",
            "    cancelled by timer.cancel",
        ]


async def test_hookline_events_status_scheduled_lists_the_timers_not_due(tmp_path: Path) -> None:
    import re
    import time

    from hookline.inbox import SQLiteInbox
    from tests.engine.test_events import cli

    async with SQLiteInbox(tmp_path / "inbox.sqlite3") as inbox:
        await inbox.start_timer("later", "timer:later:1", "t.fired", b"{}", time.time() + 900)
        await inbox.start_timer("gone", "timer:gone:1", "t.fired", b"{}", time.time() + 900)
        await inbox.cancel_timer("gone")
        await inbox.put("solveforce", "evt_waiting", "webhook.test", b"{}", {}, None)

    def listed(out: str) -> list[str]:
        return [line.split()[3] for line in out.splitlines() if not line.startswith(" ")]

    everything = await cli(tmp_path, "events", prefect_api=None)
    assert re.search(r"\n    timer later due \d\d:\d\d:\d\d \(in 1[45]m\)\n", everything.stdout)
    scheduled = await cli(tmp_path, "events", "--status", "scheduled", prefect_api=None)
    assert listed(scheduled.stdout) == ["hookline:timer:later:1"]
    assert " scheduled  hookline:timer:later:1" in scheduled.stdout
    pending = await cli(tmp_path, "events", "--status", "pending", prefect_api=None)
    assert listed(pending.stdout) == ["solveforce:evt_waiting"]
    cancelled = await cli(tmp_path, "events", "--status", "cancelled", prefect_api=None)
    assert listed(cancelled.stdout) == ["hookline:timer:gone:1"]
    assert "    cancelled by timer.cancel" in cancelled.stdout
