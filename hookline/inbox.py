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
    pending --claim with a sequencer, older event of its lane already ran--> late

Every transition takes ``expect``: the status the caller saw. The update happens only if the
entry still has it (and the call returns False otherwise), so two dispatchers following the
same runs cannot both resend an event or count its attempt twice.

**Lanes** (``order_by``). `claim` with a *sequencer* first sequences the pending entries it
has not seen, strictly in arrival (id) order: the sequencer names each entry's lane keys, and
the entry joins those lanes (`inbox_lanes`, rows of active entries only). An entry is then
claimable only when no active entry of any of its lanes comes before it by (event time, id)
and no other entry of those lanes has been claimed (started) and is still active,
so a lane runs one event at a time, in event-time order, across the whole inbox, every
recipe, restarts and lease expiry. On PostgreSQL, sequencing and claiming run under one
advisory lock, so several dispatchers share lanes safely. Claiming an entry records it as
its lanes' high-water mark (`inbox_lane_marks`); an entry sequenced after a *later* event of
its lane was claimed is a late arrival: with ``skip_if_late`` it ends ``late`` (recorded,
listed, replayable by hand, not run), else it runs.

**Coalescing.** A sequencer may also give an entry a coalesce key (with a quiet period and
a longest wait). Entries of one key that are waiting form a burst (`inbox_coalesce`): only
the latest (by event time, id) is claimable, and only once no entry of the key arrived for
``quiet`` seconds or the first has waited ``max_wait``; the lane order between them does not
apply (they are one run). Claiming it marks the others ``superseded`` by it; `covered` lists
them for its run.

**Run claims** (`claim_run`): a worker records (flow run, Scheduled state id) before it
executes a run; the first claim wins, so one Scheduled state is executed once even when
two workers (or one worker's stale backlog) race for it, while a later Retry (a new
Scheduled state) can run again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import queue
import sqlite3
import threading
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from hookline.config import CoreSettings, get_settings, private_dir, private_file
from hookline.errors import HooklineError

__all__ = [
    "FINAL_STATUSES",
    "STATUSES",
    "Inbox",
    "InboxEntry",
    "InboxError",
    "PostgresInbox",
    "SQLiteInbox",
    "open_inbox",
]

Status = Literal["pending", "dispatched", "done", "failed", "late", "superseded"]
STATUSES: tuple[str, ...] = ("pending", "dispatched", "done", "failed", "late", "superseded")
FINAL_STATUSES: frozenset[str] = frozenset({"done", "failed", "late", "superseded"})
Clock = Callable[[], float]
T = TypeVar("T")
log = logging.getLogger("hookline.inbox")


class InboxError(HooklineError):
    """The inbox cannot be opened, written or read; the message says which and where."""


@dataclass(frozen=True)
class Sequenced:
    """What a sequencer says of one entry: its lane keys, and whether it is skipped when an
    event of one of its lanes with a later event time was already claimed."""

    lanes: tuple[str, ...] = ()
    skip_if_late: bool = True
    coalesce: str | None = None
    """Events of one coalesce key that wait together run once, for the latest of them."""
    quiet: float = 0.0
    """Coalesce: the latest runs once no event of its key arrived for this long ..."""
    max_wait: float = 0.0
    """... or once the first of them has waited this long."""


