"""Timers in the inbox (`Inbox.start_timer`, `cancel_timer`): due at their time, replaced,
cancelled, never fired once cancelled, kept across restarts, claimed once by several
claimers, and not counted as waiting work. Both backends, with an injected clock."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hookline.inbox import (
    TIMER_SOURCE,
    Inbox,
    InboxEntry,
    PostgresInbox,
    Sequenced,
    SQLiteInbox,
)
from hookline.retention import PRUNABLE

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0


def advance(inbox: Inbox, seconds: float) -> None:
    inbox.test_clock[0] += seconds  # type: ignore[attr-defined]


def now(inbox: Inbox) -> float:
    return float(inbox.test_clock[0])  # type: ignore[attr-defined]


async def start(inbox: Inbox, key: str, after: float, eid: str | None = None) -> tuple[int, bool]:
    event_id = eid or f"timer:{key}:{now(inbox)}"
    body = json.dumps({"event_id": event_id, "event_type": "t.fired", "data": {"k": key}})
    return await inbox.start_timer(key, event_id, "t.fired", body.encode(), now(inbox) + after)


async def claimed(inbox: Inbox, **kw: object) -> list[InboxEntry]:
    return await inbox.claim(10, lease_seconds=30, **kw)  # type: ignore[arg-type]


async def test_a_timer_is_claimable_at_its_due_time_not_before(any_inbox: Inbox) -> None:
    entry_id, replaced = await start(any_inbox, "escalate:svc1", 900)
    assert not replaced
    e = await any_inbox.get(entry_id)
    assert e is not None
    assert (e.source, e.event_type, e.status, e.timer_key) == (
        TIMER_SOURCE,
        "t.fired",
        "pending",
        "escalate:svc1",
    )
    assert e.event_time is not None and e.event_time.timestamp() == T0 + 900
    assert e.scheduled(now(any_inbox))
    assert await claimed(any_inbox) == []
    advance(any_inbox, 899)
    assert await claimed(any_inbox) == []
    advance(any_inbox, 1)
    [fired] = await claimed(any_inbox)
    assert fired.id == entry_id and not fired.scheduled(now(any_inbox))


async def test_a_scheduled_timer_is_not_waiting_work(any_inbox: Inbox) -> None:
    await start(any_inbox, "later", 900)
    await any_inbox.put("s", "e1", "t", b"{}", {}, None)
    advance(any_inbox, 120)
    counts = await any_inbox.counts()
    assert (counts["pending"], counts["scheduled"]) == (1, 1)
    assert (await any_inbox.oldest())["pending"] == 120.0  # the event, not the timer
    [e] = await claimed(any_inbox)
    await any_inbox.mark_done(e.id)
    assert (await any_inbox.oldest())["pending"] == 0.0
    advance(any_inbox, 790)  # due 10 s ago: waiting since its due time, not its start
    counts = await any_inbox.counts()
    assert (counts["pending"], counts["scheduled"]) == (1, 0)
    assert (await any_inbox.oldest())["pending"] == 10.0


async def test_a_timer_put_off_by_a_failed_dispatch_is_waiting_work(any_inbox: Inbox) -> None:
    entry_id, _ = await start(any_inbox, "k", 60)
    advance(any_inbox, 60)
    [e] = await claimed(any_inbox)
    assert await any_inbox.retry_later(e.id, "Prefect API unavailable", 30)
    advance(any_inbox, 5)
    counts = await any_inbox.counts()
    assert (counts["pending"], counts["scheduled"]) == (1, 0)
    assert (await any_inbox.oldest())["pending"] == 5.0
    got = await any_inbox.get(entry_id)
    assert got is not None and not got.scheduled(now(any_inbox))


async def test_starting_a_key_again_replaces_its_timer(any_inbox: Inbox) -> None:
    first, _ = await start(any_inbox, "k", 60, eid="timer:k:1")
    advance(any_inbox, 30)
    second, replaced = await start(any_inbox, "k", 60, eid="timer:k:2")
    assert replaced and second != first
    old = await any_inbox.get(first)
    assert old is not None
    assert (old.status, old.note) == ("cancelled", "replaced by hookline:timer:k:2")
    advance(any_inbox, 30)  # the first one's due time
    assert await claimed(any_inbox) == []
    advance(any_inbox, 30)
    assert [e.id for e in await claimed(any_inbox)] == [second]
    other, replaced = await start(any_inbox, "other", 60)
    assert not replaced  # keys are independent


async def test_a_cancelled_timer_never_fires(any_inbox: Inbox) -> None:
    entry_id, _ = await start(any_inbox, "k", 60)
    assert await any_inbox.cancel_timer("k")
    assert not await any_inbox.cancel_timer("k")  # nothing pending any more
    assert not await any_inbox.cancel_timer("never-started")
    e = await any_inbox.get(entry_id)
    assert e is not None and (e.status, e.note) == ("cancelled", "cancelled by timer.cancel")
    advance(any_inbox, 3600)
    assert await claimed(any_inbox) == []
    assert (await any_inbox.counts())["cancelled"] == 1


async def test_cancel_loses_against_a_claimed_timer(any_inbox: Inbox) -> None:
    """A claimed timer is firing: its runs are being created. A cancel then says False and
    changes nothing, even once the lease expired, so the dispatcher's marks still apply."""
    entry_id, _ = await start(any_inbox, "k", 60)
    advance(any_inbox, 60)
    [e] = await claimed(any_inbox)
    assert not await any_inbox.cancel_timer("k")
    advance(any_inbox, 31)  # past the lease: a slow dispatcher still creates its runs
    assert not await any_inbox.cancel_timer("k")
    # a restart of the key while it fires leaves the firing one alone
    _, replaced = await start(any_inbox, "k", 60, eid="timer:k:next")
    assert not replaced
    assert await any_inbox.mark_dispatched(e.id, {"r": "run-1"}, expect="pending")
    got = await any_inbox.get(entry_id)
    assert got is not None and got.status == "dispatched"
    assert await any_inbox.cancel_timer("k")  # the new one


