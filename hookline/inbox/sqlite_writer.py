"""How the SQLite inbox writes: one connection, group commit, and two strategies, one of
which an inbox picks at construction (``SQLiteInbox(writer=...)``).

Both answer a caller only after the transaction holding its write has committed, and write
everything gathered in **one transaction** (one commit, one fsync per batch instead of per
request):

- `ThreadWriter` (``thread``, the default): a dedicated thread owns the connection and takes
  whatever is queued when it wakes up; any event loop in any thread may use it.
- `LoopWriter` (``loop``, what `hookline serve` uses): writes on the event loop that opened
  it: everything submitted during one turn of the loop is written together, then COMMIT (the
  fsync) runs on a helper thread while the next batch gathers; when another process holds
  the write lock it retries every 2 ms instead of blocking the loop. Only that loop may use
  it (InboxError otherwise).

A batch's puts become multi-row INSERTs (`_insert_puts`); every other write is a *job*, a
function of the connection run inside the batch's transaction under its own savepoint.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import queue
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from hookline.inbox.base import InboxError, NewEntry
from hookline.inbox.batching import (
    Gathered,
    PutKey,
    Request,
    cannot_store,
    missing,
    put_results,
    settle,
)

Job = Callable[[sqlite3.Connection], Any]
Write = Job | NewEntry
"""A job, or a put's row (written with the batch's other puts)."""

_PUT_COLUMNS = (
    "source, event_id, event_type, received_at, event_time, body, headers, status,"
    " not_before, updated_at"
)
_PUT_ROWS_PER_STATEMENT = 200  # 8 parameters a row, well under SQLite's 32766 limit


class Writer(ABC):
    """Runs the inbox's writes on one connection, a batch per transaction.

    Args:
        connect: opens the connection (tables created or upgraded); raises InboxError.
        path: the database file, for messages.
        max_batch: most writes in one transaction.
        busy_timeout: seconds to wait for another process holding the write lock.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        path: Path,
        max_batch: int,
        busy_timeout: float,
    ) -> None:
        self._connect = connect
        self.path = path
        self.max_batch = max_batch
        self.busy_timeout = busy_timeout
        self.batches = 0  # transactions committed, for tests and the bench

    @abstractmethod
    async def start(self) -> None:
        """Connect, from the event loop that will use it.

        Raises:
            InboxError: the inbox cannot be opened.
        """

    @abstractmethod
    async def stop(self) -> None:
        """Write what is queued, then close the connection."""

    @abstractmethod
    def submit(self, write: Write) -> asyncio.Future[Any]:
        """Queue ``write`` from the running loop; the future resolves (to the job's result, or
        a put's (inserted, entry id)) once its transaction has committed."""

    def _write(self, conn: sqlite3.Connection, batch: list[Request[Write]]) -> None:
        """Run the batch's jobs and puts inside the open transaction."""
        puts: list[Request[NewEntry]] = []
        for r in batch:
            if isinstance(r.item, NewEntry):
                puts.append(cast("Request[NewEntry]", r))
                continue
            # A savepoint per job: one failing job does not undo the others in the batch.
            conn.execute("SAVEPOINT job")
            try:
                r.result = r.item(conn)
            except Exception as exc:
                conn.execute("ROLLBACK TO job")
                r.error = exc if not isinstance(exc, sqlite3.Error) else self._wrap(exc)
            conn.execute("RELEASE job")
        if puts:
            self._insert_puts(conn, puts)

    def _insert_puts(self, conn: sqlite3.Connection, puts: list[Request[NewEntry]]) -> None:
        """All the batch's puts as multi-row INSERTs; duplicates resolve to the stored id.

        A chunk that fails is retried row by row (a savepoint each), so one bad row (a lone
        surrogate in an id, say) fails only its own put, not every event of the batch. If
        SQLite ended the whole transaction (disk full, I/O error), the error goes up to fail
        the batch.
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
                        r.result, r.error = None, cannot_store(self._name, r.item, exc)
                    conn.execute("RELEASE put")
            conn.execute("RELEASE puts")

    def _fail(
        self, conn: sqlite3.Connection, batch: list[Request[Write]], exc: BaseException
    ) -> None:
        """The transaction failed: roll back, and nobody in the batch is told "stored"."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        err = exc if isinstance(exc, InboxError) else self._wrap(exc)
        for r in batch:
            r.result, r.error = None, err

    @property
    def _name(self) -> str:
        return f"SQLite inbox {self.path}"

    def _wrap(self, exc: BaseException) -> InboxError:
        return InboxError(f"{self._name}: {type(exc).__name__}: {exc}")


def _insert_chunk(conn: sqlite3.Connection, chunk: list[Request[NewEntry]]) -> None:
    """One multi-row INSERT of ``chunk``'s puts; sets each put's result."""
    rows = [r.item for r in chunk]
    params = [v for row in rows for v in row]
    inserted = {(src, eid): int(i) for i, src, eid in conn.execute(_insert_sql(len(rows)), params)}
    existing: dict[PutKey, int] = {}
    for key in missing(rows, inserted):
        found = conn.execute("SELECT id FROM inbox WHERE source = ? AND event_id = ?", key)
        existing[key] = int(found.fetchone()[0])
    for r, result in zip(chunk, put_results(rows, inserted, existing), strict=True):
        r.result = result


