"""The durable inbox: every verified webhook is stored here before it is answered.

Two backends with one async API (`Inbox`):

- `SQLiteInbox` (default): one file under ``HOOKLINE_HOME``, WAL journal. All statements run on
  one writer thread that owns the connection. Whatever is queued when the thread wakes up is
  written in **one transaction** (group commit), and each caller's future is resolved only after
  that transaction has committed, so a request is never answered before its event is on disk
  and a commit (and its fsync) is paid once per batch instead of once per request.
- `PostgresInbox` (``HOOKLINE_DATABASE_URL=postgresql://...``): an asyncpg pool; every
  statement autocommits, concurrency is PostgreSQL's.

Errors:

    HooklineError
    └── InboxError             the store cannot be opened, written or read (-> HTTP 503)

``(source, event_id)`` is unique: `Inbox.put` of a known pair stores nothing and reports
``inserted=False`` with the existing entry's id, also under concurrent puts and across restarts.

Entry life cycle (the dispatcher drives it)::

    put -> pending --claim (lease)--> mark_dispatched -> dispatched -> mark_done -> done
                 ^                 \\-> retry_later (attempts+1, not_before) -/
                 +--- requeue <--- any status            mark_failed -> failed (attempts+1)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from hookline.config import CoreSettings, get_settings, private_dir, private_file
from hookline.errors import HooklineError

__all__ = [
    "STATUSES",
    "Inbox",
    "InboxEntry",
    "InboxError",
    "PostgresInbox",
    "SQLiteInbox",
    "open_inbox",
]

Status = Literal["pending", "dispatched", "done", "failed"]
STATUSES: tuple[str, ...] = ("pending", "dispatched", "done", "failed")
Clock = Callable[[], float]
T = TypeVar("T")


class InboxError(HooklineError):
    """The inbox cannot be opened, written or read; the message says which and where."""


@dataclass
class InboxEntry:
    """One stored webhook delivery."""

    id: int
    source: str
    event_id: str
    event_type: str
    received_at: datetime
    event_time: datetime | None
    body: bytes
    headers: dict[str, str]
    status: str
    attempts: int = 0
    last_error: str | None = None
    flow_runs: dict[str, str] = field(default_factory=dict)
    not_before: datetime | None = None
    lease_until: datetime | None = None
    updated_at: datetime | None = None


def _to_epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # a naive time is UTC, as the seed's test tool sends it
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def _from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")


class Inbox(ABC):
    """The inbox API shared by the receiver (put) and the dispatcher (everything else).

    Usable as ``inbox = open_inbox()`` (connects on first use), ``inbox = await open_inbox()``
    or ``async with open_inbox() as inbox``.
    """

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else time.time
        self._opened = False
        self._open_lock: asyncio.Lock | None = None

    # -- life cycle ---------------------------------------------------------------------
    async def open(self) -> Inbox:
        """Connect and create the tables if needed; idempotent."""
        if self._opened:
            return self
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self._open()
                self._opened = True
        return self

    def __await__(self) -> Generator[Any, None, Inbox]:
        return self.open().__await__()

    async def __aenter__(self) -> Inbox:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Finish pending writes and release the connection(s); idempotent."""
        if self._opened:
            self._opened = False
            await self._close()

    @abstractmethod
    async def _open(self) -> None: ...

    @abstractmethod
    async def _close(self) -> None: ...

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the inbox lives, for logs and /readyz (never a password)."""

    # -- receiver side ------------------------------------------------------------------
    @abstractmethod
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
        """Store one event unless ``(source, event_id)`` is known; returns (inserted, entry id).

        Returns only after the transaction holding the entry has committed.

        Raises:
            InboxError: the store could not commit (the caller answers 503), or did not
                within ``timeout`` seconds (the entry may still be stored later; a retry of
                the same event is then a duplicate).
        """

    # -- dispatcher side ----------------------------------------------------------------
    @abstractmethod
    async def claim(self, limit: int, *, lease_seconds: float) -> list[InboxEntry]:
        """Lease up to ``limit`` due pending entries, oldest first.

        A leased entry is not returned by another `claim` until the lease expires, so two
        dispatchers never take the same entry; a crashed dispatcher's entries come back.
        """

    @abstractmethod
    async def mark_dispatched(self, entry_id: int, flow_runs: Mapping[str, str]) -> None:
        """Set ``dispatched``, merge ``flow_runs`` (recipe -> flow run id), clear the lease."""

    @abstractmethod
    async def mark_done(self, entry_id: int) -> None:
        """Set status ``done`` and clear the lease."""

    @abstractmethod
    async def mark_failed(self, entry_id: int, error: str) -> None:
        """Set status ``failed``, record ``error``, count the attempt, clear the lease."""

    @abstractmethod
    async def retry_later(self, entry_id: int, error: str, delay_seconds: float) -> None:
        """Back to ``pending``, due in ``delay_seconds``; attempts += 1, error recorded."""

    @abstractmethod
    async def requeue(self, entry_id: int) -> None:
        """Replay: back to ``pending``, due now, lease cleared (attempts and flow runs kept)."""

    @abstractmethod
    async def get(self, entry_id: int) -> InboxEntry | None:
        """The entry with this id, or None."""

    @abstractmethod
    async def find(self, source: str, event_id: str) -> InboxEntry | None:
        """The entry for ``(source, event_id)``, or None."""

    @abstractmethod
    async def find_event(self, event_id: str) -> list[InboxEntry]:
        """Entries with this event id from any source, oldest first."""

    @abstractmethod
    async def list(
        self, status: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[InboxEntry]:
        """Entries, newest first, optionally with this status / received at or after ``since``."""

    @abstractmethod
    async def counts(self) -> dict[str, int]:
        """Number of entries per status (every status present, zero included)."""

    @abstractmethod
    async def ping(self) -> None:
        """Write a heartbeat row.

        Raises:
            InboxError: the inbox cannot be written.
        """

    @abstractmethod
    async def record_step(
        self, source: str, event_id: str, recipe: str, step: str, outputs: Mapping[str, Any]
    ) -> None:
        """Remember that ``step`` of ``recipe`` completed for this event, with its outputs."""

    @abstractmethod
    async def completed_steps(
        self, source: str, event_id: str, recipe: str
    ) -> dict[str, dict[str, Any]]:
        """Steps of ``recipe`` recorded for this event: step id -> outputs."""


# ------------------------------------------------------------------------------------------
# SQLite
# ------------------------------------------------------------------------------------------

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
"""

