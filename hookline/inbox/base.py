"""The inbox interface both backends implement: `Inbox`, `InboxEntry`, the statuses, the
life cycle.

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
    start_timer -> pending (due later) --cancel_timer / start_timer of its key--> cancelled

Every transition takes ``expect``: the status the caller saw. The update happens only if the
entry still has it (and the call returns False otherwise), so two dispatchers following the
same runs cannot both resend an event or count its attempt twice.

**Lanes and bursts** (``order_by``, ``coalesce``): `claim` with a *sequencer* runs one event
of a lane at a time, in event-time order, and one run for a burst; see `hookline.inbox.lanes`.

**Timers** (`start_timer`, `cancel_timer`): a timer is an entry of source `TIMER_SOURCE`
with a ``timer_key``, pending and due (``not_before``) at its time; it fires as any event.
Starting a key replaces its pending timer (the old one ends ``cancelled``) in one transaction.
A timer whose entry has been claimed (it has a lease, expired or not: it is firing) is no
longer cancellable: `cancel_timer` loses and says so (False), so a cancel never races the
runs a claim creates; a crashed claimer's timer is claimed again and fires.

**Run claims** (`claim_run`): a worker records (flow run, Scheduled state id) before it
executes a run; the first claim wins, so one Scheduled state is executed once even when
two workers (or one worker's stale backlog) race for it, while a later Retry (a new
Scheduled state) can run again.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

from hookline.errors import HooklineError
from hookline.inbox.transition import Transition

if TYPE_CHECKING:
    from hookline.inbox.lanes import Sequencer

Status = Literal["pending", "dispatched", "done", "failed", "late", "superseded", "cancelled"]
STATUSES: tuple[str, ...] = (
    "pending",
    "dispatched",
    "done",
    "failed",
    "late",
    "superseded",
    "cancelled",
)
FINAL_STATUSES: frozenset[str] = frozenset({"done", "failed", "late", "superseded", "cancelled"})
SCHEDULED = "scheduled"
"""Not a stored status: what `Inbox.counts` calls the pending timers not due yet."""
COUNTED: tuple[str, ...] = (*STATUSES, SCHEDULED)
"""The keys of `Inbox.counts`."""
TIMER_SOURCE = "hookline"
"""The source of the events timers fire (``timer.start``); no sender may use it."""
UNTRIED_TIMER = "(timer_key IS NOT NULL AND attempts = 0)"
"""SQL: a timer that has not tried to fire yet (one put off by a failed dispatch is work)."""
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
    seq: int = 0
    """0: not sequenced into lanes yet; 2: likewise, and never late (a replay); 1: sequenced."""
    superseded_by: int | None = None
    """The entry whose run covered this one (status ``superseded``, by ``coalesce``)."""
    note: str | None = None
    """Why it ended ``done`` without a run ("no recipe matched"), set by `mark_done`; why a
    timer ended ``cancelled``."""
    timer_key: str | None = None
    """The key of the timer this entry is (`Inbox.start_timer`), else None."""

    def scheduled(self, now: float) -> bool:
        """A timer waiting for its due time (not waiting work)."""
        return (
            self.timer_key is not None
            and self.attempts == 0
            and self.status == "pending"
            and self.not_before is not None
            and self.not_before.timestamp() > now
        )


class NewEntry(NamedTuple):
    """One `Inbox.put`'s row as both backends insert it (times in epoch seconds)."""

    source: str
    event_id: str
    event_type: str
    received_at: float
    event_time: float | None
    body: bytes
    headers: str
    """JSON."""
    status: str


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

    def now(self) -> float:
        """The inbox's clock (epoch seconds): when a claim finds an entry due."""
        return self._clock()

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the inbox lives, for logs and /readyz (never a password)."""

    # -- receiver side ------------------------------------------------------------------
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
        check_status(status)
        if not self._opened:
            await self.open()
        row = NewEntry(
            source,
            event_id,
            event_type,
            self._clock(),
            to_epoch(event_time),
            body,
            json.dumps(dict(headers), separators=(",", ":")),
            status,
        )
        return await committed(self._queue_put(row), timeout, self.description)

    @abstractmethod
    def _queue_put(self, row: NewEntry) -> asyncio.Future[tuple[bool, int]]:
        """Queue ``row`` for the next group commit, from the running loop; the future gets
        (inserted, entry id) once the transaction holding it has committed."""

    # -- timers -------------------------------------------------------------------------
    @abstractmethod
    async def start_timer(
        self, key: str, event_id: str, event_type: str, body: bytes, due: float
    ) -> tuple[int, bool]:
        """Store the timer ``key``: an entry of source `TIMER_SOURCE`, pending, due at ``due``
        (epoch seconds; its event time too). Its pending, unleased timers of the same key end
        ``cancelled`` in the same transaction. Returns (entry id, whether one was replaced).

        Raises:
            InboxError: the store could not commit (or ``event_id`` is taken).
        """

    @abstractmethod
    async def cancel_timer(self, key: str) -> bool:
        """End the pending timer ``key`` ``cancelled``; False if there is none, or if it was
        claimed (it has a lease, even an expired one: it is firing, its runs being created)."""

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

    async def mark_dispatched(
        self, entry_id: int, flow_runs: Mapping[str, str], *, expect: str | None = None
    ) -> bool:
        """Set ``dispatched``, merge ``flow_runs`` (recipe -> flow run id), clear the lease.

        With ``expect``, only if the entry's status is still that; returns whether it was set.
        """
        change = Transition("dispatched", self._clock(), flow_runs=dict(flow_runs))
        return await self._transition(entry_id, change, expect)

    async def mark_done(
        self, entry_id: int, *, expect: str | None = None, note: str | None = None
    ) -> bool:
        """Set status ``done``, clear the lease, leave its lanes (see `mark_dispatched`);
        ``note`` (None clears it) says why it is done without a run, e.g. no recipe matched.
        ``last_error`` is kept: the last failure before it succeeded (history)."""
        change = Transition("done", self._clock(), texts={"note": note}, leave_lanes=True)
        return await self._transition(entry_id, change, expect)

    async def mark_failed(self, entry_id: int, error: str, *, expect: str | None = None) -> bool:
        """Set status ``failed``, record ``error``, count the attempt, clear the lease, leave
        its lanes (see `mark_dispatched` for ``expect``)."""
        change = Transition(
            "failed",
            self._clock(),
            texts={"last_error": error},
            count_attempt=True,
            leave_lanes=True,
        )
        return await self._transition(entry_id, change, expect)

    async def retry_later(
        self, entry_id: int, error: str, delay_seconds: float, *, expect: str | None = None
    ) -> bool:
        """Back to ``pending``, due in ``delay_seconds``; attempts += 1, error recorded; it
        keeps its place in its lanes (see `mark_dispatched` for ``expect``)."""
        now = self._clock()
        change = Transition(
            "pending",
            now,
            texts={"last_error": error},
            not_before=now + max(0.0, delay_seconds),
            count_attempt=True,
        )
        return await self._transition(entry_id, change, expect)

    @abstractmethod
    async def _transition(self, entry_id: int, change: Transition, expect: str | None) -> bool:
        """Apply ``change`` (see `Transition.sets`) if the entry's status is still ``expect``
        (whatever it is, if None); whether it did."""

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
        """Number of entries per status (every key of `COUNTED` present, zero included);
        timers not due yet count as `SCHEDULED`, not ``pending``: they are not waiting work."""

    @abstractmethod
    async def oldest(self) -> dict[str, float]:
        """Seconds since the least recently changed ``pending`` and ``dispatched`` entry
        changed (0 when there is none): an event stuck in one of them shows here. A timer
        counts from its due time, and not before it."""

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

    # -- retention ----------------------------------------------------------------------
    async def prune(
        self,
        older_than: timedelta,
        *,
        statuses: Collection[str],
        dry_run: bool = False,
        batch: int = 5000,
    ) -> int:
        """Delete the entries in one of ``statuses`` unchanged (``updated_at``) for
        ``older_than``, and their step logs, ``batch`` entries per transaction (so a large
        prune never holds a writer for long); returns how many (with ``dry_run``, how many
        would be, deleting nothing).

        Raises:
            InboxError: the inbox cannot be read or written.
            ValueError: ``older_than`` is negative, ``batch`` is below 1, or a status is not a
                final one (an entry still to run, or running, is never deleted).
        """
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, not {older_than}")
        if batch < 1:
            raise ValueError(f"batch must be at least 1, not {batch}")
        wrong = [s for s in statuses if s not in FINAL_STATUSES]
        if wrong or not statuses:
            raise ValueError(
                f"cannot prune statuses {wrong}: give one or more of"
                f" {', '.join(sorted(FINAL_STATUSES))}"
            )
        await self.open()
        cutoff = self._clock() - older_than.total_seconds()
        final = tuple(statuses)
        if dry_run:
            return await self._count_unchanged(final, cutoff)
        total = 0
        while True:
            n = await self._delete_unchanged(final, cutoff, batch)
            total += n
            if n < batch:
                return total

    @abstractmethod
    async def _count_unchanged(self, statuses: tuple[str, ...], before: float) -> int:
        """How many entries in ``statuses`` last changed before ``before`` (epoch seconds)."""

    @abstractmethod
    async def _delete_unchanged(self, statuses: tuple[str, ...], before: float, limit: int) -> int:
        """Delete up to ``limit`` of those entries (lowest ids first) and their step logs, in
        one transaction; returns how many."""


COLUMNS = (
    "id, source, event_id, event_type, received_at, event_time, body, headers, status, "
    "attempts, last_error, flow_runs, not_before, lease_until, updated_at, seq, superseded_by,"
    " note, timer_key"
)


async def committed(future: asyncio.Future[T], timeout: float | None, where: str) -> T:
    """``future``'s result, once the transaction holding its write has committed.

    Raises:
        InboxError: the write failed, or did not commit within ``timeout`` seconds (it may
            still commit later; a retry of the same event is then a duplicate).
    """
    if timeout is None:
        return await future
    # Cheaper than asyncio.timeout() on the hot path: one timer, no task bookkeeping.
    timer = future.get_loop().call_later(timeout, _expire, future, timeout, where)
    try:
        return await future
    finally:
        timer.cancel()


def _expire(future: asyncio.Future[Any], timeout: float, where: str) -> None:
    if not future.done():
        future.set_exception(InboxError(f"{where}: not committed within {timeout:g} s"))
