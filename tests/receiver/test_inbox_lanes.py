"""Lanes in the inbox (order_by): one event at a time per key, in event-time order, across
claims, leases and several claimers; late arrivals; run claims. Both backends."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from hookline.inbox import Inbox, InboxEntry, Sequenced

pytestmark = pytest.mark.anyio

T0 = datetime.fromtimestamp(1_700_000_000, UTC)


def by_service(entry: InboxEntry) -> Sequenced:
    """The shipped outage recipe's lane: the service id; `skip` events of no service."""
    data = json.loads(entry.body)
    if entry.event_type == "skip":
        return Sequenced()
    return Sequenced(lanes=(data["service"],), skip_if_late=data.get("late", "skip") == "skip")


async def put(inbox: Inbox, eid: str, service: str, t: float, **extra: str) -> int:
    body = json.dumps({"service": service, **extra}).encode()
    _, entry_id = await inbox.put("s", eid, "status", body, {}, T0 + timedelta(seconds=t))
    return entry_id


async def claim(inbox: Inbox, n: int = 50) -> list[str]:
    return [e.event_id for e in await inbox.claim(n, lease_seconds=30, sequencer=by_service)]


async def finish(inbox: Inbox, event_ids: list[str]) -> None:
    for eid in event_ids:
        entry = await inbox.find("s", eid)
        assert entry is not None
        await inbox.mark_dispatched(entry.id, {"r": f"run-{eid}"})
        assert await inbox.mark_done(entry.id, expect="dispatched")


async def test_one_head_per_lane_in_event_time_order(any_inbox: Inbox) -> None:
    # arrival order differs from event order: a2 (t=2) arrives before a1 (t=1)
    await put(any_inbox, "a2", "A", 2)
    await put(any_inbox, "a1", "A", 1)
    await put(any_inbox, "b1", "B", 1)
    await put(any_inbox, "a3", "A", 3)
    await any_inbox.put("s", "free", "skip", b"{}", {}, T0)  # in no lane
    assert sorted(await claim(any_inbox)) == ["a1", "b1", "free"]
    assert await claim(any_inbox) == []  # a2 waits for a1, though a1 is only leased
    await finish(any_inbox, ["a1"])
    assert await claim(any_inbox) == ["a2"]
    # a failed event leaves its lane too: it is final until replayed by hand
    a2 = await any_inbox.find("s", "a2")
    assert a2 is not None and await any_inbox.mark_failed(a2.id, "boom", expect="pending")
    assert await claim(any_inbox) == ["a3"]


async def test_retry_later_keeps_the_lane(any_inbox: Inbox) -> None:
    await put(any_inbox, "a1", "A", 1)
    await put(any_inbox, "a2", "A", 2)
    assert await claim(any_inbox) == ["a1"]
    a1 = await any_inbox.find("s", "a1")
    assert a1 is not None
    await any_inbox.retry_later(a1.id, "Prefect down", 60)
    assert await claim(any_inbox) == []  # a2 may not overtake a1 while a1 waits
    any_inbox.test_clock[0] += 61  # type: ignore[attr-defined]
    assert await claim(any_inbox) == ["a1"]


async def test_lease_expiry_does_not_open_the_lane(any_inbox: Inbox) -> None:
    await put(any_inbox, "a1", "A", 1)
    await put(any_inbox, "a2", "A", 2)
    assert await claim(any_inbox) == ["a1"]
    any_inbox.test_clock[0] += 31  # the claimer died: a1 comes back, a2 still waits
    assert await claim(any_inbox) == ["a1"]