Sequencer = Callable[["InboxEntry"], Sequenced]


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
    seq: int = 0
    """0: not sequenced into lanes yet; 2: likewise, and never late (a replay); 1: sequenced."""
    superseded_by: int | None = None
    """The entry whose run covered this one (status ``superseded``, by ``coalesce``)."""
    note: str | None = None
    """Why it ended ``done`` without a run ("no recipe matched"), set by `mark_done`."""


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
    async def claim(
        self, limit: int, *, lease_seconds: float, sequencer: Sequencer | None = None
    ) -> list[InboxEntry]:
        """Lease up to ``limit`` due pending entries, oldest first.

        A leased entry is not returned by another `claim` until the lease expires, so two
        dispatchers never take the same entry; a crashed dispatcher's entries come back.
        With ``sequencer``, entries are sequenced into lanes first and only each lane's
        head is claimable (see the module docstring); late arrivals may end ``late``.
        """

    @abstractmethod
    async def mark_dispatched(
        self, entry_id: int, flow_runs: Mapping[str, str], *, expect: str | None = None
    ) -> bool:
        """Set ``dispatched``, merge ``flow_runs`` (recipe -> flow run id), clear the lease.

        With ``expect``, only if the entry's status is still that; returns whether it was set.
        """

    @abstractmethod
    async def mark_done(
        self, entry_id: int, *, expect: str | None = None, note: str | None = None
    ) -> bool:
        """Set status ``done``, clear the lease, leave its lanes (see `mark_dispatched`);
        ``note`` (None clears it) says why it is done without a run, e.g. no recipe matched.
        ``last_error`` is kept: the last failure before it succeeded (history)."""

    @abstractmethod
    async def mark_failed(self, entry_id: int, error: str, *, expect: str | None = None) -> bool:
        """Set status ``failed``, record ``error``, count the attempt, clear the lease, leave
        its lanes (see `mark_dispatched` for ``expect``)."""

    @abstractmethod
    async def retry_later(
        self, entry_id: int, error: str, delay_seconds: float, *, expect: str | None = None
    ) -> bool:
        """Back to ``pending``, due in ``delay_seconds``; attempts += 1, error recorded; it
        keeps its place in its lanes (see `mark_dispatched` for ``expect``)."""

    @abstractmethod
    async def requeue(self, entry_id: int) -> None:
        """Replay: back to ``pending``, due now, lease cleared (attempts and flow runs kept);
        sequenced again, and never skipped as late: a replay by hand runs. Its recorded
        ``on_failure.*`` steps are forgotten, so a replay that fails tells on-call again."""

    @abstractmethod
    async def reopen(self, entry_id: int, recipe: str, flow_run_id: str) -> bool:
        """A run of a settled (``done`` or ``failed``) entry started again from Prefect (the
        UI's Retry): back to ``dispatched``, so the dispatcher follows the run to its new end.
        The entry's recorded ``on_failure.*`` steps of ``recipe`` are forgotten, as for a
        replay. False (nothing changed) unless the entry is settled and ``flow_run_id`` is its
        run of ``recipe``."""

    @abstractmethod
    async def dispatched(self, after_id: int = 0, limit: int = 500) -> list[InboxEntry]:
        """``dispatched`` entries with an id above ``after_id``, oldest first (for paging)."""

    @abstractmethod
    async def settled(self, after_id: int, limit: int, *, done_since: datetime) -> list[InboxEntry]:
        """Entries with flow runs that are ``failed``, or ``done`` and changed at or after
        ``done_since``; id above ``after_id``, oldest first (for paging)."""

    @abstractmethod
    async def covered(self, entry_id: int) -> list[InboxEntry]:
        """The entries superseded by this one (its burst), oldest event first."""

    @abstractmethod
    async def claim_run(self, flow_run_id: str, state_id: str, worker: str) -> bool:
        """Record that ``worker`` executes the flow run's Scheduled state ``state_id``;
        False if that state was claimed before (by anyone: execute nothing then)."""

    @abstractmethod
    async def run_claims(self, flow_run_ids: Iterable[str]) -> dict[str, str]:
        """flow run id -> the worker of its latest claim, for the runs that have one."""

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
    async def oldest(self) -> dict[str, float]:
        """Seconds since the least recently changed ``pending`` and ``dispatched`` entry
        changed (0 when there is none): an event stuck in one of them shows here."""

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
SEQUENCE_BATCH = 200


def _entry_time(entry: InboxEntry) -> float:
    """The time an entry is ordered by in its lanes: its event time, else its arrival."""
    return (entry.event_time or entry.received_at).timestamp()


def _sequence_all(
    entries: list[InboxEntry], sequencer: Sequencer
) -> list[tuple[InboxEntry, Sequenced]]:
    out = []
    for e in entries:
        try:
            s = sequencer(e)
        except Exception:  # the dispatcher reports a bad event when it dispatches it
            log.exception("cannot compute the lanes of entry %s; it joins none", e.id)
            s = Sequenced()
        out.append((e, s))
    return out