_COLUMNS = (
    "id, source, event_id, event_type, received_at, event_time, body, headers, status, "
    "attempts, last_error, flow_runs, not_before, lease_until, updated_at"
)


def _sqlite_row(row: tuple[Any, ...]) -> InboxEntry:
    return InboxEntry(
        id=row[0],
        source=row[1],
        event_id=row[2],
        event_type=row[3],
        received_at=datetime.fromtimestamp(row[4], UTC),
        event_time=_from_epoch(row[5]),
        body=bytes(row[6]),
        headers=json.loads(row[7]),
        status=row[8],
        attempts=row[9],
        last_error=row[10],
        flow_runs=json.loads(row[11]),
        not_before=_from_epoch(row[12]),
        lease_until=_from_epoch(row[13]),
        updated_at=_from_epoch(row[14]),
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
        timer = loop.call_later(timeout, _expire, fut, timeout, self.description)
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
        _check_status(status)
        now = self._clock()
        params = (
            source,
            event_id,
            event_type,
            now,
            _to_epoch(event_time),
            body,
            json.dumps(dict(headers), separators=(",", ":")),
            status,
            now,
            now,
        )

        # Written by the writer thread with every other queued put in one multi-row INSERT.
        result: tuple[bool, int] = await self._submit(None, params, timeout)
        return result

    async def claim(self, limit: int, *, lease_seconds: float) -> list[InboxEntry]:
        now = self._clock()

        def job(conn: sqlite3.Connection) -> list[InboxEntry]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM inbox WHERE status = 'pending' AND not_before <= ?"
                " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY id LIMIT ?",
                (now, now, limit),
            ).fetchall()
            ids = [r[0] for r in rows]
            conn.executemany(
                "UPDATE inbox SET lease_until = ?, updated_at = ? WHERE id = ?",
                [(now + lease_seconds, now, i) for i in ids],
            )
            entries = [_sqlite_row(r) for r in rows]
            for e in entries:
                e.lease_until = _from_epoch(now + lease_seconds)
            return entries

        return await self._submit(job)

    async def _update(self, sql: str, params: tuple[Any, ...]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(sql, params)

        await self._submit(job)

    async def mark_dispatched(self, entry_id: int, flow_runs: Mapping[str, str]) -> None:
        now = self._clock()
        merge = json.dumps(dict(flow_runs))

        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE inbox SET status = 'dispatched', lease_until = NULL, updated_at = ?,"
                " flow_runs = json_patch(flow_runs, ?) WHERE id = ?",
                (now, merge, entry_id),
            )

        await self._submit(job)

    async def mark_done(self, entry_id: int) -> None:
        await self._update(
            "UPDATE inbox SET status = 'done', lease_until = NULL, updated_at = ? WHERE id = ?",
            (self._clock(), entry_id),
        )

    async def mark_failed(self, entry_id: int, error: str) -> None:
        await self._update(
            "UPDATE inbox SET status = 'failed', lease_until = NULL, last_error = ?,"
            " attempts = attempts + 1, updated_at = ? WHERE id = ?",
            (error, self._clock(), entry_id),
        )

    async def retry_later(self, entry_id: int, error: str, delay_seconds: float) -> None:
        now = self._clock()
        await self._update(
            "UPDATE inbox SET status = 'pending', lease_until = NULL, last_error = ?,"
            " attempts = attempts + 1, not_before = ?, updated_at = ? WHERE id = ?",
            (error, now + max(0.0, delay_seconds), now, entry_id),
        )

    async def requeue(self, entry_id: int) -> None:
        now = self._clock()
        await self._update(
            "UPDATE inbox SET status = 'pending', lease_until = NULL, not_before = ?,"
            " updated_at = ? WHERE id = ?",
            (now, now, entry_id),
        )

    async def _select(self, where: str, params: tuple[Any, ...]) -> list[InboxEntry]:
        def job(conn: sqlite3.Connection) -> list[InboxEntry]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM inbox {where}", params).fetchall()
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
        _check_status(status)
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if since is not None:
            clauses.append("received_at >= ?")
            params.append(_to_epoch(since))
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return await self._select(f"{where} ORDER BY id DESC LIMIT ?", (*params, limit))

    async def counts(self) -> dict[str, int]:
        def job(conn: sqlite3.Connection) -> dict[str, int]:
            out = dict.fromkeys(STATUSES, 0)
            for status, n in conn.execute("SELECT status, COUNT(*) FROM inbox GROUP BY status"):
                out[status] = n
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


