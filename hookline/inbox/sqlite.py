"""The SQLite inbox: one file under ``HOOKLINE_HOME``, WAL journal, group commit."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from hookline.config import private_dir, private_file
from hookline.inbox.base import (
    COLUMNS,
    SEQUENCE_BATCH,
    STATUSES,
    Clock,
    Inbox,
    InboxEntry,
    InboxError,
    Sequenced,
    Sequencer,
    check_status,
    entry_time,
    expire,
    from_epoch,
    is_late,
    sequence_all,
    to_epoch,
)

T = TypeVar("T")

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    event_type  TEXT    NOT NULL,
    received_at REAL    NOT NULL,
    event_time  REAL,
    body        BLOB    NOT NULL,
    headers     TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    flow_runs   TEXT    NOT NULL DEFAULT '{}',
    not_before  REAL    NOT NULL,
    lease_until REAL,
    updated_at  REAL    NOT NULL,
    UNIQUE (source, event_id)
);
CREATE INDEX IF NOT EXISTS inbox_due ON inbox (status, not_before, id);
CREATE INDEX IF NOT EXISTS inbox_event ON inbox (event_id);
CREATE TABLE IF NOT EXISTS inbox_steps (
    source      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    recipe      TEXT NOT NULL,
    step        TEXT NOT NULL,
    outputs     TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    PRIMARY KEY (source, event_id, recipe, step)
);
CREATE TABLE IF NOT EXISTS inbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox_lanes (
    lane        TEXT    NOT NULL,
    entry_id    INTEGER NOT NULL,
    event_time  REAL    NOT NULL,
    started     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (lane, entry_id)
);
CREATE INDEX IF NOT EXISTS inbox_lanes_entry ON inbox_lanes (entry_id);
CREATE TABLE IF NOT EXISTS inbox_lane_marks (
    lane        TEXT    PRIMARY KEY,
    event_time  REAL    NOT NULL,
    entry_id    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox_run_claims (
    flow_run_id TEXT NOT NULL,
    state_id    TEXT NOT NULL,
    worker      TEXT NOT NULL,
    claimed_at  REAL NOT NULL,
    PRIMARY KEY (flow_run_id, state_id)
);
CREATE TABLE IF NOT EXISTS inbox_coalesce (
    key         TEXT    NOT NULL,
    entry_id    INTEGER NOT NULL,
    event_time  REAL    NOT NULL,
    received    REAL    NOT NULL,
    quiet       REAL    NOT NULL,
    max_wait    REAL    NOT NULL,
    PRIMARY KEY (key, entry_id)
);
CREATE INDEX IF NOT EXISTS inbox_coalesce_entry ON inbox_coalesce (entry_id);
"""
# After the column exists (added to inboxes created before lanes were kept here).
_SQLITE_SEQ_INDEX = (
    "CREATE INDEX IF NOT EXISTS inbox_unsequenced ON inbox (id)"
    " WHERE status = 'pending' AND seq <> 1"
)
# seq: 0 = not sequenced yet, 2 = not sequenced yet and never late (a replay), 1 = sequenced
_BLOCKED_SQLITE = (
    "EXISTS (SELECT 1 FROM inbox_lanes a JOIN inbox_lanes b ON b.lane = a.lane"
    " WHERE a.entry_id = inbox.id AND b.entry_id <> a.entry_id AND (b.started = 1"
    " OR b.event_time < a.event_time"
    " OR (b.event_time = a.event_time AND b.entry_id < a.entry_id))"
    # the waiting members of one burst are covered by its latest, not ahead of it
    " AND NOT EXISTS (SELECT 1 FROM inbox_coalesce ca JOIN inbox_coalesce cb"
    " ON cb.key = ca.key WHERE ca.entry_id = a.entry_id AND cb.entry_id = b.entry_id))"
)
_COALESCE_WAIT_SQLITE = (
    "EXISTS (SELECT 1 FROM inbox_coalesce c WHERE c.entry_id = inbox.id AND ("
    " EXISTS (SELECT 1 FROM inbox_coalesce m WHERE m.key = c.key AND m.entry_id <> c.entry_id"
    " AND (m.event_time > c.event_time OR (m.event_time = c.event_time"
    " AND m.entry_id > c.entry_id)))"
    " OR ((SELECT MAX(m.received) FROM inbox_coalesce m WHERE m.key = c.key) > ? - c.quiet"
    " AND (SELECT MIN(m.received) FROM inbox_coalesce m WHERE m.key = c.key) > ? - c.max_wait)))"
)
_MARK_SQLITE = (
    "INSERT INTO inbox_lane_marks (lane, event_time, entry_id)"
    " SELECT lane, event_time, entry_id FROM inbox_lanes WHERE entry_id = ?"
    " ON CONFLICT (lane) DO UPDATE SET event_time = excluded.event_time,"
    " entry_id = excluded.entry_id WHERE excluded.event_time > inbox_lane_marks.event_time"
    " OR (excluded.event_time = inbox_lane_marks.event_time"
    " AND excluded.entry_id > inbox_lane_marks.entry_id)"
)