@functools.cache
def _insert_sql(n: int) -> str:
    """The INSERT of ``n`` rows of `NewEntry` fields (numbered parameters, 8 a row)."""
    width = len(NewEntry._fields)
    received = NewEntry._fields.index("received_at") + 1
    values = []
    for i in range(0, n * width, width):
        row = [f"?{i + k}" for k in range(1, width + 1)]
        values.append("(" + ",".join([*row, f"?{i + received}", f"?{i + received}"]) + ")")
    # not_before and updated_at: the time it was received
    return (
        f"INSERT INTO inbox ({_PUT_COLUMNS}) VALUES {','.join(values)}"
        " ON CONFLICT (source, event_id) DO NOTHING RETURNING id, source, event_id"
    )


class ThreadWriter(Writer):
    """Writes on a dedicated thread that owns the connection (see the module docstring)."""

    _thread: threading.Thread | None = None
    _queue: queue.SimpleQueue[Request[Write] | None]  # made by start()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._queue = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, args=(loop, ready), name="hookline-inbox-writer", daemon=True
        )
        self._thread.start()
        await ready

    async def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(thread.join)
        self._thread = None

    def submit(self, write: Write) -> asyncio.Future[Any]:
        request = Request(write, asyncio.get_running_loop())
        self._queue.put(request)
        return request.future

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
        except InboxError as exc:
            loop.call_soon_threadsafe(_set_exception_if_pending, ready, exc)
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
                by_loop: dict[asyncio.AbstractEventLoop, list[Request[Write]]] = {}
                for r in batch:
                    by_loop.setdefault(r.loop, []).append(r)
                for lp, reqs in by_loop.items():
                    try:
                        lp.call_soon_threadsafe(settle, reqs)
                    except RuntimeError:  # that loop is closed; its callers are gone
                        pass
        finally:
            conn.close()

    def _write_batch(self, conn: sqlite3.Connection, batch: list[Request[Write]]) -> None:
        """One whole transaction."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._write(conn, batch)
            conn.execute("COMMIT")
            self.batches += 1
        except Exception as exc:
            self._fail(conn, batch, exc)


class LoopWriter(Writer):
    """Writes on the event loop that started it (see the module docstring)."""

    _home: asyncio.AbstractEventLoop | None = None
    _conn: sqlite3.Connection | None = None
    _committer: concurrent.futures.ThreadPoolExecutor | None = None
    _pending: Gathered[Write]  # made by start()
    _retry: asyncio.TimerHandle | None = None  # a flush waiting for another process's lock
    _busy_since: float | None = None
    _committing = False

    async def start(self) -> None:
        self._home = asyncio.get_running_loop()
        self._pending = Gathered()
        conn = self._connect()
        # Never wait inside SQLite (that would stall every request): retry from the loop.
        conn.execute("PRAGMA busy_timeout = 0")
        self._conn = conn
        self._committer = concurrent.futures.ThreadPoolExecutor(1, "hookline-inbox-commit")

    async def stop(self) -> None:
        if self._conn is None:
            return
        deadline = time.monotonic() + self.busy_timeout
        while (self._pending or self._committing) and time.monotonic() < deadline:
            if self._retry is not None:
                self._retry.cancel()
            self._flush()
            if self._pending or self._committing:
                await asyncio.sleep(0.002)
        self._conn.close()
        self._conn = None
        if self._committer is not None:
            self._committer.shutdown(wait=False)

    def submit(self, write: Write) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        if loop is not self._home:
            raise InboxError(
                f"sqlite:{self.path}: writer='loop' inbox used from another event loop; "
                "open it with writer='thread' to share it between loops or threads"
            )
        # Everything submitted during this turn of the event loop commits together.
        if not self._pending and self._retry is None and not self._committing:
            loop.call_soon(self._flush)
        return self._pending.add(write, loop).future

    def _flush(self) -> None:
        """Write everything gathered in one transaction on the loop, then COMMIT (the fsync)
        on a helper thread while the loop goes on and the next batch gathers. Never blocks
        the loop on another process's write lock (busy: try again in 2 ms)."""
        self._retry = None
        if self._committing:
            return  # _committed() starts the next batch
        conn = self._conn
        if conn is None or not self._pending.waiting():
            self._pending.take()
            return
        loop = asyncio.get_running_loop()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            now = time.monotonic()
            if self._busy_since is None:
                self._busy_since = now
            if now - self._busy_since < self.busy_timeout:
                self._retry = loop.call_later(0.002, self._flush)
                return
            self._busy_since = None
            failed = self._pending.take()
            self._fail(conn, failed, exc)
            settle(failed)
            return
        self._busy_since = None
        batch = self._pending.take(self.max_batch)
        try:
            self._write(conn, batch)
        except Exception as exc:
            self._fail(conn, batch, exc)
            settle(batch)
            if self._pending:
                loop.call_soon(self._flush)
            return
        self._committing = True
        done = loop.run_in_executor(self._committer, conn.execute, "COMMIT")
        done.add_done_callback(functools.partial(self._committed, conn, batch))

    def _committed(
        self, conn: sqlite3.Connection, batch: list[Request[Write]], done: asyncio.Future[Any]
    ) -> None:
        self._committing = False
        exc = None if done.cancelled() else done.exception()
        if done.cancelled() or exc is not None:
            self._fail(conn, batch, exc or InboxError("commit cancelled"))
        else:
            self.batches += 1
        settle(batch)
        if self._pending and self._retry is None:
            self._flush()


def _set_result_if_pending(fut: asyncio.Future[None], value: None) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception_if_pending(fut: asyncio.Future[None], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