async def test_a_cancelled_timer_leaves_its_lane(any_inbox: Inbox) -> None:
    """A far-future timer in a lane blocks nobody, and a cancelled one leaves the lane."""

    def one_lane(entry: InboxEntry) -> Sequenced:
        return Sequenced(lanes=("svc",))

    timer, _ = await start(any_inbox, "k", 900)
    _, ev = await any_inbox.put("s", "e1", "t", b"{}", {}, None)
    assert [e.id for e in await claimed(any_inbox, sequencer=one_lane)] == [ev]
    await any_inbox.mark_done(ev)
    assert await any_inbox.cancel_timer("k")
    advance(any_inbox, 1000)
    _, later = await any_inbox.put("s", "e2", "t", b"{}", {}, None)
    assert [e.id for e in await claimed(any_inbox, sequencer=one_lane)] == [later]
    e = await any_inbox.get(timer)
    assert e is not None and e.status == "cancelled"


async def test_cancelled_timers_are_pruned(any_inbox: Inbox) -> None:
    from datetime import timedelta

    await start(any_inbox, "k", 60)
    await any_inbox.cancel_timer("k")
    await start(any_inbox, "k2", 10**8)  # pending: never pruned
    advance(any_inbox, 31 * 86400)
    assert "cancelled" in PRUNABLE
    assert await any_inbox.prune(timedelta(days=30), statuses=PRUNABLE) == 1
    assert (await any_inbox.counts())["scheduled"] == 1


# -- restarts and several claimers -------------------------------------------------------------


async def _survives_restart(open_again: Callable[[list[float]], Inbox], clock: list[float]) -> None:
    first = open_again(clock)
    await first.open()
    entry_id, _ = await first.start_timer("k", "timer:k:1", "t.fired", b"{}", clock[0] + 60)
    await first.start_timer("gone", "timer:gone:1", "t.fired", b"{}", clock[0] + 60)
    await first.cancel_timer("gone")
    await first.close()
    second = open_again(clock)
    await second.open()
    try:
        assert await second.claim(10, lease_seconds=30) == []
        clock[0] += 60
        assert [e.id for e in await second.claim(10, lease_seconds=30)] == [entry_id]
    finally:
        await second.close()


