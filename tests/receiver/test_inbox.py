"""The inbox API on both backends (SQLite always; PostgreSQL when it is listening)."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hookline.config import CoreSettings
from hookline.errors import ConfigError
from hookline.inbox import Inbox, InboxError, PostgresInbox, SQLiteInbox, open_inbox

pytestmark = pytest.mark.anyio

T0 = datetime.fromtimestamp(1_700_000_000, UTC)


def advance(inbox: Inbox, seconds: float) -> None:
    inbox.test_clock[0] += seconds  # type: ignore[attr-defined]


async def test_put_stores_everything_and_dedupes(any_inbox: Inbox) -> None:
    body = b'{"event_id": "e1", "x": "\xc3\xa9"}'
    inserted, entry_id = await any_inbox.put(
        "solveforce", "e1", "service.status.changed", body, {"user-agent": "t"}, T0
    )
    assert inserted
    again = await any_inbox.put("solveforce", "e1", "other", b"{}", {}, None)
    assert again == (False, entry_id)
    # same event id from another source is another event
    other, other_id = await any_inbox.put("github", "e1", "push", b"{}", {}, None)
    assert other and other_id != entry_id

    e = await any_inbox.get(entry_id)
    assert e is not None
    assert (e.source, e.event_id, e.event_type) == ("solveforce", "e1", "service.status.changed")
    assert e.body == body and e.headers == {"user-agent": "t"}
    assert e.status == "pending" and e.attempts == 0 and e.flow_runs == {}
    assert e.event_time == T0 and e.received_at == T0
    assert e.last_error is None
    assert await any_inbox.find("solveforce", "e1") == e
    assert [x.source for x in await any_inbox.find_event("e1")] == ["solveforce", "github"]
    assert await any_inbox.get(999_999) is None
    assert await any_inbox.find("solveforce", "nope") is None


async def test_concurrent_identical_puts_store_one(any_inbox: Inbox) -> None:
    results = await asyncio.gather(
        *(any_inbox.put("s", "same", "t", b"{}", {}, None) for _ in range(50))
    )
    assert sum(1 for inserted, _ in results if inserted) == 1
    assert len({entry_id for _, entry_id in results}) == 1
    assert (await any_inbox.counts())["pending"] == 1


async def test_claim_leases_oldest_due_first(any_inbox: Inbox) -> None:
    ids = [(await any_inbox.put("s", f"e{i}", "t", b"{}", {}, None))[1] for i in range(5)]
    first = await any_inbox.claim(2, lease_seconds=30)
    assert [e.id for e in first] == ids[:2]
    second = await any_inbox.claim(10, lease_seconds=30)
    assert [e.id for e in second] == ids[2:]
    assert await any_inbox.claim(10, lease_seconds=30) == []
    advance(any_inbox, 31)  # the leases expire: a crashed dispatcher's entries come back
    assert [e.id for e in await any_inbox.claim(10, lease_seconds=30)] == ids


async def test_two_dispatchers_never_share_an_entry(any_inbox: Inbox) -> None:
    for i in range(40):
        await any_inbox.put("s", f"e{i}", "t", b"{}", {}, None)
    batches = await asyncio.gather(*(any_inbox.claim(7, lease_seconds=60) for _ in range(8)))
    claimed = [e.id for b in batches for e in b]
    assert len(claimed) == 40 and len(set(claimed)) == 40


async def test_life_cycle(any_inbox: Inbox) -> None:
    _, a = await any_inbox.put("s", "a", "t", b"{}", {}, None)
    _, b = await any_inbox.put("s", "b", "t", b"{}", {}, None)
    _, c = await any_inbox.put("s", "c", "t", b"{}", {}, None)
    _, d = await any_inbox.put("s", "d", "webhook.test", b"{}", {}, None, status="done")
    await any_inbox.claim(10, lease_seconds=30)
    await any_inbox.mark_failed(c, "recipe 'outage' step 'page': 401")

    await any_inbox.mark_dispatched(a, {"outage": "run-1"})
    await any_inbox.mark_dispatched(a, {"billing": "run-2"})
    ea = await any_inbox.get(a)
    assert ea is not None and ea.status == "dispatched"
    assert ea.flow_runs == {"outage": "run-1", "billing": "run-2"}
    await any_inbox.mark_done(a)

    await any_inbox.retry_later(b, "Slack 429", 60)
    eb = await any_inbox.get(b)
    assert eb is not None
    assert (eb.status, eb.attempts, eb.last_error) == ("pending", 1, "Slack 429")
    assert await any_inbox.claim(10, lease_seconds=30) == []  # not due yet
    advance(any_inbox, 61)
    assert [e.id for e in await any_inbox.claim(10, lease_seconds=30)] == [b]

    ec = await any_inbox.get(c)
    assert ec is not None and (ec.status, ec.attempts) == ("failed", 1)
    assert await any_inbox.counts() == {
        "pending": 1,
        "dispatched": 0,
        "done": 2,
        "failed": 1,
        "late": 0,
        "superseded": 0,
        "cancelled": 0,
        "scheduled": 0,
    }

    await any_inbox.requeue(c)  # replay
    assert [e.id for e in await any_inbox.claim(10, lease_seconds=30)] == [c]
    assert [e.id for e in await any_inbox.list(status="done")] == [d, a]
    assert len(await any_inbox.list()) == 4
    assert len(await any_inbox.list(limit=1)) == 1
    assert await any_inbox.list(since=T0 + timedelta(seconds=1000)) == []


async def test_steps_for_replay(any_inbox: Inbox) -> None:
    await any_inbox.record_step("s", "e", "outage", "notify", {"ts": "1.2"})
    await any_inbox.record_step("s", "e", "outage", "incident", {"number": "INC1"})
    await any_inbox.record_step("s", "e", "outage", "notify", {"ts": "1.3"})
    await any_inbox.record_step("s", "e", "other", "x", {})
    assert await any_inbox.completed_steps("s", "e", "outage") == {
        "notify": {"ts": "1.3"},
        "incident": {"number": "INC1"},
    }
    assert await any_inbox.completed_steps("s", "zzz", "outage") == {}


async def test_done_keeps_a_note_and_the_error_it_recovered_from(any_inbox: Inbox) -> None:
    _, a = await any_inbox.put("s", "a", "webhook.test", b"{}", {}, None)
    await any_inbox.claim(10, lease_seconds=30)
    assert await any_inbox.mark_done(a, note="no recipe matched")
    ea = await any_inbox.get(a)
    assert ea is not None and (ea.status, ea.note) == ("done", "no recipe matched")
    assert [e.note for e in await any_inbox.list()] == ["no recipe matched"]

    # replayed, it fails, is replayed again and succeeds with a run: the note is gone, and
    # the error stays as the one it recovered from (`hookline events` labels it so)
    await any_inbox.requeue(a)
    await any_inbox.claim(10, lease_seconds=30)
    await any_inbox.mark_failed(a, "outage: failed")
    await any_inbox.requeue(a)
    await any_inbox.claim(10, lease_seconds=30)
    await any_inbox.mark_dispatched(a, {"outage": "run-2"})
    assert await any_inbox.mark_done(a, expect="dispatched")
    ea = await any_inbox.get(a)
    assert ea is not None
    assert (ea.status, ea.note, ea.last_error, ea.attempts) == ("done", None, "outage: failed", 1)


async def test_sqlite_inbox_of_an_older_version_gets_the_note_column(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    async with SQLiteInbox(path) as inbox:
        _, a = await inbox.put("s", "a", "t", b"{}", {}, None)
    with sqlite3.connect(path) as conn:  # as an inbox written before notes were kept
        conn.execute("ALTER TABLE inbox DROP COLUMN note")
    async with SQLiteInbox(path) as inbox:
        old = await inbox.get(a)
        assert old is not None and (old.status, old.note) == ("pending", None)
        assert await inbox.mark_done(a, note="no recipe matched")
        done = await inbox.get(a)
        assert done is not None and done.note == "no recipe matched"


@pytest.mark.postgres
async def test_postgres_inbox_of_an_older_version_gets_the_note_column(pg_schema: str) -> None:
    import asyncpg

    from hookline.inbox import PG_SCHEMA_VERSION
    from tests.receiver.conftest import PG_DSN

    async with PostgresInbox(PG_DSN, schema=pg_schema) as inbox:
        _, a = await inbox.put("s", "a", "t", b"{}", {}, None)
    conn = await asyncpg.connect(PG_DSN)
    try:  # as an inbox written by the previous version
        await conn.execute(f'ALTER TABLE "{pg_schema}".inbox DROP COLUMN note')
        await conn.execute(
            f"UPDATE \"{pg_schema}\".inbox_meta SET value = '2' WHERE key = 'schema_version'"
        )
    finally:
        await conn.close()
    async with PostgresInbox(PG_DSN, schema=pg_schema) as inbox:
        old = await inbox.get(a)
        assert old is not None and (old.status, old.note) == ("pending", None)
        assert await inbox.mark_done(a, note="no recipe matched")
        done = await inbox.get(a)
        assert done is not None and done.note == "no recipe matched"
    conn = await asyncpg.connect(PG_DSN)
    try:
        version = await conn.fetchval(
            f"SELECT value FROM \"{pg_schema}\".inbox_meta WHERE key = 'schema_version'"
        )
    finally:
        await conn.close()
    assert version == PG_SCHEMA_VERSION == "4"


async def test_a_row_the_store_refuses_fails_only_its_own_put(any_inbox: Inbox) -> None:
    """Concurrent puts share one INSERT: a row the store refuses (a lone surrogate in its id)
    fails its own put only, and a second put of a key in the same batch is its duplicate."""
    ids = ("a", "b\ud800", "c", "a")
    results = await asyncio.gather(
        *(any_inbox.put("s", i, "t", b"{}", {}, None) for i in ids), return_exceptions=True
    )
    bad = results[1]
    assert isinstance(bad, InboxError) and "cannot store s/'b\\ud800'" in str(bad), bad
    a, c, again = results[0], results[2], results[3]
    assert isinstance(a, tuple) and isinstance(c, tuple) and a[0] and c[0]
    assert again == (False, a[1])
    assert sorted(e.event_id for e in await any_inbox.list()) == ["a", "c"]


def test_sqlite_settings_are_checked_and_fixed_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    with pytest.raises(ValueError, match="writer must be thread or loop, not 'queue'"):
        SQLiteInbox(path, writer="queue")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="synchronous must be FULL or NORMAL, not 'OFF'"):
        SQLiteInbox(path, synchronous="OFF")  # type: ignore[arg-type]
    inbox = SQLiteInbox(path, writer="loop", synchronous="NORMAL")
    with pytest.raises(AttributeError):
        inbox.writer = "thread"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        inbox.synchronous = "FULL"  # type: ignore[misc]
    assert (inbox.writer, inbox.synchronous) == ("loop", "NORMAL")
    chosen = open_inbox(
        CoreSettings(home=tmp_path), sqlite_synchronous="NORMAL", sqlite_writer="loop"
    )
    assert isinstance(chosen, SQLiteInbox)
    assert (chosen.writer, chosen.synchronous) == ("loop", "NORMAL")


async def test_ping_and_bad_status(any_inbox: Inbox) -> None:
    await any_inbox.ping()
    with pytest.raises(ValueError, match="pending"):
        await any_inbox.put("s", "e", "t", b"{}", {}, None, status="nope")


async def test_sqlite_survives_reopen_and_batches_commits(tmp_path: Path) -> None:
    path = tmp_path / "inbox.sqlite3"
    async with SQLiteInbox(path) as inbox:
        assert isinstance(inbox, SQLiteInbox)
        results = await asyncio.gather(
            *(inbox.put("s", f"e{i}", "t", b"{}", {}, None) for i in range(300))
        )
        assert all(ok for ok, _ in results)
        assert inbox.batches < 300  # group commit: fewer transactions than events
    async with SQLiteInbox(path) as again:
        assert (await again.put("s", "e7", "t", b"{}", {}, None))[0] is False
        assert (await again.counts())["pending"] == 300
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_sqlite_cannot_open_is_an_inbox_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InboxError, match="cannot open"):
        await SQLiteInbox(blocker / "inbox.sqlite3").open()


async def test_sqlite_failed_commit_fails_every_caller(tmp_path: Path) -> None:
    """When the transaction cannot commit, nobody is told their event is stored."""
    path = tmp_path / "inbox.sqlite3"
    async with SQLiteInbox(path, busy_timeout=0.1) as inbox:
        await inbox.ping()
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            results = await asyncio.gather(
                *(inbox.put("s", f"e{i}", "t", b"{}", {}, None) for i in range(5)),
                return_exceptions=True,
            )
            assert all(isinstance(r, InboxError) for r in results)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert (await inbox.put("s", "e1", "t", b"{}", {}, None))[0] is True


def test_open_inbox_chooses_the_backend(tmp_path: Path) -> None:
    sqlite = open_inbox(CoreSettings(home=tmp_path))
    assert isinstance(sqlite, SQLiteInbox) and sqlite.path == tmp_path / "inbox.sqlite3"
    pg = open_inbox(CoreSettings(home=tmp_path, database_url="postgresql://u:pw@db:5433/x"))
    assert isinstance(pg, PostgresInbox)
    assert "pw" not in pg.description and "db:5433" in pg.description
    with pytest.raises(ConfigError, match="HOOKLINE_DATABASE_URL"):
        open_inbox(CoreSettings(home=tmp_path, database_url="mysql://x"))


async def test_await_open_inbox_connects(tmp_path: Path) -> None:
    inbox = await open_inbox(CoreSettings(home=tmp_path))
    try:
        assert (tmp_path / "inbox.sqlite3").exists()
    finally:
        await inbox.close()


@pytest.mark.postgres
async def test_postgres_unreachable_is_an_inbox_error() -> None:
    inbox = PostgresInbox("postgresql://postgres@127.0.0.1:1/test", schema="x")
    with pytest.raises(InboxError, match="cannot open"):
        await inbox.open()


def test_loop_writer_refuses_a_second_event_loop(tmp_path: Path) -> None:
    import asyncio

    inbox = SQLiteInbox(tmp_path / "inbox.sqlite3", writer="loop")

    async def first() -> None:
        await inbox.put("s", "e1", "t", b"{}", {}, None)

    async def second() -> None:
        with pytest.raises(InboxError, match="writer='thread'"):
            await inbox.put("s", "e2", "t", b"{}", {}, None)

    asyncio.run(first())
    asyncio.run(second())


async def test_reopen_and_settled_follow_a_run_restarted_in_prefect(any_inbox: Inbox) -> None:
    """The UI's Retry of an event's run puts the event back to dispatched (`reopen`); the
    dispatcher finds settled events to re-check with `settled`."""
    _, a = await any_inbox.put("s", "a", "t", b"{}", {}, None)
    _, b = await any_inbox.put("s", "b", "t", b"{}", {}, None)
    _, c = await any_inbox.put("s", "c", "t", b"{}", {}, None)  # never dispatched
    for entry_id, run in ((a, "run-a"), (b, "run-b")):
        await any_inbox.claim(10, lease_seconds=30)
        assert await any_inbox.mark_dispatched(entry_id, {"outage": run})
    assert await any_inbox.mark_failed(a, "ServiceNow 500", expect="dispatched")
    assert await any_inbox.mark_done(b, expect="dispatched")
    await any_inbox.record_step("s", "a", "outage", "alert", {"ts": "1.2"})
    await any_inbox.record_step("s", "a", "outage", "on_failure.tell", {})

    now = datetime.fromtimestamp(any_inbox.test_clock[0], UTC)  # type: ignore[attr-defined]
    settled = await any_inbox.settled(0, 10, done_since=now - timedelta(seconds=60))
    assert [e.id for e in settled] == [a, b]
    assert [e.id for e in await any_inbox.settled(a, 10, done_since=now)] == [b]
    advance(any_inbox, 120)
    later = datetime.fromtimestamp(any_inbox.test_clock[0], UTC)  # type: ignore[attr-defined]
    assert [e.id for e in await any_inbox.settled(0, 10, done_since=later)] == [a]

    assert not await any_inbox.reopen(a, "outage", "another-run")  # not its run
    assert not await any_inbox.reopen(a, "other-recipe", "run-a")
    assert not await any_inbox.reopen(c, "outage", "run-a")
    assert await any_inbox.reopen(a, "outage", "run-a")
    entry = await any_inbox.get(a)
    assert entry is not None and (entry.status, entry.flow_runs) == (
        "dispatched",
        {"outage": "run-a"},
    )
    assert not await any_inbox.reopen(a, "outage", "run-a")  # already dispatched
    # the succeeded step is still reused; the on_failure one will tell on-call again
    assert await any_inbox.completed_steps("s", "a", "outage") == {"alert": {"ts": "1.2"}}
    assert await any_inbox.reopen(b, "outage", "run-b")


def test_engines_opening_a_new_sqlite_inbox_together_all_get_it(tmp_path: Path) -> None:
    # `hookline dispatch` and `hookline worker` started together both open (and upgrade) the
    # same new file: one of them used to fail with "duplicate column name: note", or with
    # "database is locked" while the other switched the file to WAL. A thread per engine,
    # each with its own connection, as a process has.
    import threading

    from hookline.inbox.sqlite_schema import connect

    failures: list[BaseException] = []
    for round_ in range(15):
        path = tmp_path / f"inbox-{round_}.sqlite3"
        start = threading.Barrier(6)

        def open_it(path: Path = path, start: threading.Barrier = start) -> None:
            start.wait()
            try:
                connect(path, synchronous="NORMAL", busy_timeout=10.0).close()
            except BaseException as exc:  # collected: a thread's exception is otherwise lost
                failures.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []
    with sqlite3.connect(tmp_path / "inbox-0.sqlite3") as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(inbox)")}
    assert {"seq", "superseded_by", "note", "timer_key"} <= columns