async def test_late_arrival_is_recorded_not_run_and_replayable(any_inbox: Inbox) -> None:
    await put(any_inbox, "a5", "A", 5)
    assert await claim(any_inbox) == ["a5"]
    late_id = await put(any_inbox, "a3", "A", 3)  # older than what already ran
    run_anyway = await put(any_inbox, "a4", "A", 4, late="run")
    assert await claim(any_inbox) == []
    late = await any_inbox.get(late_id)
    assert late is not None and late.status == "late"
    assert late.last_error is not None and "hookline replay a3" in late.last_error
    assert [e.event_id for e in await any_inbox.list(status="late")] == ["a3"]
    assert (await any_inbox.counts())["late"] == 1
    # the recipe that asked for late events to run gets it, after the lane frees
    await finish(any_inbox, ["a5"])
    assert await claim(any_inbox) == ["a4"]
    await finish(any_inbox, ["a4"])
    # a replay by hand runs it (it is never late again)
    await any_inbox.requeue(late_id)
    assert await claim(any_inbox) == ["a3"]
    entry = await any_inbox.get(run_anyway)
    assert entry is not None and entry.status == "done"


async def test_several_claimers_never_run_two_of_a_lane(any_inbox: Inbox) -> None:
    """A storm over 5 lanes, claimed by 4 concurrent claimers; each round finishes what was
    claimed. Every lane runs strictly in event-time order and one at a time."""
    rng = random.Random(7)
    times = list(range(100))
    rng.shuffle(times)  # arrival order is not event order
    for i, t in enumerate(times):
        await put(any_inbox, f"e{i}", f"svc{t % 5}", t)
    ran: dict[str, list[int]] = {}
    while True:
        batches = await asyncio.gather(
            *(any_inbox.claim(7, lease_seconds=30, sequencer=by_service) for _ in range(4))
        )
        claimed = [e for b in batches for e in b]
        if not claimed:
            break
        lanes = [json.loads(e.body)["service"] for e in claimed]
        assert len(lanes) == len(set(lanes)), "two events of one lane claimed at once"
        for e in claimed:
            assert e.event_time is not None
            ran.setdefault(json.loads(e.body)["service"], []).append(
                int((e.event_time - T0).total_seconds())
            )
        await finish(any_inbox, [e.event_id for e in claimed])
    late = await any_inbox.list(status="late", limit=1000)
    runs = sum(len(v) for v in ran.values())
    assert runs + len(late) == 100
    for service, seen in ran.items():
        assert seen == sorted(seen), f"{service} ran out of order: {seen}"


async def test_expect_makes_transitions_happen_once(any_inbox: Inbox) -> None:
    entry_id = await put(any_inbox, "a1", "A", 1)
    await any_inbox.claim(10, lease_seconds=30)
    assert await any_inbox.mark_dispatched(entry_id, {"r": "run"}, expect="pending")
    # two dispatchers following the same stuck run: only one resends it
    results = await asyncio.gather(
        *(any_inbox.retry_later(entry_id, "worker died", 0, expect="dispatched") for _ in range(2))
    )
    assert sorted(results) == [False, True]
    entry = await any_inbox.get(entry_id)
    assert entry is not None and entry.attempts == 1
    assert not await any_inbox.mark_done(entry_id, expect="dispatched")


async def test_dispatched_pages_oldest_first(any_inbox: Inbox) -> None:
    ids = [await put(any_inbox, f"e{i}", "A", i) for i in range(7)]
    for i in ids:
        await any_inbox.mark_dispatched(i, {"r": f"run-{i}"})
    first = await any_inbox.dispatched(limit=3)
    assert [e.id for e in first] == ids[:3]
    rest = await any_inbox.dispatched(after_id=first[-1].id, limit=100)
    assert [e.id for e in rest] == ids[3:]


async def test_a_scheduled_state_is_claimed_once(any_inbox: Inbox) -> None:
    wins = await asyncio.gather(
        *(any_inbox.claim_run("run-1", "state-1", f"w{i}") for i in range(5))
    )
    assert wins.count(True) == 1
    # a Retry from the UI schedules the run again: a new state, a new claim
    assert await any_inbox.claim_run("run-1", "state-2", "w9")
    assert await any_inbox.run_claims(["run-1", "run-2"]) == {"run-1": "w9"}