async def test_timers_survive_a_restart_sqlite(tmp_path: Path) -> None:
    clock = [T0]
    path = tmp_path / "inbox.sqlite3"
    await _survives_restart(lambda c: SQLiteInbox(path, clock=lambda: c[0]), clock)


@pytest.mark.postgres
async def test_timers_survive_a_restart_postgres(pg_schema: str) -> None:
    from tests.receiver.conftest import PG_DSN

    clock = [T0]
    await _survives_restart(
        lambda c: PostgresInbox(PG_DSN, schema=pg_schema, clock=lambda: c[0]), clock
    )


@pytest.mark.postgres
async def test_two_claimers_on_postgres_take_a_timer_once(pg_schema: str) -> None:
    from tests.receiver.conftest import PG_DSN

    clock = [T0]
    a = PostgresInbox(PG_DSN, schema=pg_schema, clock=lambda: clock[0])
    b = PostgresInbox(PG_DSN, schema=pg_schema, clock=lambda: clock[0])
    await a.open()
    await b.open()
    try:
        ids = [
            (await a.start_timer(f"k{i}", f"timer:k{i}:1", "t", b"{}", T0 + 60))[0]
            for i in range(40)
        ]
        clock[0] += 60
        got: list[int] = []

        async def claimer(inbox: Inbox) -> None:
            while True:
                batch = await inbox.claim(3, lease_seconds=30)
                if not batch:
                    return
                got.extend(e.id for e in batch)
                await asyncio.sleep(0)

        await asyncio.gather(claimer(a), claimer(b), claimer(a), claimer(b))
        assert sorted(got) == sorted(ids)  # each once
    finally:
        await a.close()
        await b.close()


@pytest.mark.postgres
async def test_concurrent_starts_of_one_key_leave_one_timer_postgres(pg_schema: str) -> None:
    from tests.receiver.conftest import PG_DSN

    clock = [T0]
    inbox = PostgresInbox(PG_DSN, schema=pg_schema, clock=lambda: clock[0])
    await inbox.open()
    try:
        await asyncio.gather(
            *(inbox.start_timer("k", f"timer:k:{i}", "t", b"{}", T0 + 60) for i in range(20))
        )
        assert (await inbox.counts())["scheduled"] == 1
        assert (await inbox.counts())["cancelled"] == 19
    finally:
        await inbox.close()


async def test_an_older_sqlite_inbox_gets_the_timer_column(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    async with SQLiteInbox(path) as inbox:
        _, a = await inbox.put("s", "a", "t", b"{}", {}, None)
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX inbox_timer")
    conn.execute("ALTER TABLE inbox DROP COLUMN timer_key")  # as the previous version left it
    conn.commit()
    conn.close()
    async with SQLiteInbox(path) as inbox:
        old = await inbox.get(a)
        assert old is not None and old.timer_key is None
        entry_id, _ = await inbox.start_timer("k", "timer:k:1", "t", b"{}", 1.0)
        new = await inbox.get(entry_id)
        assert new is not None and new.timer_key == "k"


# -- the receiver never takes timer events from outside ----------------------------------------


async def test_post_to_the_hookline_source_is_not_found_and_stores_nothing(harness: Any) -> None:
    from tests.receiver.conftest import encode, event, signed

    body = encode(event(event_type="outage.escalate"))
    r = await harness.client.post("/webhooks/hookline", content=body, headers=signed(body))
    assert r.status_code == 404
    assert await harness.inbox.list() == []


def test_a_source_named_hookline_is_refused_at_start_up(tmp_path: Path) -> None:
    from hookline.config import CoreSettings, HooklineConfig
    from hookline.errors import ConfigError
    from hookline.receiver.app import create_app

    cfg = HooklineConfig(sources={"hookline": {"scheme": "github", "secrets": ["x" * 32]}})
    cfg.path = tmp_path / "hookline.yaml"
    with pytest.raises(ConfigError, match=r"sources\.hookline: 'hookline' is reserved for timer"):
        create_app(cfg, settings=CoreSettings(home=tmp_path), environ={})