def _late_message(entry: InboxEntry, lane: str, mark: tuple[float, int]) -> str:
    return (
        f"late: lane {lane!r} already ran a later event (entry {mark[1]}, event time "
        f"{_from_epoch(mark[0])}); not run, so it cannot undo newer state "
        f"(recipe setting late: skip). Replay it by hand: hookline replay {entry.event_id}"
    )


def _is_late(
    entry: InboxEntry, seq: Sequenced, marks: Mapping[str, tuple[float, int]]
) -> str | None:
    """The late message if ``entry`` comes after its lanes' high-water marks, else None."""
    if not seq.skip_if_late:
        return None
    mine = (_entry_time(entry), entry.id)
    for lane in seq.lanes:
        mark = marks.get(lane)
        if mark is not None and mark > mine:
            return _late_message(entry, lane, mark)
    return None


_COLUMNS = (
    "id, source, event_id, event_type, received_at, event_time, body, headers, status, "
    "attempts, last_error, flow_runs, not_before, lease_until, updated_at, seq, superseded_by,"
    " note"
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
            plan = await asyncio.to_thread(_sequence_all, fresh, sequencer)
        now = self._clock()

        def job(conn: sqlite3.Connection) -> list[InboxEntry]:
            if plan:
                self._sequence(conn, plan, now)
            lanes = sequencer is not None
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM inbox WHERE status = 'pending' AND not_before <= ?"
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
                e.lease_until = _from_epoch(now + lease_seconds)
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
            late = _is_late(entry, seq, marks) if still[entry.id] == 0 else None
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
                [(lane, entry.id, _entry_time(entry)) for lane in seq.lanes],
            )
            if seq.coalesce is not None and still[entry.id] == 0:  # a replay runs alone
                conn.execute(
                    "INSERT OR IGNORE INTO inbox_coalesce"
                    " (key, entry_id, event_time, received, quiet, max_wait)"
                    " VALUES (?,?,?,?,?,?)",
                    (
                        seq.coalesce,
                        entry.id,
                        _entry_time(entry),
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
            (after_id, _to_epoch(done_since), limit),
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


PG_SCHEMA_VERSION = "3"
"""Bump when `_pg_schema` changes: processes then apply it (idempotently) once."""


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
ALTER TABLE "{schema}".inbox ADD COLUMN IF NOT EXISTS seq SMALLINT NOT NULL DEFAULT 0;
ALTER TABLE "{schema}".inbox ADD COLUMN IF NOT EXISTS superseded_by BIGINT;
ALTER TABLE "{schema}".inbox ADD COLUMN IF NOT EXISTS note TEXT;
CREATE TABLE IF NOT EXISTS "{schema}".inbox_coalesce (
    key         TEXT             NOT NULL,
    entry_id    BIGINT           NOT NULL,
    event_time  DOUBLE PRECISION NOT NULL,
    received    DOUBLE PRECISION NOT NULL,
    quiet       DOUBLE PRECISION NOT NULL,
    max_wait    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (key, entry_id)
);
CREATE INDEX IF NOT EXISTS inbox_coalesce_entry ON "{schema}".inbox_coalesce (entry_id);
CREATE INDEX IF NOT EXISTS inbox_unsequenced ON "{schema}".inbox (id)
    WHERE status = 'pending' AND seq <> 1;
CREATE TABLE IF NOT EXISTS "{schema}".inbox_lanes (
    lane        TEXT             NOT NULL,
    entry_id    BIGINT           NOT NULL,
    event_time  DOUBLE PRECISION NOT NULL,
    started     BOOLEAN          NOT NULL DEFAULT FALSE,
    PRIMARY KEY (lane, entry_id)
);
CREATE INDEX IF NOT EXISTS inbox_lanes_entry ON "{schema}".inbox_lanes (entry_id);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_lane_marks (
    lane        TEXT             PRIMARY KEY,
    event_time  DOUBLE PRECISION NOT NULL,
    entry_id    BIGINT           NOT NULL
);
CREATE TABLE IF NOT EXISTS "{schema}".inbox_run_claims (
    flow_run_id TEXT        NOT NULL,
    state_id    TEXT        NOT NULL,
    worker      TEXT        NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (flow_run_id, state_id)
);
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
        seq=row["seq"],
        superseded_by=row["superseded_by"],
        note=row["note"],
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
                    # DDL takes table locks even when there is nothing to do (ALTER TABLE an
                    # ACCESS EXCLUSIVE one): a process starting next to running ones could
                    # deadlock with their claims. Run it only when the schema is not current.
                    if await self._schema_version(conn) != PG_SCHEMA_VERSION:
                        await conn.execute(_pg_schema(self.schema))
                        await conn.execute(
                            f'INSERT INTO "{self.schema}".inbox_meta (key, value)'
                            " VALUES ('schema_version', $1) ON CONFLICT (key)"
                            " DO UPDATE SET value = excluded.value",
                            PG_SCHEMA_VERSION,
                        )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            raise InboxError(f"cannot open the inbox at {self.description}: {exc}") from exc

    async def _schema_version(self, conn: Any) -> str | None:
        if await conn.fetchval("SELECT to_regclass($1)", f'"{self.schema}".inbox_meta') is None:
            return None
        value: str | None = await conn.fetchval(
            f"SELECT value FROM \"{self.schema}\".inbox_meta WHERE key = 'schema_version'"
        )
        return value

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

    def _lock_key(self) -> int:
        """The advisory lock that serialises sequencing and claiming in this schema."""
        return 7201156 + zlib.crc32(self.schema.encode()) % 1_000_000

    async def claim(
        self, limit: int, *, lease_seconds: float, sequencer: Sequencer | None = None
    ) -> list[InboxEntry]:
        now = self._clock()
        s = f'"{self.schema}"'

        async def fn(conn: Any) -> list[InboxEntry]:
            if sequencer is None:
                rows = await conn.fetch(
                    f"UPDATE {self._t} SET lease_until = $2, updated_at = $1, seq = 1"
                    f" WHERE id IN (SELECT id FROM {self._t} WHERE status = 'pending'"
                    " AND not_before <= $1 AND (lease_until IS NULL OR lease_until <= $1)"
                    f" ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {_COLUMNS}",
                    _dt(now),
                    _dt(now + lease_seconds),
                    limit,
                )
                return sorted((_pg_row(r) for r in rows), key=lambda e: e.id)
            async with conn.transaction():
                # one sequencer/claimer at a time per inbox: lanes stay ordered with any
                # number of dispatchers (claims are short; creating runs happens outside)
                await conn.execute("SELECT pg_advisory_xact_lock($1)", self._lock_key())
                fresh = [
                    _pg_row(r)
                    for r in await conn.fetch(
                        f"SELECT {_COLUMNS} FROM {self._t} WHERE status = 'pending'"
                        " AND seq <> 1 ORDER BY id LIMIT $1",
                        SEQUENCE_BATCH,
                    )
                ]
                if fresh:
                    plan = await asyncio.to_thread(_sequence_all, fresh, sequencer)
                    await self._sequence(conn, plan, now)
                rows = await conn.fetch(
                    f"UPDATE {self._t} SET lease_until = $2, updated_at = $1"
                    f" WHERE id IN (SELECT id FROM {self._t} i WHERE status = 'pending'"
                    " AND not_before <= $1 AND (lease_until IS NULL OR lease_until <= $1)"
                    f" AND seq = 1 AND NOT EXISTS (SELECT 1 FROM {s}.inbox_lanes a"
                    f" JOIN {s}.inbox_lanes b ON b.lane = a.lane WHERE a.entry_id = i.id"
                    " AND b.entry_id <> a.entry_id AND (b.started"
                    " OR (b.event_time, b.entry_id) < (a.event_time, a.entry_id))"
                    f" AND NOT EXISTS (SELECT 1 FROM {s}.inbox_coalesce ca"
                    f" JOIN {s}.inbox_coalesce cb ON cb.key = ca.key"
                    " WHERE ca.entry_id = a.entry_id AND cb.entry_id = b.entry_id))"
                    f" AND NOT EXISTS (SELECT 1 FROM {s}.inbox_coalesce c WHERE c.entry_id = i.id"
                    f" AND (EXISTS (SELECT 1 FROM {s}.inbox_coalesce m WHERE m.key = c.key"
                    " AND m.entry_id <> c.entry_id"
                    " AND (m.event_time, m.entry_id) > (c.event_time, c.entry_id))"
                    f" OR ((SELECT MAX(m.received) FROM {s}.inbox_coalesce m WHERE m.key = c.key)"
                    " > $4 - c.quiet"
                    f" AND (SELECT MIN(m.received) FROM {s}.inbox_coalesce m WHERE m.key = c.key)"
                    " > $4 - c.max_wait)))"
                    f" ORDER BY id LIMIT $3) RETURNING {_COLUMNS}",
                    _dt(now),
                    _dt(now + lease_seconds),
                    limit,
                    now,
                )
                ids = [r["id"] for r in rows]
                if ids:
                    await conn.execute(
                        f"INSERT INTO {s}.inbox_lane_marks AS m (lane, event_time, entry_id)"
                        f" SELECT lane, event_time, entry_id FROM {s}.inbox_lanes"
                        " WHERE entry_id = ANY($1::bigint[]) ORDER BY lane, event_time, entry_id"
                        " ON CONFLICT (lane) DO UPDATE SET event_time = excluded.event_time,"
                        " entry_id = excluded.entry_id"
                        " WHERE (excluded.event_time, excluded.entry_id)"
                        " > (m.event_time, m.entry_id)",
                        ids,
                    )
                    await conn.execute(
                        f"UPDATE {s}.inbox_lanes SET started = TRUE"
                        " WHERE entry_id = ANY($1::bigint[])",
                        ids,
                    )
                    for i in ids:
                        await self._supersede(conn, i, now)
            return sorted((_pg_row(r) for r in rows), key=lambda e: e.id)

        return await self._call(fn)

    async def _sequence(
        self, conn: Any, plan: list[tuple[InboxEntry, Sequenced]], now: float
    ) -> None:
        s = f'"{self.schema}"'
        lanes = sorted({lane for _, q in plan for lane in q.lanes})
        marks = {
            r["lane"]: (float(r["event_time"]), int(r["entry_id"]))
            for r in await conn.fetch(
                f"SELECT lane, event_time, entry_id FROM {s}.inbox_lane_marks"
                " WHERE lane = ANY($1::text[])",
                lanes,
            )
        }
        late: list[tuple[str, int]] = []
        joined: list[tuple[str, int, float]] = []
        bursts: list[tuple[str, int, float, float, float, float]] = []
        done: list[int] = []
        for entry, q in plan:
            msg = _is_late(entry, q, marks) if entry.seq == 0 else None
            if msg is not None:
                late.append((msg, entry.id))
                continue
            done.append(entry.id)
            joined += [(lane, entry.id, _entry_time(entry)) for lane in q.lanes]
            if q.coalesce is not None and entry.seq == 0:  # a replay runs alone
                bursts.append(
                    (
                        q.coalesce,
                        entry.id,
                        _entry_time(entry),
                        entry.received_at.timestamp(),
                        q.quiet,
                        q.max_wait,
                    )
                )
        if late:
            await conn.executemany(
                f"UPDATE {self._t} SET status = 'late', seq = 1, last_error = $1,"
                " lease_until = NULL, updated_at = $3 WHERE id = $2",
                [(msg, i, _dt(now)) for msg, i in late],
            )
        if done:
            await conn.execute(
                f"DELETE FROM {s}.inbox_lanes WHERE entry_id = ANY($1::bigint[])", done
            )
            await conn.execute(f"UPDATE {self._t} SET seq = 1 WHERE id = ANY($1::bigint[])", done)
        if joined:
            await conn.executemany(
                f"INSERT INTO {s}.inbox_lanes (lane, entry_id, event_time) VALUES ($1,$2,$3)"
                " ON CONFLICT DO NOTHING",
                joined,
            )
        if bursts:
            await conn.executemany(
                f"INSERT INTO {s}.inbox_coalesce"
                " (key, entry_id, event_time, received, quiet, max_wait)"
                " VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING",
                bursts,
            )

    async def _supersede(self, conn: Any, entry_id: int, now: float) -> None:
        """``entry_id`` was claimed: the rest of its burst is superseded by it."""
        s = f'"{self.schema}"'
        keys = [
            r["key"]
            for r in await conn.fetch(
                f"SELECT key FROM {s}.inbox_coalesce WHERE entry_id = $1", entry_id
            )
        ]
        for key in keys:
            covered = [
                r["entry_id"]
                for r in await conn.fetch(
                    f"SELECT entry_id FROM {s}.inbox_coalesce WHERE key = $1 AND entry_id <> $2",
                    key,
                    entry_id,
                )
            ]
            if covered:
                await conn.execute(
                    f"UPDATE {self._t} SET status = 'superseded', superseded_by = $1,"
                    " lease_until = NULL, updated_at = $2"
                    " WHERE id = ANY($3::bigint[]) AND status = 'pending'",
                    entry_id,
                    _dt(now),
                    covered,
                )
                await conn.execute(
                    f"DELETE FROM {s}.inbox_lanes WHERE entry_id = ANY($1::bigint[])", covered
                )
            await conn.execute(f"DELETE FROM {s}.inbox_coalesce WHERE key = $1", key)

    async def _exec(self, sql: str, *args: Any) -> None:
        async def fn(conn: Any) -> None:
            await conn.execute(sql, *args)

        await self._call(fn)

    async def _transition(
        self,
        entry_id: int,
        sets: str,
        args: tuple[Any, ...],
        expect: str | None,
        *,
        leave_lanes: bool = False,
    ) -> bool:
        """``sets`` uses $1..$n for ``args``; the entry id and ``expect`` follow them."""
        n = len(args)
        sql = f"UPDATE {self._t} SET {sets} WHERE id = ${n + 1}"
        params: tuple[Any, ...] = (*args, entry_id)
        if expect is not None:
            sql += f" AND status = ${n + 2}"
            params = (*params, expect)

        async def fn(conn: Any) -> bool:
            async with conn.transaction():
                status = await conn.execute(sql, *params)
                changed = bool(status.split()[-1] != "0")
                if changed and leave_lanes:
                    for table in ("inbox_lanes", "inbox_coalesce"):
                        await conn.execute(
                            f'DELETE FROM "{self.schema}".{table} WHERE entry_id = $1', entry_id
                        )
                return changed

        return await self._call(fn)

    async def mark_dispatched(
        self, entry_id: int, flow_runs: Mapping[str, str], *, expect: str | None = None
    ) -> bool:
        return await self._transition(
            entry_id,
            "status = 'dispatched', lease_until = NULL, updated_at = $1,"
            " flow_runs = flow_runs || $2::jsonb",
            (_dt(self._clock()), json.dumps(dict(flow_runs))),
            expect,
        )

    async def mark_done(
        self, entry_id: int, *, expect: str | None = None, note: str | None = None
    ) -> bool:
        return await self._transition(
            entry_id,
            "status = 'done', lease_until = NULL, updated_at = $1, note = $2",
            (_dt(self._clock()), note),
            expect,
            leave_lanes=True,
        )

    async def mark_failed(self, entry_id: int, error: str, *, expect: str | None = None) -> bool:
        return await self._transition(
            entry_id,
            "status = 'failed', lease_until = NULL, last_error = $1, attempts = attempts + 1,"
            " updated_at = $2",
            (error, _dt(self._clock())),
            expect,
            leave_lanes=True,
        )

    async def retry_later(
        self, entry_id: int, error: str, delay_seconds: float, *, expect: str | None = None
    ) -> bool:
        now = self._clock()
        return await self._transition(
            entry_id,
            "status = 'pending', lease_until = NULL, last_error = $1, attempts = attempts + 1,"
            " not_before = $2, updated_at = $3",
            (error, _dt(now + max(0.0, delay_seconds)), _dt(now)),
            expect,
        )

    async def requeue(self, entry_id: int) -> None:
        now = _dt(self._clock())
        s = f'"{self.schema}"'

        async def fn(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(
                    f"UPDATE {self._t} SET status = 'pending', lease_until = NULL,"
                    " not_before = $1, updated_at = $1, seq = 2, superseded_by = NULL"
                    " WHERE id = $2",
                    now,
                    entry_id,
                )
                await conn.execute(f"DELETE FROM {s}.inbox_lanes WHERE entry_id = $1", entry_id)
                await conn.execute(f"DELETE FROM {s}.inbox_coalesce WHERE entry_id = $1", entry_id)
                await conn.execute(
                    f"DELETE FROM {s}.inbox_steps st USING {self._t} i WHERE i.id = $1"
                    " AND st.source = i.source AND st.event_id = i.event_id"
                    " AND st.step LIKE 'on_failure.%'",
                    entry_id,
                )

        await self._call(fn)

    async def reopen(self, entry_id: int, recipe: str, flow_run_id: str) -> bool:
        now = _dt(self._clock())
        s = f'"{self.schema}"'

        async def fn(conn: Any) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    f"UPDATE {self._t} SET status = 'dispatched', lease_until = NULL,"
                    " updated_at = $1 WHERE id = $2 AND status IN ('done', 'failed')"
                    " AND flow_runs ->> $3 = $4",
                    now,
                    entry_id,
                    recipe,
                    flow_run_id,
                )
                if status.split()[-1] == "0":
                    return False
                await conn.execute(
                    f"DELETE FROM {s}.inbox_steps st USING {self._t} i WHERE i.id = $1"
                    " AND st.source = i.source AND st.event_id = i.event_id"
                    " AND st.recipe = $2 AND st.step LIKE 'on_failure.%'",
                    entry_id,
                    recipe,
                )
                return True

        return await self._call(fn)

    async def dispatched(self, after_id: int = 0, limit: int = 500) -> list[InboxEntry]:
        return await self._select(
            "WHERE status = 'dispatched' AND id > $1 ORDER BY id LIMIT $2", after_id, limit
        )

    async def settled(self, after_id: int, limit: int, *, done_since: datetime) -> list[InboxEntry]:
        return await self._select(
            "WHERE id > $1 AND flow_runs <> '{}'::jsonb AND (status = 'failed'"
            " OR (status = 'done' AND updated_at >= $2)) ORDER BY id LIMIT $3",
            after_id,
            done_since,
            limit,
        )

    async def covered(self, entry_id: int) -> list[InboxEntry]:
        return await self._select(
            "WHERE superseded_by = $1 ORDER BY COALESCE(event_time, received_at), id", entry_id
        )

    async def claim_run(self, flow_run_id: str, state_id: str, worker: str) -> bool:
        async def fn(conn: Any) -> bool:
            status = await conn.execute(
                f'INSERT INTO "{self.schema}".inbox_run_claims'
                " (flow_run_id, state_id, worker, claimed_at) VALUES ($1,$2,$3,$4)"
                " ON CONFLICT DO NOTHING",
                flow_run_id,
                state_id,
                worker,
                _dt(self._clock()),
            )
            return bool(status.split()[-1] != "0")

        return await self._call(fn)

    async def run_claims(self, flow_run_ids: Iterable[str]) -> dict[str, str]:
        ids = list(flow_run_ids)

        async def fn(conn: Any) -> dict[str, str]:
            rows = await conn.fetch(
                f'SELECT flow_run_id, worker FROM "{self.schema}".inbox_run_claims'
                " WHERE flow_run_id = ANY($1::text[]) ORDER BY claimed_at",
                ids,
            )
            return {r["flow_run_id"]: r["worker"] for r in rows}

        return await self._call(fn)

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

    async def oldest(self) -> dict[str, float]:
        now = self._clock()

        async def fn(conn: Any) -> dict[str, float]:
            out = {"pending": 0.0, "dispatched": 0.0}
            for status in out:
                t = await conn.fetchval(
                    f"SELECT MIN(updated_at) FROM {self._t} WHERE status = $1", status
                )
                out[status] = 0.0 if t is None else max(0.0, now - t.timestamp())
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