def _expire(fut: asyncio.Future[Any], timeout: float, where: str) -> None:
    if not fut.done():
        fut.set_exception(InboxError(f"{where}: not committed within {timeout:g} s"))


def _set_result_if_pending(fut: asyncio.Future[None], value: None) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception_if_pending(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


# ------------------------------------------------------------------------------------------
# PostgreSQL
# ------------------------------------------------------------------------------------------


def _pg_schema(schema: str) -> str:
    return f"""
CREATE SCHEMA IF NOT EXISTS "{schema}";
CREATE TABLE IF NOT EXISTS "{schema}".inbox (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT        NOT NULL,
    event_id    TEXT        NOT NULL,
    event_type  TEXT        NOT NULL,
    received_at TIMESTAMPTZ NOT NULL,
    event_time  TIMESTAMPTZ,
    body        BYTEA       NOT NULL,
    headers     TEXT        NOT NULL,
    status      TEXT        NOT NULL,
    attempts    INTEGER     NOT NULL DEFAULT 0,
    last_error  TEXT,
    flow_runs   JSONB       NOT NULL DEFAULT '{{}}'::jsonb,
    not_before  TIMESTAMPTZ NOT NULL,
    lease_until TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (source, event_id)
);
CREATE INDEX IF NOT EXISTS inbox_due ON "{schema}".inbox (status, not_before, id);
CREATE INDEX IF NOT EXISTS inbox_event ON "{schema}".inbox (event_id);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_steps (
    source      TEXT        NOT NULL,
    event_id    TEXT        NOT NULL,
    recipe      TEXT        NOT NULL,
    step        TEXT        NOT NULL,
    outputs     TEXT        NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (source, event_id, recipe, step)
);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def _pg_row(row: Mapping[str, Any]) -> InboxEntry:
    flow_runs = row["flow_runs"]
    return InboxEntry(
        id=row["id"],
        source=row["source"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        received_at=row["received_at"],
        event_time=row["event_time"],
        body=bytes(row["body"]),
        headers=json.loads(row["headers"]),
        status=row["status"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        flow_runs=json.loads(flow_runs) if isinstance(flow_runs, str) else dict(flow_runs),
        not_before=row["not_before"],
        lease_until=row["lease_until"],
        updated_at=row["updated_at"],
    )


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


class PostgresInbox(Inbox):
    """PostgreSQL through an asyncpg pool; tables live in ``schema`` (created if missing).

    Args:
        dsn: ``postgresql://user:pass@host:port/db``.
        schema: the PostgreSQL schema holding the tables (tests use one per run).
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "hookline",
        min_size: int = 2,
        max_size: int = 16,
        clock: Clock | None = None,
    ) -> None:
        super().__init__(clock=clock)
        if not schema.replace("_", "").isalnum():
            raise ValueError(f"schema {schema!r}: use letters, digits and '_' only")
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self._pool: Any = None
        self._t = f'"{schema}".inbox'
        self.max_inflight = 2
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[tuple[bool, int]]]] = []
        self._inflight = 0
        self._flushers: set[asyncio.Task[None]] = set()

    @property
    def description(self) -> str:
        import urllib.parse

        u = urllib.parse.urlsplit(self.dsn)
        host = u.hostname or "localhost"
        return f"postgresql://{host}:{u.port or 5432}{u.path} schema {self.schema}"

    async def _open(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(
                self.dsn, min_size=self.min_size, max_size=self.max_size
            )
            async with self._pool.acquire() as conn:
                # Serialise schema creation between processes starting at the same time.
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(7201155)")
                    await conn.execute(_pg_schema(self.schema))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise InboxError(f"cannot open the inbox at {self.description}: {exc}") from exc

    async def _close(self) -> None:
        if self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def _call(self, fn: Callable[[Any], Awaitable[T]]) -> T:
        import asyncpg

        await self.open()
        try:
            async with self._pool.acquire() as conn:
                return await fn(conn)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise InboxError(f"inbox {self.description}: {type(exc).__name__}: {exc}") from exc

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
        _check_status(status)
        if not self._opened:
            await self.open()
        et = _to_epoch(event_time)
        row = (
            source,
            event_id,
            event_type,
            _dt(self._clock()),
            None if et is None else _dt(et),
            body,
            json.dumps(dict(headers), separators=(",", ":")),
            status,
        )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[bool, int]] = loop.create_future()
        self._pending.append((row, fut))
        if self._inflight < self.max_inflight:
            self._inflight += 1
            self._flushers.add(loop.create_task(self._flush()))
        timer = (
            None
            if timeout is None
            else loop.call_later(timeout, _expire, fut, timeout, self.description)
        )
        try:
            return await fut
        finally:
            if timer is not None:
                timer.cancel()

    async def _flush(self) -> None:
        """Group commit: every put queued so far in one INSERT (one round trip, one commit);
        up to ``max_inflight`` batches in flight, so the next one gathers meanwhile."""
        import asyncpg

        try:
            await asyncio.sleep(0)  # let this turn of the loop queue its puts first
            while self._pending:
                batch = [(r, f) for r, f in self._pending[:1000] if not f.done()]
                del self._pending[:1000]
                if not batch:
                    continue
                results: list[tuple[bool, int] | InboxError]
                try:
                    results = list(await self._insert_batch([r for r, _ in batch]))
                except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
                    err = InboxError(f"inbox {self.description}: {type(exc).__name__}: {exc}")
                    results = [err] * len(batch)  # unreachable: every put of the batch retries
                except Exception:  # whatever it is, every caller's future must be settled
                    # One bad row (a NUL in a text column, say) fails the whole INSERT: retry
                    # the rows one by one, so it fails alone instead of 503-ing its batch.
                    results = [await self._insert_one(r) for r, _ in batch]
                for (_, f), result in zip(batch, results, strict=True):
                    if f.done():
                        continue
                    if isinstance(result, InboxError):
                        f.set_exception(result)
                    else:
                        f.set_result(result)
        finally:
            self._inflight -= 1
            self._flushers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def _insert_one(self, row: tuple[Any, ...]) -> tuple[bool, int] | InboxError:
        """One row on its own (after its batch failed): its result, or its own error."""
        try:
            [result] = await self._insert_batch([row])
        except Exception as exc:  # becomes this put's error, never a hang
            return InboxError(
                f"inbox {self.description}: cannot store {row[0]}/{row[1]!r}:"
                f" {type(exc).__name__}: {exc}"
            )
        return result

    async def _insert_batch(self, rows: list[tuple[Any, ...]]) -> list[tuple[bool, int]]:
        cols = list(zip(*rows, strict=True))
        async with self._pool.acquire() as conn:
            inserted = {
                (r["source"], r["event_id"]): int(r["id"])
                for r in await conn.fetch(
                    f"INSERT INTO {self._t} (source, event_id, event_type, received_at,"
                    " event_time, body, headers, status, not_before, updated_at)"
                    " SELECT s, e, t, r, et, b, h, st, r, r FROM unnest($1::text[], $2::text[],"
                    " $3::text[], $4::timestamptz[], $5::timestamptz[], $6::bytea[],"
                    " $7::text[], $8::text[]) AS u(s, e, t, r, et, b, h, st)"
                    " ON CONFLICT (source, event_id) DO NOTHING RETURNING id, source, event_id",
                    *[list(c) for c in cols],
                )
            }
            missing = [(r[0], r[1]) for r in rows if (r[0], r[1]) not in inserted]
            existing: dict[tuple[str, str], int] = {}
            if missing:
                for r in await conn.fetch(
                    f"SELECT id, source, event_id FROM {self._t} WHERE (source, event_id) IN"
                    " (SELECT * FROM unnest($1::text[], $2::text[]))",
                    [m[0] for m in missing],
                    [m[1] for m in missing],
                ):
                    existing[(r["source"], r["event_id"])] = int(r["id"])
        out: list[tuple[bool, int]] = []
        for r in rows:
            key = (r[0], r[1])
            entry_id = inserted.pop(key, None)  # the first put of a key in the batch inserted it
            if entry_id is not None:
                existing[key] = entry_id
                out.append((True, entry_id))
            else:
                out.append((False, existing[key]))
        return out

    async def claim(self, limit: int, *, lease_seconds: float) -> list[InboxEntry]:
        now = self._clock()

        async def fn(conn: Any) -> list[InboxEntry]:
            rows = await conn.fetch(
                f"UPDATE {self._t} SET lease_until = $2, updated_at = $1 WHERE id IN ("
                f" SELECT id FROM {self._t} WHERE status = 'pending' AND not_before <= $1"
                " AND (lease_until IS NULL OR lease_until <= $1) ORDER BY id LIMIT $3"
                f" FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
                _dt(now),
                _dt(now + lease_seconds),
                limit,
            )
            return sorted((_pg_row(r) for r in rows), key=lambda e: e.id)

        return await self._call(fn)

    async def _exec(self, sql: str, *args: Any) -> None:
        async def fn(conn: Any) -> None:
            await conn.execute(sql, *args)

        await self._call(fn)

    async def mark_dispatched(self, entry_id: int, flow_runs: Mapping[str, str]) -> None:
        await self._exec(
            f"UPDATE {self._t} SET status = 'dispatched', lease_until = NULL, updated_at = $1,"
            " flow_runs = flow_runs || $2::jsonb WHERE id = $3",
            _dt(self._clock()),
            json.dumps(dict(flow_runs)),
            entry_id,
        )

    async def mark_done(self, entry_id: int) -> None:
        await self._exec(
            f"UPDATE {self._t} SET status = 'done', lease_until = NULL, updated_at = $1"
            " WHERE id = $2",
            _dt(self._clock()),
            entry_id,
        )

    async def mark_failed(self, entry_id: int, error: str) -> None:
        await self._exec(
            f"UPDATE {self._t} SET status = 'failed', lease_until = NULL, last_error = $1,"
            " attempts = attempts + 1, updated_at = $2 WHERE id = $3",
            error,
            _dt(self._clock()),
            entry_id,
        )

    async def retry_later(self, entry_id: int, error: str, delay_seconds: float) -> None:
        now = self._clock()
        await self._exec(
            f"UPDATE {self._t} SET status = 'pending', lease_until = NULL, last_error = $1,"
            " attempts = attempts + 1, not_before = $2, updated_at = $3 WHERE id = $4",
            error,
            _dt(now + max(0.0, delay_seconds)),
            _dt(now),
            entry_id,
        )

    async def requeue(self, entry_id: int) -> None:
        now = _dt(self._clock())
        await self._exec(
            f"UPDATE {self._t} SET status = 'pending', lease_until = NULL, not_before = $1,"
            " updated_at = $1 WHERE id = $2",
            now,
            entry_id,
        )

    async def _select(self, where: str, *args: Any) -> list[InboxEntry]:
        async def fn(conn: Any) -> list[InboxEntry]:
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM {self._t} {where}", *args)
            return [_pg_row(r) for r in rows]

        return await self._call(fn)

    async def get(self, entry_id: int) -> InboxEntry | None:
        rows = await self._select("WHERE id = $1", entry_id)
        return rows[0] if rows else None

    async def find(self, source: str, event_id: str) -> InboxEntry | None:
        rows = await self._select("WHERE source = $1 AND event_id = $2", source, event_id)
        return rows[0] if rows else None

    async def find_event(self, event_id: str) -> list[InboxEntry]:
        return await self._select("WHERE event_id = $1 ORDER BY id", event_id)

    async def list(
        self, status: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[InboxEntry]:
        _check_status(status)
        clauses: list[str] = []
        args: list[Any] = []
        if status is not None:
            args.append(status)
            clauses.append(f"status = ${len(args)}")
        if since is not None:
            args.append(_dt(_to_epoch(since) or 0.0))
            clauses.append(f"received_at >= ${len(args)}")
        args.append(limit)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return await self._select(f"{where} ORDER BY id DESC LIMIT ${len(args)}", *args)

    async def counts(self) -> dict[str, int]:
        async def fn(conn: Any) -> dict[str, int]:
            out = dict.fromkeys(STATUSES, 0)
            for r in await conn.fetch(
                f"SELECT status, COUNT(*) AS n FROM {self._t} GROUP BY status"
            ):
                out[r["status"]] = int(r["n"])
            return out

        return await self._call(fn)

    async def ping(self) -> None:
        await self._exec(
            f"INSERT INTO \"{self.schema}\".inbox_meta (key, value) VALUES ('ping', $1)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            str(self._clock()),
        )

    async def record_step(
        self, source: str, event_id: str, recipe: str, step: str, outputs: Mapping[str, Any]
    ) -> None:
        await self._exec(
            f'INSERT INTO "{self.schema}".inbox_steps'
            " (source, event_id, recipe, step, outputs, recorded_at) VALUES ($1,$2,$3,$4,$5,$6)"
            " ON CONFLICT (source, event_id, recipe, step)"
            " DO UPDATE SET outputs = excluded.outputs, recorded_at = excluded.recorded_at",
            source,
            event_id,
            recipe,
            step,
            json.dumps(dict(outputs)),
            _dt(self._clock()),
        )

    async def completed_steps(
        self, source: str, event_id: str, recipe: str
    ) -> dict[str, dict[str, Any]]:
        async def fn(conn: Any) -> dict[str, dict[str, Any]]:
            rows = await conn.fetch(
                f'SELECT step, outputs FROM "{self.schema}".inbox_steps WHERE source = $1'
                " AND event_id = $2 AND recipe = $3 ORDER BY recorded_at",
                source,
                event_id,
                recipe,
            )
            return {r["step"]: json.loads(r["outputs"]) for r in rows}

        return await self._call(fn)


def open_inbox(
    settings: CoreSettings | None = None,
    *,
    schema: str | None = None,
    clock: Clock | None = None,
) -> Inbox:
    """The inbox the settings point at: PostgreSQL if ``database_url`` is set, else SQLite.

    The PostgreSQL schema is ``schema``, else the URL's ``?schema=`` parameter, else
    ``hookline``. The result connects on first use; ``await open_inbox()`` connects at once.

    Raises:
        ConfigError: ``HOOKLINE_DATABASE_URL`` is neither empty nor a postgresql:// URL.
    """
    import urllib.parse

    from hookline.errors import ConfigError

    s = settings if settings is not None else get_settings()
    url = s.database_url
    if url:
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"HOOKLINE_DATABASE_URL={url.split('://')[0]}://...: only postgresql:// URLs "
                "are supported; unset it to use SQLite under HOOKLINE_HOME"
            )
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        url_schema = next((v for k, v in query if k == "schema"), None)
        rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
        dsn = urllib.parse.urlunsplit(parts._replace(query=rest))
        try:
            return PostgresInbox(dsn, schema=schema or url_schema or "hookline", clock=clock)
        except ValueError as exc:
            raise ConfigError(f"HOOKLINE_DATABASE_URL: {exc}") from None
    return SQLiteInbox(s.sqlite_path, clock=clock)
