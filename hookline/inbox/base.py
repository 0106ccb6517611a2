"""The inbox interface: `Inbox`, `InboxEntry`, the statuses, and the lane rules both backends
implement (`hookline.inbox.sqlite`, `hookline.inbox.postgres`).

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
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from hookline.errors import HooklineError

Status = Literal["pending", "dispatched", "done", "failed", "late", "superseded"]
STATUSES: tuple[str, ...] = ("pending", "dispatched", "done", "failed", "late", "superseded")
FINAL_STATUSES: frozenset[str] = frozenset({"done", "failed", "late", "superseded"})
Clock = Callable[[], float]
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


def to_epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:  # a naive time is UTC, as the seed's test tool sends it
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def check_status(status: str | None) -> None:
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


SEQUENCE_BATCH = 200


def entry_time(entry: InboxEntry) -> float:
    """The time an entry is ordered by in its lanes: its event time, else its arrival."""
    return (entry.event_time or entry.received_at).timestamp()


def sequence_all(
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
        f"{from_epoch(mark[0])}); not run, so it cannot undo newer state "
        f"(recipe setting late: skip). Replay it by hand: hookline replay {entry.event_id}"
    )


def is_late(
    entry: InboxEntry, seq: Sequenced, marks: Mapping[str, tuple[float, int]]
) -> str | None:
    """The late message if ``entry`` comes after its lanes' high-water marks, else None."""
    if not seq.skip_if_late:
        return None
    mine = (entry_time(entry), entry.id)
    for lane in seq.lanes:
        mark = marks.get(lane)
        if mark is not None and mark > mine:
            return _late_message(entry, lane, mark)
    return None


COLUMNS = (
    "id, source, event_id, event_type, received_at, event_time, body, headers, status, "
    "attempts, last_error, flow_runs, not_before, lease_until, updated_at, seq, superseded_by,"
    " note"
)


def expire(fut: asyncio.Future[Any], timeout: float, where: str) -> None:
    if not fut.done():
        fut.set_exception(InboxError(f"{where}: not committed within {timeout:g} s"))