async def test_oldest_shows_an_event_stuck_in_dispatched(any_inbox: Inbox) -> None:
    assert await any_inbox.oldest() == {"pending": 0.0, "dispatched": 0.0}
    stuck = await put(any_inbox, "a1", "A", 1)
    await any_inbox.mark_dispatched(stuck, {"r": "run-1"})
    any_inbox.test_clock[0] += 600  # type: ignore[attr-defined]
    await put(any_inbox, "b1", "B", 1)
    ages = await any_inbox.oldest()
    assert ages["dispatched"] == pytest.approx(600, abs=1)
    assert ages["pending"] == pytest.approx(0, abs=1)


def bursty(entry: InboxEntry) -> Sequenced:
    """A lane per service that also coalesces: quiet 10 s, at most 30 s."""
    service = json.loads(entry.body)["service"]
    return Sequenced(lanes=(service,), coalesce=service, quiet=10.0, max_wait=30.0)


async def claim_bursts(inbox: Inbox) -> list[str]:
    return [e.event_id for e in await inbox.claim(50, lease_seconds=30, sequencer=bursty)]


def tick(inbox: Inbox, seconds: float) -> None:
    inbox.test_clock[0] += seconds  # type: ignore[attr-defined]


async def test_a_burst_runs_once_for_its_latest_event_after_a_quiet_period(
    any_inbox: Inbox,
) -> None:
    ids = []
    for i, t in enumerate([3, 1, 4, 2, 5]):  # arrival order is not event order
        ids.append(await put(any_inbox, f"a{t}", "A", t, status=f"s{i}"))
        tick(any_inbox, 1)
    await put(any_inbox, "b1", "B", 1)
    assert await claim_bursts(any_inbox) == []  # nobody is quiet yet
    tick(any_inbox, 10)  # b1 and the last of the burst arrived 10 s ago
    assert await claim_bursts(any_inbox) == ["a5", "b1"]
    latest = await any_inbox.find("s", "a5")
    assert latest is not None
    covered = await any_inbox.covered(latest.id)
    assert [e.event_id for e in covered] == ["a1", "a2", "a3", "a4"]  # by event time
    assert {e.status for e in covered} == {"superseded"}
    assert {e.superseded_by for e in covered} == {latest.id}
    assert (await any_inbox.counts())["superseded"] == 4
    # an older event arriving now is late: a5 already ran
    await put(any_inbox, "a0", "A", 0)
    tick(any_inbox, 11)
    assert await claim_bursts(any_inbox) == []
    assert [e.event_id for e in await any_inbox.list(status="late")] == ["a0"]


async def test_a_burst_that_never_quiets_runs_after_max_wait(any_inbox: Inbox) -> None:
    claimed: list[str] = []
    for t in range(0, 40, 5):  # an event every 5 s: never 10 s of quiet
        await put(any_inbox, f"a{t}", "A", t)
        claimed += await claim_bursts(any_inbox)
        tick(any_inbox, 5)
    assert claimed == ["a30"]  # the first waited 30 s: the latest so far runs
    entry = await any_inbox.find("s", "a30")
    assert entry is not None
    assert len(await any_inbox.covered(entry.id)) == 6
    # the next burst waits for the run of this one (same lane), then runs on its own
    tick(any_inbox, 15)  # a35 is quiet now; a30 still runs (its lease holds)
    assert await claim_bursts(any_inbox) == []
    await finish(any_inbox, ["a30"])
    assert await claim_bursts(any_inbox) == ["a35"]


async def test_a_superseded_event_replayed_by_hand_runs_alone(any_inbox: Inbox) -> None:
    for t in (1, 2):
        await put(any_inbox, f"a{t}", "A", t)
    tick(any_inbox, 10)
    assert await claim_bursts(any_inbox) == ["a2"]
    await finish(any_inbox, ["a2"])
    a1 = await any_inbox.find("s", "a1")
    assert a1 is not None and a1.status == "superseded"
    await any_inbox.requeue(a1.id)
    assert await claim_bursts(any_inbox) == ["a1"]  # not late, not coalesced, not waiting
    again = await any_inbox.get(a1.id)
    assert again is not None and again.superseded_by is None
