"""Storms through the in-process engine and a real Prefect server: a burst of one key runs
once for its latest event (coalesce), the others are superseded and visible, and a lane's
next event starts right after the previous run (no follow cycle in between)."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID

import pytest
from click.testing import CliRunner
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from tests.engine.conftest import sample
from tests.engine.harness import EngineHarness
from vendor_fakes import FakeVendors

pytestmark = [pytest.mark.slow, pytest.mark.anyio]


def alert(alert_id: str, severity: str, second: int) -> dict[str, Any]:
    payload = sample("security.alert.created", alert_id=alert_id, severity=severity)
    payload["timestamp"] = f"2024-01-15T20:30:{second:02d}Z"
    return payload


async def test_a_burst_runs_once_for_the_latest_event(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    severities = ["low", "high", "critical", "high", "low", "medium"]
    ids = []
    for i, sev in enumerate(severities):
        ids.append(await engine.put(alert("sec_burst", sev, 10 + i)))
        await asyncio.sleep(0.1)
    other = await engine.put(alert("sec_other", "low", 5))  # another key: its own run
    latest = await engine.wait_final(ids[-1], timeout=30)
    assert latest.status == "done", latest.last_error
    assert (await engine.wait_final(other, timeout=30)).status == "done"

    texts = sorted(m["text"] for m in fakes.slack.messages)
    assert texts == [
        "low after 1: low",
        "medium after 6: low,high,critical,high,low,medium",
    ]
    covered = [await engine.inbox.get(i) for i in ids[:-1]]
    assert {(e.status, e.superseded_by) for e in covered if e} == {("superseded", ids[-1])}
    assert all(not e.flow_runs for e in covered if e)  # no run of their own

    # the run's artifact lists what it covered
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    artifacts = await engine.client.read_artifacts(
        artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[UUID(latest.flow_runs["flapping"])])
        )
    )
    [story] = [a for a in artifacts if a.type == "markdown"]
    assert "covers 5 earlier event(s)" in story.data
    # Markdown-escaped: evt\_1 renders as evt_1
    assert all(e.event_id.replace("_", "\\_") in story.data for e in covered if e)


async def test_a_burst_that_keeps_going_runs_at_max_wait(
    engine: EngineHarness, fakes: FakeVendors
) -> None:
    started = time.monotonic()
    second = 0
    while time.monotonic() - started < 4.5:  # an event every 0.4 s: never 1 s of quiet
        await engine.put(alert("sec_flap", "high" if second % 2 else "low", second))
        second += 1
        await asyncio.sleep(0.4)
        if fakes.slack.messages:
            break
    assert fakes.slack.messages, "max_wait (3 s) passed without a run"
    first_run_after = time.monotonic() - started
    assert 2.5 < first_run_after < 4.5


async def test_superseded_events_are_listed_and_replayable(
    engine: EngineHarness, fakes: FakeVendors, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from hookline.cli import main
    from hookline.config import get_settings

    ids = [await engine.put(alert("sec_listed", sev, s)) for s, sev in enumerate(["low", "high"])]
    assert (await engine.wait_final(ids[-1], timeout=30)).status == "done"
    first = await engine.inbox.get(ids[0])
    assert first is not None and first.status == "superseded"

    monkeypatch.setenv("HOOKLINE_HOME", str(engine.runtime.inbox.path.parent))  # type: ignore[attr-defined]
    get_settings.cache_clear()
    try:
        # in a thread: the command runs its own event loop
        result = await asyncio.to_thread(
            CliRunner().invoke, main, ["events", "--json", "--limit", "100"]
        )
        assert result.exit_code == 0, result.output
        out = result.output
    finally:
        get_settings.cache_clear()
    lines = {d["event_id"]: d for d in map(json.loads, out.splitlines())}
    latest = await engine.inbox.get(ids[-1])
    assert latest is not None
    assert lines[first.event_id]["status"] == "superseded"
    assert lines[first.event_id]["superseded_by"] == latest.event_id
    assert lines[latest.event_id]["runs"]["flapping"]["id"] == latest.flow_runs["flapping"]
    assert set(lines[latest.event_id]) >= {
        "event_id",
        "source",
        "event_type",
        "status",
        "runs",
        "superseded_by",
    }

    await engine.inbox.requeue(first.id)  # replayed by hand: it runs on its own
    engine.dispatcher.notify()
    for _ in range(100):
        again = await engine.inbox.get(first.id)
        if again is not None and again.status in ("done", "failed"):
            break
        await asyncio.sleep(0.1)
    assert again is not None and again.status == "done"
    assert sorted(m["text"] for m in fakes.slack.messages) == [
        "high after 2: low,high",
        "low after 1: low",
    ]


async def test_a_lanes_next_event_starts_right_after_the_previous_run(
    engine: EngineHarness,
) -> None:
    """Prompt hand-off: the worker tells the dispatcher a run ended."""
    engine.dispatcher.follow_seconds = 30.0  # only the hand-off can be prompt
    engine.dispatcher._next_follow = time.time() + 30
    engine.dispatcher.poll_seconds = 0.05
    ids = []
    for n in range(4):
        payload = sample("service.maintenance.scheduled", title=f"m{n}", maintenance_id="mnt_x")
        payload["timestamp"] = f"2024-01-10T12:00:0{n}Z"
        ids.append(await engine.put(payload))
    entries = [await engine.wait_final(i, timeout=30) for i in ids]
    runs = await engine.client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[UUID(e.flow_runs["ordered"]) for e in entries])
        )
    )
    spans = sorted((r.start_time, r.end_time) for r in runs)
    gaps = [(b[0] - a[1]).total_seconds() for a, b in zip(spans, spans[1:], strict=False)]
    assert all(0 <= g < 0.5 for g in gaps), gaps