def _sqlite_row(row: tuple[Any, ...]) -> InboxEntry:
    return InboxEntry(
        id=row[0],
        source=row[1],
        event_id=row[2],
        event_type=row[3],
        received_at=datetime.fromtimestamp(row[4], UTC),
        event_time=from_epoch(row[5]),
        body=bytes(row[6]),
        headers=json.loads(row[7]),
        status=row[8],
        attempts=row[9],
        last_error=row[10],
        flow_runs=json.loads(row[11]),
        not_before=from_epoch(row[12]),
        lease_until=from_epoch(row[13]),
        updated_at=from_epoch(row[14]),
        seq=row[15],
        superseded_by=row[16],
        note=row[17],
    )


Job = Callable[[sqlite3.Connection], Any]


class _Request:
    """One queued job (or one put's row) and the future its caller awaits."""

    __slots__ = ("job", "row", "future", "loop", "result", "error")

    def __init__(
        self,
        job: Job | None,
        row: tuple[Any, ...] | None,
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.job = job
        self.row = row
        self.future = future
        self.loop = loop
        self.result: Any = None
        self.error: BaseException | None = None


_PUT_COLUMNS = (
    "source, event_id, event_type, received_at, event_time, body, headers, status,"
    " not_before, updated_at"
)
_PUT_ROWS_PER_STATEMENT = 200  # 10 parameters a row, well under SQLite's 32766 limit


def _insert_puts(conn: sqlite3.Connection, puts: list[_Request]) -> None:
    """All queued puts as multi-row INSERTs; duplicates resolve to the stored entry's id.

    A chunk that fails is retried row by row (a savepoint each), so one bad row (a lone
    surrogate in an id, say) fails only its own put, not every event of the batch. If SQLite
    ended the whole transaction (disk full, I/O error), the error goes up to fail the batch.
    """
    for start in range(0, len(puts), _PUT_ROWS_PER_STATEMENT):
        chunk = puts[start : start + _PUT_ROWS_PER_STATEMENT]
        conn.execute("SAVEPOINT puts")
        try:
            _insert_chunk(conn, chunk)
        except Exception:
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO puts")
            for r in chunk:
                conn.execute("SAVEPOINT put")
                try:
                    _insert_chunk(conn, [r])
                except Exception as exc:
                    if not conn.in_transaction:
                        raise
                    conn.execute("ROLLBACK TO put")
                    where = f"{r.row[0]}/{r.row[1]!r}" if r.row else "?"
                    r.result = None
                    r.error = InboxError(f"cannot store {where}: {type(exc).__name__}: {exc}")
                conn.execute("RELEASE put")
        conn.execute("RELEASE puts")


def _insert_chunk(conn: sqlite3.Connection, chunk: list[_Request]) -> None:
    """One multi-row INSERT of ``chunk``'s puts; sets each put's result."""
    sql = (
        f"INSERT INTO inbox ({_PUT_COLUMNS}) VALUES "
        + ",".join(["(?,?,?,?,?,?,?,?,?,?)"] * len(chunk))
        + " ON CONFLICT (source, event_id) DO NOTHING RETURNING id, source, event_id"
    )
    params = [v for r in chunk for v in r.row or ()]
    inserted = {(src, eid): i for i, src, eid in conn.execute(sql, params)}
    for r in chunk:
        key = (r.row[0], r.row[1]) if r.row else ("", "")
        entry_id = inserted.pop(key, None)
        if entry_id is not None:
            r.result = (True, int(entry_id))
            continue
        row = conn.execute("SELECT id FROM inbox WHERE source = ? AND event_id = ?", key).fetchone()
        r.result = (False, int(row[0]))


def _settle(requests: Iterable[_Request]) -> None:
    for r in requests:
        if r.future.done():  # the caller gave up (cancelled / timed out)
            continue
        if r.error is not None:
            r.future.set_exception(r.error)
        else:
            r.future.set_result(r.result)


def _supersede_sqlite(conn: sqlite3.Connection, entry_id: int, now: float) -> None:
    """``entry_id`` was claimed: the rest of its burst is superseded by it."""
    keys = [
        k for (k,) in conn.execute("SELECT key FROM inbox_coalesce WHERE entry_id = ?", (entry_id,))
    ]
    for key in keys:
        covered = [
            i
            for (i,) in conn.execute(
                "SELECT entry_id FROM inbox_coalesce WHERE key = ? AND entry_id <> ?",
                (key, entry_id),
            )
        ]
        for i in covered:
            conn.execute(
                "UPDATE inbox SET status = 'superseded', superseded_by = ?, lease_until = NULL,"
                " updated_at = ? WHERE id = ? AND status = 'pending'",
                (entry_id, now, i),
            )
            conn.execute("DELETE FROM inbox_lanes WHERE entry_id = ?", (i,))
        conn.execute("DELETE FROM inbox_coalesce WHERE key = ?", (key,))


class SQLiteInbox(Inbox):
    """SQLite in WAL mode, one writer, group commit.

    Two writers, same guarantees (answer only after commit, one transaction per batch):
    ``thread`` (default) writes on a dedicated thread that takes whatever is queued; any
    event loop in any thread may call it. ``loop`` (what `hookline serve` uses) writes on the
    event loop that opened it: everything submitted during one turn of the loop is written
    together, then COMMIT (the fsync) runs on a helper thread while the next batch gathers;
    when another process holds the write lock it retries every 2 ms instead of blocking the
    loop. It may only be used from that one loop (InboxError otherwise).

    Args:
        path: the database file; its folder is created.
        synchronous: ``FULL`` (default: fsync at every commit, so a committed batch survives
            power loss) or ``NORMAL`` (survives a process crash, may lose the last commits on
            power loss). Group commit makes FULL cheap: one fsync per batch.
        max_batch: most jobs written in one transaction.
        busy_timeout: seconds to wait for another process holding the write lock.
        writer: ``loop`` or ``thread`` (see above).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        max_batch: int = 512,
        busy_timeout: float = 5.0,
        writer: Literal["thread", "loop"] = "thread",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock=clock)
        self.writer = writer
        self._conn: sqlite3.Connection | None = None
        self._pending: list[_Request] = []
        self._retry: asyncio.TimerHandle | None = None
        self._busy_since: float | None = None
        self._committing = False
        self._committer = concurrent.futures.ThreadPoolExecutor(1, "hookline-inbox-commit")
        self._home: asyncio.AbstractEventLoop | None = None
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self.max_batch = max_batch
        self.busy_timeout = busy_timeout
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready: asyncio.Future[None] | None = None
        self.batches = 0  # transactions committed, for tests and the bench

    @property
    def description(self) -> str:
        return f"sqlite:{self.path}"

    async def _open(self) -> None:
        if self.writer == "loop":
            self._home = asyncio.get_running_loop()
            self._committer = concurrent.futures.ThreadPoolExecutor(1, "hookline-inbox-commit")
            try:
                self._conn = self._connect()
            except (sqlite3.Error, OSError) as exc:
                raise InboxError(f"cannot open the SQLite inbox at {self.path}: {exc}") from exc
            return
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, args=(loop, self._ready), name="hookline-inbox-writer", daemon=True
        )
        self._thread.start()
        await self._ready

    async def _close(self) -> None:
        if self._conn is not None:
            deadline = time.monotonic() + self.busy_timeout
            while (self._pending or self._committing) and time.monotonic() < deadline:
                if self._retry is not None:
                    self._retry.cancel()
                self._flush_inline()
                if self._pending or self._committing:
                    await asyncio.sleep(0.002)
            self._conn.close()
            self._conn = None
            self._committer.shutdown(wait=False)
        thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join)
        self._thread = None

    # -- the writer thread --------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        # Every payload is in here: owner-only from the start (SQLite gives the -wal and -shm
        # files the database file's mode), and tightened if an older version left it 0644.
        private_dir(self.path.parent)
        private_file(self.path)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                private_file(side)
        # The loop writer never waits inside SQLite (that would stall every request); it
        # retries from the event loop instead. The thread writer may wait there.
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SQLITE_SCHEMA)
        columns = {r[1] for r in conn.execute("PRAGMA table_info(inbox)")}
        if "seq" not in columns:
            conn.execute("ALTER TABLE inbox ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
        if "superseded_by" not in columns:
            conn.execute("ALTER TABLE inbox ADD COLUMN superseded_by INTEGER")
        if "note" not in columns:
            conn.execute("ALTER TABLE inbox ADD COLUMN note TEXT")
        conn.execute(_SQLITE_SEQ_INDEX)
        if self.writer == "loop":
            conn.execute("PRAGMA busy_timeout = 0")
        return conn

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except (sqlite3.Error, OSError) as exc:
            err = InboxError(f"cannot open the SQLite inbox at {self.path}: {exc}")
            loop.call_soon_threadsafe(_set_exception_if_pending, ready, err)
            return
        loop.call_soon_threadsafe(_set_result_if_pending, ready, None)
        stop = False
        try:
            while not stop:
                first = self._queue.get()
                if first is None:
                    break
                batch = [first]
                while len(batch) < self.max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                self._write_batch(conn, batch)
                by_loop: dict[asyncio.AbstractEventLoop, list[_Request]] = {}
                for r in batch:
                    by_loop.setdefault(r.loop, []).append(r)
                for lp, reqs in by_loop.items():
                    try:
                        lp.call_soon_threadsafe(_settle, reqs)
                    except RuntimeError:  # that loop is closed; its callers are gone
                        pass
        finally:
            conn.close()

    def _flush_inline(self) -> None:
        """Loop writer: write everything pending in one transaction on the loop, then COMMIT
        (the fsync) on a helper thread while the loop goes on and the next batch gathers.
        Never blocks the loop on another process's write lock (busy: try again in 2 ms)."""
        self._retry = None
        if self._committing:
            return  # _committed() starts the next batch
        conn = self._conn
        # Callers that gave up (timed out) are not written: they were told 503 and retry.
        pending = [r for r in self._pending if not r.future.done()]
        if conn is None or not pending:
            self._pending = []
            return
        loop = asyncio.get_running_loop()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            now = time.monotonic()
            if self._busy_since is None:
                self._busy_since = now
            if now - self._busy_since < self.busy_timeout:
                self._pending = pending
                self._retry = loop.call_later(0.002, self._flush_inline)
                return
            self._pending = []
            self._busy_since = None
            self._fail(conn, pending, exc)
            _settle(pending)
            return
        self._busy_since = None
        batch, self._pending = pending[: self.max_batch], pending[self.max_batch :]
        try:
            self._write_jobs(conn, batch)
        except Exception as exc:
            self._fail(conn, batch, exc)
            _settle(batch)
            if self._pending:
                loop.call_soon(self._flush_inline)
            return
        self._committing = True
        done = loop.run_in_executor(self._committer, conn.execute, "COMMIT")
        done.add_done_callback(functools.partial(self._committed, conn, batch))

    def _committed(
        self, conn: sqlite3.Connection, batch: list[_Request], done: asyncio.Future[Any]
    ) -> None:
        self._committing = False
        exc = None if done.cancelled() else done.exception()
        if done.cancelled() or exc is not None:
            self._fail(conn, batch, exc or InboxError("commit cancelled"))
        else:
            self.batches += 1
        _settle(batch)
        if self._pending and self._retry is None:
            self._flush_inline()

    def _write_jobs(self, conn: sqlite3.Connection, batch: list[_Request]) -> None:
        """Run the batch's jobs and puts inside the open transaction."""
        for r in batch:
            if r.job is None:
                continue
            # A savepoint per job: one failing job does not undo the others in the batch.
            conn.execute("SAVEPOINT job")
            try:
                r.result = r.job(conn)
            except Exception as exc:
                conn.execute("ROLLBACK TO job")
                r.error = exc if not isinstance(exc, sqlite3.Error) else _wrap(self, exc)
            conn.execute("RELEASE job")
        puts = [r for r in batch if r.job is None]
        if puts:
            _insert_puts(conn, puts)

    def _fail(self, conn: sqlite3.Connection, batch: list[_Request], exc: BaseException) -> None:
        """The transaction failed: roll back, and nobody in the batch is told "stored"."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        err = exc if isinstance(exc, InboxError) else _wrap(self, exc)
        for r in batch:
            r.result, r.error = None, err

    def _write_batch(self, conn: sqlite3.Connection, batch: list[_Request]) -> None:
        """Thread writer: one whole transaction."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._write_jobs(conn, batch)
            conn.execute("COMMIT")
            self.batches += 1
        except Exception as exc:
            self._fail(conn, batch, exc)

    async def _submit(
        self,
        job: Callable[[sqlite3.Connection], T] | None,
        row: tuple[Any, ...] | None = None,
        timeout: float | None = None,
    ) -> T:
        if not self._opened:
            await self.open()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        if self.writer == "loop":
            if loop is not self._home:
                raise InboxError(
                    f"{self.description}: writer='loop' inbox used from another event loop; "
                    "open it with writer='thread' to share it between loops or threads"
                )
            # Everything submitted during this turn of the event loop commits together.
            if not self._pending and self._retry is None and not self._committing:
                loop.call_soon(self._flush_inline)
            self._pending.append(_Request(job, row, fut, loop))
        else:
            self._queue.put(_Request(job, row, fut, loop))
        if timeout is None:
            return await fut
        # Cheaper than asyncio.timeout() on the hot path: one timer, no task bookkeeping.
        timer = loop.call_later(timeout, expire, fut, timeout, self.description)
        try:
            return await fut
        finally:
            timer.cancel()

    # -- the API --------------------------------------------------------------------------
    async def put(
        self,
        source: str,
        event_id: str,
        event_type: str,
        body: bytes,
        headers: Mapping[str, str],
        event_time: datetime | None,
        *,
        status: str = "pending",
        timeout: float | None = None,
    ) -> tuple[bool, int]:
        check_status(status)
        now = self._clock()
        params = (
            source,
            event_id,
            event_type,
            now,
            to_epoch(event_time),
            body,
            json.dumps(dict(headers), separators=(",", ":")),
            status,
            now,
            now,
        )

        # Written by the writer thread with every other queued put in one multi-row INSERT.
        result: tuple[bool, int] = await self._submit(None, params, timeout)
        return result

    async def claim(
        self, limit: int, *, lease_seconds: float, sequencer: Sequencer | None = None
    ) -> list[InboxEntry]:
        plan: list[tuple[InboxEntry, Sequenced]] = []
        if sequencer is not None:
            # Sequencing renders templates: on the event loop, not on the writer thread. The
            # second job re-checks each entry, so a second process racing here is harmless,
            # and SQLite ids grow in commit order, so the lowest unsequenced ids come first.
            fresh = await self._select(
                "WHERE status = 'pending' AND seq <> 1 ORDER BY id LIMIT ?", (SEQUENCE_BATCH,)
            )
            # in a thread: a sequencer evaluates recipes' `when` and keys, which may take up
            # to their time limit on a hostile payload; the event loop serves the receiver
            plan = await asyncio.to_thread(sequence_all, fresh, sequencer)
        now = self._clock()

        def job(conn: sqlite3.Connection) -> list[InboxEntry]:
            if plan:
                self._sequence(conn, plan, now)
            lanes = sequencer is not None
            rows = conn.execute(
                f"SELECT {COLUMNS} FROM inbox WHERE status = 'pending' AND not_before <= ?"
                " AND (lease_until IS NULL OR lease_until <= ?)"
                + (
                    f" AND seq = 1 AND NOT {_BLOCKED_SQLITE} AND NOT {_COALESCE_WAIT_SQLITE}"
                    if lanes
                    else ""
                )
                + " ORDER BY id LIMIT ?",
                (now, now, *((now, now) if lanes else ()), limit),
            ).fetchall()
            ids = [r[0] for r in rows]
            conn.executemany(
                "UPDATE inbox SET lease_until = ?, updated_at = ?, seq = 1 WHERE id = ?",
                [(now + lease_seconds, now, i) for i in ids],
            )
            if lanes:
                conn.executemany(_MARK_SQLITE, [(i,) for i in ids])
                conn.executemany(
                    "UPDATE inbox_lanes SET started = 1 WHERE entry_id = ?", [(i,) for i in ids]
                )
                for i in ids:
                    _supersede_sqlite(conn, i, now)
            entries = [_sqlite_row(r) for r in rows]
            for e in entries:
                e.lease_until = from_epoch(now + lease_seconds)
            return entries

        return await self._submit(job)

    @staticmethod
    def _sequence(
        conn: sqlite3.Connection, plan: list[tuple[InboxEntry, Sequenced]], now: float
    ) -> None:
        ids = [e.id for e, _ in plan]
        marks_needed = sorted({lane for _, s in plan for lane in s.lanes})
        still = {
            i: seq
            for i, seq in conn.execute(
                "SELECT id, seq FROM inbox WHERE status = 'pending' AND seq <> 1 AND id IN"
                f" ({','.join('?' * len(ids))})",
                ids,
            )
        }
        marks: dict[str, tuple[float, int]] = {}
        for start in range(0, len(marks_needed), 500):
            chunk = marks_needed[start : start + 500]
            for lane, et, eid in conn.execute(
                "SELECT lane, event_time, entry_id FROM inbox_lane_marks WHERE lane IN"
                f" ({','.join('?' * len(chunk))})",
                chunk,
            ):
                marks[lane] = (et, eid)
        for entry, seq in plan:
            if entry.id not in still:
                continue
            late = is_late(entry, seq, marks) if still[entry.id] == 0 else None
            if late is not None:
                conn.execute(
                    "UPDATE inbox SET status = 'late', seq = 1, last_error = ?, lease_until = NULL,"
                    " updated_at = ? WHERE id = ?",
                    (late, now, entry.id),
                )
                continue
            conn.execute("DELETE FROM inbox_lanes WHERE entry_id = ?", (entry.id,))
            conn.executemany(
                "INSERT OR IGNORE INTO inbox_lanes (lane, entry_id, event_time) VALUES (?,?,?)",
                [(lane, entry.id, entry_time(entry)) for lane in seq.lanes],
            )
            if seq.coalesce is not None and still[entry.id] == 0:  # a replay runs alone
                conn.execute(
                    "INSERT OR IGNORE INTO inbox_coalesce"
                    " (key, entry_id, event_time, received, quiet, max_wait)"
                    " VALUES (?,?,?,?,?,?)",
                    (
                        seq.coalesce,
                        entry.id,
                        entry_time(entry),
                        entry.received_at.timestamp(),
                        seq.quiet,
                        seq.max_wait,
                    ),
                )
            conn.execute("UPDATE inbox SET seq = 1 WHERE id = ?", (entry.id,))

    async def _update(self, sql: str, params: tuple[Any, ...]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(sql, params)

        await self._submit(job)

    async def _transition(
        self,
        entry_id: int,
        sets: str,
        params: tuple[Any, ...],
        expect: str | None,
        *,
        leave_lanes: bool = False,
    ) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                f"UPDATE inbox SET {sets} WHERE id = ?"
                + (" AND status = ?" if expect is not None else ""),
                (*params, entry_id, *((expect,) if expect is not None else ())),
            )
            if cur.rowcount and leave_lanes:
                conn.execute("DELETE FROM inbox_lanes WHERE entry_id = ?", (entry_id,))
                conn.execute("DELETE FROM inbox_coalesce WHERE entry_id = ?", (entry_id,))
            return bool(cur.rowcount)

        return await self._submit(job)

    async def mark_dispatched(
        self, entry_id: int, flow_runs: Mapping[str, str], *, expect: str | None = None
    ) -> bool:
        return await self._transition(
            entry_id,
            "status = 'dispatched', lease_until = NULL, updated_at = ?,"
            " flow_runs = json_patch(flow_runs, ?)",
            (self._clock(), json.dumps(dict(flow_runs))),
            expect,
        )

    async def mark_done(
        self, entry_id: int, *, expect: str | None = None, note: str | None = None
    ) -> bool:
        return await self._transition(
            entry_id,
            "status = 'done', lease_until = NULL, updated_at = ?, note = ?",
            (self._clock(), note),
            expect,
            leave_lanes=True,
        )

    async def mark_failed(self, entry_id: int, error: str, *, expect: str | None = None) -> bool:
        return await self._transition(
            entry_id,
            "status = 'failed', lease_until = NULL, last_error = ?, attempts = attempts + 1,"
            " updated_at = ?",
            (error, self._clock()),
            expect,
            leave_lanes=True,
        )

    async def retry_later(
        self, entry_id: int, error: str, delay_seconds: float, *, expect: str | None = None
    ) -> bool:
        now = self._clock()
        return await self._transition(
            entry_id,
            "status = 'pending', lease_until = NULL, last_error = ?, attempts = attempts + 1,"
            " not_before = ?, updated_at = ?",
            (error, now + max(0.0, delay_seconds), now),
            expect,
        )

    async def requeue(self, entry_id: int) -> None:
        now = self._clock()

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE inbox SET status = 'pending', lease_until = NULL, not_before = ?,"
                " updated_at = ?, seq = 2, superseded_by = NULL WHERE id = ?",
                (now, now, entry_id),
            )
            conn.execute("DELETE FROM inbox_lanes WHERE entry_id = ?", (entry_id,))
            conn.execute("DELETE FROM inbox_coalesce WHERE entry_id = ?", (entry_id,))
            conn.execute(
                "DELETE FROM inbox_steps WHERE step LIKE 'on_failure.%' AND (source, event_id)"
                " IN (SELECT source, event_id FROM inbox WHERE id = ?)",
                (entry_id,),
            )

        await self._submit(job)

    async def reopen(self, entry_id: int, recipe: str, flow_run_id: str) -> bool:
        now = self._clock()

        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE inbox SET status = 'dispatched', lease_until = NULL, updated_at = ?"
                " WHERE id = ? AND status IN ('done', 'failed') AND EXISTS"
                " (SELECT 1 FROM json_each(flow_runs) WHERE key = ? AND value = ?)",
                (now, entry_id, recipe, flow_run_id),
            )
            if not cur.rowcount:
                return False
            conn.execute(
                "DELETE FROM inbox_steps WHERE recipe = ? AND step LIKE 'on_failure.%'"
                " AND (source, event_id) IN (SELECT source, event_id FROM inbox WHERE id = ?)",
                (recipe, entry_id),
            )
            return True

        return await self._submit(job)

    async def dispatched(self, after_id: int = 0, limit: int = 500) -> list[InboxEntry]:
        return await self._select(
            "WHERE status = 'dispatched' AND id > ? ORDER BY id LIMIT ?", (after_id, limit)
        )

    async def settled(self, after_id: int, limit: int, *, done_since: datetime) -> list[InboxEntry]:
        return await self._select(
            "WHERE id > ? AND flow_runs <> '{}' AND (status = 'failed'"
            " OR (status = 'done' AND updated_at >= ?)) ORDER BY id LIMIT ?",
            (after_id, to_epoch(done_since), limit),
        )

    async def covered(self, entry_id: int) -> list[InboxEntry]:
        return await self._select(
            "WHERE superseded_by = ? ORDER BY COALESCE(event_time, received_at), id", (entry_id,)
        )

    async def claim_run(self, flow_run_id: str, state_id: str, worker: str) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "INSERT INTO inbox_run_claims (flow_run_id, state_id, worker, claimed_at)"
                " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                (flow_run_id, state_id, worker, self._clock()),
            )
            return bool(cur.rowcount)

        return await self._submit(job)

    async def run_claims(self, flow_run_ids: Iterable[str]) -> dict[str, str]:
        ids = list(flow_run_ids)

        def job(conn: sqlite3.Connection) -> dict[str, str]:
            out: dict[str, str] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for rid, worker in conn.execute(
                    "SELECT flow_run_id, worker FROM inbox_run_claims WHERE flow_run_id IN"
                    f" ({','.join('?' * len(chunk))}) ORDER BY claimed_at",
                    chunk,
                ):
                    out[rid] = worker
            return out

        return await self._submit(job)

    async def _select(self, where: str, params: tuple[Any, ...]) -> list[InboxEntry]:
        def job(conn: sqlite3.Connection) -> list[InboxEntry]:
            rows = conn.execute(f"SELECT {COLUMNS} FROM inbox {where}", params).fetchall()
            return [_sqlite_row(r) for r in rows]

        return await self._submit(job)

    async def get(self, entry_id: int) -> InboxEntry | None:
        rows = await self._select("WHERE id = ?", (entry_id,))
        return rows[0] if rows else None

    async def find(self, source: str, event_id: str) -> InboxEntry | None:
        rows = await self._select("WHERE source = ? AND event_id = ?", (source, event_id))
        return rows[0] if rows else None

    async def find_event(self, event_id: str) -> list[InboxEntry]:
        return await self._select("WHERE event_id = ? ORDER BY id", (event_id,))

    async def list(
        self, status: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[InboxEntry]:
        check_status(status)
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if since is not None:
            clauses.append("received_at >= ?")
            params.append(to_epoch(since))
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return await self._select(f"{where} ORDER BY id DESC LIMIT ?", (*params, limit))

    async def counts(self) -> dict[str, int]:
        def job(conn: sqlite3.Connection) -> dict[str, int]:
            out = dict.fromkeys(STATUSES, 0)
            for status, n in conn.execute("SELECT status, COUNT(*) FROM inbox GROUP BY status"):
                out[status] = n
            return out

        return await self._submit(job)

    async def oldest(self) -> dict[str, float]:
        now = self._clock()

        def job(conn: sqlite3.Connection) -> dict[str, float]:
            out = {"pending": 0.0, "dispatched": 0.0}
            for status in out:
                (t,) = conn.execute(
                    "SELECT MIN(updated_at) FROM inbox WHERE status = ?", (status,)
                ).fetchone()
                out[status] = 0.0 if t is None else max(0.0, now - t)
            return out

        return await self._submit(job)

    async def ping(self) -> None:
        await self._update(
            "INSERT INTO inbox_meta (key, value) VALUES ('ping', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(self._clock()),),
        )

    async def record_step(
        self, source: str, event_id: str, recipe: str, step: str, outputs: Mapping[str, Any]
    ) -> None:
        await self._update(
            "INSERT INTO inbox_steps (source, event_id, recipe, step, outputs, recorded_at)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (source, event_id, recipe, step)"
            " DO UPDATE SET outputs = excluded.outputs, recorded_at = excluded.recorded_at",
            (source, event_id, recipe, step, json.dumps(dict(outputs)), self._clock()),
        )

    async def completed_steps(
        self, source: str, event_id: str, recipe: str
    ) -> dict[str, dict[str, Any]]:
        def job(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
            rows = conn.execute(
                "SELECT step, outputs FROM inbox_steps WHERE source = ? AND event_id = ?"
                " AND recipe = ? ORDER BY recorded_at",
                (source, event_id, recipe),
            ).fetchall()
            return {step: json.loads(outputs) for step, outputs in rows}

        return await self._submit(job)


def _wrap(inbox: SQLiteInbox, exc: BaseException) -> InboxError:
    return InboxError(f"SQLite inbox {inbox.path}: {type(exc).__name__}: {exc}")


def _set_result_if_pending(fut: asyncio.Future[None], value: None) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception_if_pending(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
