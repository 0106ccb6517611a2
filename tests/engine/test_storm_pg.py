"""A storm on PostgreSQL with two dispatchers, one of them restarted in the middle: every
lane still runs one event at a time in event-time order, and late events are not run.
(The in-process engine against the session's real Prefect server; the inbox in a fresh
PostgreSQL schema; each dispatcher has its own connection pool, as separate processes do.)"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from hookline.config import CoreSettings
from hookline.engine.dispatcher import Dispatcher
from hookline.inbox import open_inbox
from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness, running_pg_engine
from vendor_fakes import FakeVendors

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.anyio]

LANES = 3
PER_LANE = 12


@pytest.fixture
async def pg_engine(
    prefect_api: str, tmp_path: Path, recipes_dir: Path, fakes: FakeVendors
) -> AsyncIterator[EngineHarness]:
    async with running_pg_engine(
        prefect_api,
        tmp_path / "home",
        str(recipes_dir),
        {**os.environ, **fakes.env},
        schema_prefix="hl_storm",
    ) as harness:
        yield harness


async def test_two_dispatchers_keep_every_lane_in_order_through_a_restart(
    pg_engine: EngineHarness, fakes: FakeVendors, tmp_path: Path
) -> None:
    engine = pg_engine
    settings = CoreSettings(
        home=tmp_path / "home",
        database_url=engine.inbox.dsn + f"?schema={engine.inbox.schema}",  # type: ignore[attr-defined]
    )

    async def second_dispatcher(stop: asyncio.Event) -> None:
        inbox = await open_inbox(settings)
        try:
            d = Dispatcher(
                inbox,
                engine.recipes,
                engine.client,
                engine.dispatcher.deployment_id,
                on_created=engine.worker.submit,
                poll_seconds=0.05,
                lease_seconds=5.0,
            )
            engine.worker.on_finished = _both(engine.dispatcher.notify_finished, d.notify_finished)
            await d.run(stop)
        finally:
            await inbox.close()

    # a storm: LANES maintenance ids, PER_LANE events each, sent in shuffled order
    rng = random.Random(11)
    events = [(lane, n) for lane in range(LANES) for n in range(PER_LANE)]
    rng.shuffle(events)
    stop_first = asyncio.Event()
    first = asyncio.create_task(second_dispatcher(stop_first))
    ids: dict[int, tuple[int, int]] = {}
    for i, (lane, n) in enumerate(events):
        payload = sample(
            "service.maintenance.scheduled", maintenance_id=f"mnt_{lane}", title=f"{lane}:{n:02d}"
        )
        payload["timestamp"] = f"2024-01-10T12:{n:02d}:00Z"
        ids[await engine.put(payload)] = (lane, n)
        if i == len(events) // 2:  # restart the second dispatcher mid-storm
            stop_first.set()
            await first
            stop_first = asyncio.Event()
            first = asyncio.create_task(second_dispatcher(stop_first))
        await asyncio.sleep(0.02)
    try:
        entries = {i: await engine.wait_final(i, timeout=120) for i in ids}
    finally:
        stop_first.set()
        await first

    ran: dict[int, list[int]] = {lane: [] for lane in range(LANES)}
    for m in fakes.slack.messages:
        lane, n = m["text"].split(":")
        ran[int(lane)].append(int(n))
    late = {ids[i] for i, e in entries.items() if e.status == "late"}
    done = {ids[i] for i, e in entries.items() if e.status == "done"}
    assert len(late) + len(done) == len(ids), {e.status for e in entries.values()}
    for lane, seen in ran.items():
        assert seen == sorted(seen), f"lane {lane} ran out of order: {seen}"
        assert len(seen) == len(set(seen)), f"lane {lane} ran an event twice: {seen}"
        assert {(lane, n) for n in seen} == {x for x in done if x[0] == lane}
    # ... and one at a time: a lane's runs never overlap
    for lane in range(LANES):
        run_ids = [
            UUID(e.flow_runs["ordered"])
            for i, e in entries.items()
            if ids[i][0] == lane and e.status == "done"
        ]
        runs = await engine.client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids))
        )
        spans = sorted((r.start_time, r.end_time) for r in runs)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False)), lane


def _both(a, b):  # type: ignore[no-untyped-def]
    def call(flow_run: object, final: object = None) -> None:
        a(flow_run, final)
        b(flow_run, final)

    return call
