"""The embedded Prefect server's SQLite connections try for the write lock every millisecond
(hookline/engine/sqlite_busy.py), not at SQLite's 100 ms once a wait passed 0.3 s."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hookline.engine import sqlite_busy
from hookline.engine.sqlite_busy import BusyWait


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_wait_tries_again_every_poll_until_its_timeout() -> None:
    t = FakeTime()
    wait = BusyWait(poll=0.001, clock=lambda: t.now, sleep=t.sleep)

    answers = [wait(50, count) for count in range(60)]

    assert answers == [1] * 50 + [0] * 10  # 50 ms of 1 ms tries, then SQLITE_BUSY
    assert t.slept == [0.001] * 50


def test_each_wait_has_its_own_timeout() -> None:
    t = FakeTime()
    wait = BusyWait(poll=0.001, clock=lambda: t.now, sleep=t.sleep)
    assert [wait(3, c) for c in range(5)] == [1, 1, 1, 0, 0]
    t.now += 60  # a later wait (count starts at 0 again) starts its own clock
    assert [wait(3, c) for c in range(5)] == [1, 1, 1, 0, 0]


@pytest.fixture
def locked_db(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    path = tmp_path / "prefect.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("PRAGMA journal_mode = WAL")
    holder.execute("CREATE TABLE t (x)")
    yield path, holder
    holder.close()


def test_install_checks_the_connection_is_the_database_it_was_told(
    locked_db: tuple[Path, sqlite3.Connection], tmp_path: Path
) -> None:
    path, _ = locked_db
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        assert sqlite_busy.install(conn, str(tmp_path / "other.db"), timeout=1) is False
        assert sqlite_busy.install(conn, str(path), timeout=1) is True
    finally:
        conn.close()


def test_an_installed_connection_waits_with_hooklines_handler_and_gives_up_at_its_timeout(
    locked_db: tuple[Path, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, holder = locked_db
    slept: list[float] = []
    monkeypatch.setattr(sqlite_busy._wait, "sleep", lambda s: (slept.append(s), time.sleep(s)))
    # its own timeout (60 s) is SQLite's handler; installed, the wait is ours, for 0.3 s
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    try:
        assert sqlite_busy.install(conn, str(path), timeout=0.3)
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            conn.execute("BEGIN IMMEDIATE")
        assert 0.3 <= time.monotonic() - started < 10
        assert len(slept) >= 20 and set(slept) == {sqlite_busy.POLL_SECONDS}

        threading.Timer(0.2, holder.execute, ("COMMIT",)).start()
        conn.execute("BEGIN IMMEDIATE")  # the lock, once the holder commits
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.mark.anyio
async def test_prefects_sqlite_connections_get_the_handler(
    locked_db: tuple[Path, sqlite3.Connection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Prefect's own engine set-up, as `hookline.engine.prefect_serve` applies it in
    the embedded server's process."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    from hookline.engine.prefect_internals import polling_sqlite_busy_wait

    path, holder = locked_db
    monkeypatch.setattr(  # undone after the test
        AioSqliteConfiguration, "setup_sqlite", AioSqliteConfiguration.setup_sqlite
    )
    slept: list[float] = []
    monkeypatch.setattr(sqlite_busy._wait, "sleep", lambda s: (slept.append(s), time.sleep(s)))
    assert polling_sqlite_busy_wait()
    assert polling_sqlite_busy_wait()  # applied once

    engine = await AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{path}").engine()
    try:
        holder.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, holder.execute, ("COMMIT",)).start()
        async with engine.connect() as conn:
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
            await conn.exec_driver_sql("COMMIT")
    finally:
        await engine.dispose()
    assert len(slept) >= 20 and set(slept) == {sqlite_busy.POLL_SECONDS}
