"""Moves inbox entries into Prefect flow runs, at the pace Prefect can take, and follows them.

    claim (leased) --match--> create flow run per recipe --> mark_dispatched --follow--> done/failed

- Every flow run is created with idempotency key ``<source>:<event_id>:<recipe>``: a dispatcher
  that dies between creating runs and marking the entry re-creates nothing when the lease
  expires and the entry is claimed again (Prefect returns the existing run).
- Prefect down or overloaded (connection errors, 5xx after the client's own retries): the entry
  goes back to pending with exponential backoff and the dispatcher pauses, so nothing is lost
  and Prefect is not hammered while it recovers.
- ``order_by`` lanes live in the inbox (see `hookline.inbox`): the dispatcher claims with a
  sequencer that names each event's lane keys (the rendered ``order_by`` of every recipe that
  matches it, shared by all recipes), and the inbox only hands out a lane's head. So a lane
  runs one event at a time in event-time order across restarts, lease expiry and any number
  of dispatchers; an event older than one its lane already ran ends ``late`` unless every
  recipe giving it that lane says ``late: run``.
- Following (`hookline.engine.follow`, a `Follower` each dispatcher owns): dispatched events
  are followed to ``done``/``failed``; every `recover_seconds` the runs of dead workers are
  recovered and settled events reconciled with what happened to their runs later in Prefect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import httpx
from prefect.client.schemas.objects import State, StateType

from hookline.engine.deployment import WORK_POOL
from hookline.engine.errors import PrefectUnavailable
from hookline.engine.follow import PREFECT_ERRORS, Follower, dispatched_pages, read_runs
from hookline.flows.recipe_flow import PREVIEW_STATE
from hookline.inbox import Inbox, InboxEntry, Sequenced
from hookline.recipes import Event, RecipeSet, build_context
from hookline.recipes.errors import EventError, RecipeError
from hookline.recipes.reload import RecipeSource
from hookline.retry import RetryPolicy

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

    from hookline.engine.worker import Worker

log = logging.getLogger("hookline.dispatcher")

NO_RECIPE_MATCHED = "no recipe matched"
"""The inbox note of an event that is ``done`` because no recipe matched it (no run)."""


def idempotency_key(source: str, event_id: str, recipe: str, replay_of: str | None) -> str:
    key = f"{source}:{event_id}:{recipe}"
    return f"{key}:replay:{replay_of}" if replay_of else key


def flow_run_tags(recipe: str, event: Event, replay_of: str | None = None) -> list[str]:
    """Tags of a recipe run. ``event-id:<id>`` is on every run of one event (its first run,
    replays, resends), so the UI's tag filter lists them side by side; a later run of an
    event that ran before (a replay, or a resend after its worker died) also has ``rerun``,
    and its artifact links the earlier runs."""
    tags = [
        "hookline",
        f"recipe:{recipe}",
        f"event:{event.event_type}",
        f"source:{event.source}",
        f"event-id:{event.event_id}",
    ]
    return [*tags, "rerun"] if replay_of else tags


@dataclass
class DispatcherStats:
    created: int = 0
    dispatched: int = 0
    done: int = 0
    failed: int = 0
    last_dispatch_lag: float = 0.0
    prefect_errors: int = 0


@dataclass
class Dispatcher:
    inbox: Inbox
    recipes: RecipeSet | RecipeSource
    """A `RecipeSource` reloads: each match uses the set active at that moment."""
    client: PrefectClient
    deployment_id: UUID
    concurrency: int = 4
    """Flow-run creates at once. 4 measured best with `bench/e2e.py` on the embedded SQLite
    profile and on PostgreSQL; a plain SQLite-backed Prefect server wants 1 (concurrent
    writers there meet "database is locked" 503s and 2^n s client backoffs)."""
    batch: int = 32
    lease_seconds: float = 60.0
    poll_seconds: float = 0.25
    follow_seconds: float = 0.5
    """How often dispatched events are followed (their runs read from Prefect). A run that
    ends in a process that can tell (`notify_finished`) has its event followed at once, alone."""
    unavailable_retry: RetryPolicy = RetryPolicy(
        attempts=None, backoff=1.0, max_delay=60.0, jitter=0.0
    )
    """While Prefect is unreachable: the dispatcher pauses 1, 2, 4... up to 60 s between
    tries, and its events wait in the inbox, pending, for as long as it takes."""
    client_retries: int = 0
    """Prefect client retries per call. Its default (5, with 2^n s backoff) can hold a call
    for a minute and turns every SQLite "database is locked" 503 into a 2 s stall; the
    dispatcher retries a 503 itself within milliseconds (`locked_retry`) and leaves anything
    longer to `unavailable_retry`, with the entry kept pending."""
    locked_retry: RetryPolicy = RetryPolicy(attempts=7, backoff=0.02, jitter=0.5)
    stuck_margin: float = 120.0
    """Added to a recipe's longest possible run, for runs no worker claimed in the inbox."""
    max_auto_retries: int = 3
    work_pool: str = WORK_POOL
    worker_timeout: float = 60.0
    """A worker whose last heartbeat is older than this is dead: its runs are recovered.
    Workers heartbeat every 10 s by default (`hookline worker --heartbeat`)."""
    recover_seconds: float = 10.0
    """How often runs still Scheduled, Pending or Running are checked for a dead worker, and
    settled events for runs changed later in Prefect (see `reconcile_once`)."""
    settled_window: float = 3600.0
    """`done` events are checked for a later change of their runs for this long after they
    settled (a `failed` one for as long as it stays failed)."""
    follow_page: int = 500
    """Dispatched entries read per inbox query while following (all are followed)."""
    reconcile_batch: int = 2000
    """Settled events checked per reconcile pass (every `recover_seconds`), each pass going
    on where the last stopped. Unbounded, an hour of done events at 8 a second (28,800) was
    read from Prefect every 10 s (see `Follower.reconcile_once`)."""
    max_in_flight: int = 1000
    """Events dispatched and not yet settled, at most: in a storm the rest wait in the inbox,
    pending, instead of as Scheduled runs in Prefect. Every event in flight is read from
    Prefect at each follow cycle (200 run ids a query), so 10,000 of them would keep the
    server busy with reads alone. It bounds a dispatcher without an in-process worker; one
    with a worker is bound first by what that worker takes (`handoff_room`). Keep it well
    above the workers' total ``--limit``. Counted across the dispatchers sharing an inbox."""
    max_waiting: int = 100
    """A dispatcher without an in-process worker (`hookline dispatch`): runs it created that
    no worker has claimed yet, at most (the workers' claims are in the inbox). The rest of a
    storm waits in the inbox, pending, instead of as Scheduled runs in Prefect, where every
    one of them made each worker poll, follow read and recovery pass dearer (1,000 waiting:
    a recovery pass 380 ms of server CPU instead of 10; bench/README.md, "Runs waiting in
    Prefect"). Keep it above the runs the workers take at once: their ``--limit`` plus the
    handoff backlog (32) each."""
    write_gate: asyncio.Lock | None = None
    """Optionally shared with an in-process worker: a flow-run create waits for the run being
    executed. For a plain SQLite Prefect server, where a create that overlaps a run's state
    writes gets "database is locked" (503) and a 2^n s client backoff. `hookline up`'s embedded
    server does not need it (its transactions queue, see prefect_serve.py), and pays for it in
    throughput (`bench/e2e.py --gate on|off`, figures in bench/README.md)."""
    on_created: Callable[[Any], object] | None = None
    """Called with each new flow run: `hookline up` hands it straight to its in-process
    worker instead of waiting for the worker's next poll."""
    handoff_room: Callable[[], int] | None = None
    """With an in-process worker (`hand_to`): how many more runs it takes now. The dispatcher
    creates no more than that, so a storm waits in the inbox, pending, and Prefect holds only
    the runs about to execute. Every Scheduled run waiting in Prefect made each follow read,
    recovery pass and work-pool poll dearer: with 1,000 waiting, the recovery pass cost the
    server 380 ms instead of 10 and a poll 39 ms instead of 26 (bench/README.md, "Runs
    waiting in Prefect"). Other workers polling the pool still take the runs waiting in this
    worker's backlog first, if they are quicker."""
    clock: Callable[[], float] = time.time
    stats: DispatcherStats = field(default_factory=DispatcherStats)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _pause_until: float = 0.0
    in_flight: int = 0
    """Dispatched, not yet settled events: counted by each follow cycle (`Follower`), and
    raised by each dispatch in between."""
    _next_full_log: float = 0.0
    _held: int = 0
    _next_follow: float = 0.0
    _ended: dict[int, dict[str, State]] = field(default_factory=dict)
    """Entries whose runs an in-process worker saw end, to follow at once (`notify_finished`),
    with the Completed states it saw: run id -> state."""
    _failures: int = 0
    waiting_runs: set[str] = field(default_factory=set)
    """Runs this dispatcher created that no worker had claimed when last looked (`max_waiting`;
    the follower drops those whose events are no longer in flight), and, from its first
    dispatch, those it found waiting (`_adopt_waiting`)."""
    _adopted: bool = field(default=False, init=False)
    _follower: Follower = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._follower = Follower(self)

    async def readiness(self) -> str:
        """The `/readyz` check `hookline up` adds.

        Raises:
            PrefectUnavailable: while Prefect is unreachable.
        """
        counts = await self.inbox.counts()
        pending = counts.get("pending", 0)
        if self.clock() < self._pause_until:
            raise PrefectUnavailable(
                f"Prefect API unavailable (last {self.stats.prefect_errors} error(s)); "
                f"{pending} event(s) pending, kept in the inbox"
            )
        return f"{pending} pending, last dispatch lag {self.stats.last_dispatch_lag:.2f}s"

    def notify(self) -> None:
        """Something was stored: dispatch now instead of at the next poll."""
        self.wakeup.set()

    def hand_to(self, worker: Worker) -> None:
        """Run in one process with ``worker``: each new run goes straight to it
        (`on_created`), no more are created than it takes (`handoff_room`), and it says when
        a run ended (`notify_finished`), so the next event of an ``order_by`` lane starts at
        once instead of at the next follow cycle."""
        self.on_created = worker.submit
        self.handoff_room = worker.room
        worker.on_finished = self.notify_finished

    def notify_finished(self, flow_run: Any = None, final: Any = None) -> None:
        """A run ended (an in-process worker says so): follow its event now, so the next
        event of its ``order_by`` lane starts within milliseconds instead of at the next
        follow cycle. Only that event is followed (`Follower.follow_entries`): a whole follow
        cycle per ended run read every event in flight from Prefect several times a second
        during a burst (bench/README.md, "Sustained"). ``final``, the state Prefect's server
        answered the run's engine with, is not read again when it is Completed: one read
        fewer per run for the server. A run without its entry id (not one of the
        dispatcher's) makes the next cycle come at once instead."""
        entry_id = (getattr(flow_run, "parameters", None) or {}).get("entry_id")
        if isinstance(entry_id, int) and not isinstance(entry_id, bool):
            known = self._ended.setdefault(entry_id, {})
            if final is not None and final.is_completed():
                known[str(flow_run.id)] = final
        else:
            self._next_follow = 0.0
        self.wakeup.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch and follow until ``stop`` is set."""
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

        # settings are context-local: this limits only the dispatcher's own calls
        with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: self.client_retries}):
            await self._loop(stop)

    async def _loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                n = await self.dispatch_once()
                if self._ended:
                    ended, self._ended = self._ended, {}
                    await self._follower.follow_entries(ended)
                if self.clock() >= self._next_follow:
                    self._next_follow = self.clock() + self.follow_seconds
                    await self.follow_once()
            except Exception:  # never let one bad cycle stop the dispatcher
                log.exception("dispatch cycle failed; retrying")
                n = 0
                await asyncio.sleep(1.0)
            if n == 0 and not stop.is_set() and not self._ended:
                self.wakeup.clear()
                delay = max(
                    min(self.poll_seconds, max(0.0, self._next_follow - self.clock())),
                    self._pause_until - self.clock(),
                )
                try:
                    await asyncio.wait_for(self._wait(stop), timeout=delay)
                except TimeoutError:
                    pass

    async def _wait(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(self.wakeup.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    # -- dispatch ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Dispatch nothing inside the block (events wait in the inbox, following goes on);
        dispatch at once after it. For a maintenance window, or to let a burst arrive."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            self.notify()

    async def dispatch_once(self) -> int:
        """Claim due entries and create their flow runs; return how many were claimed."""
        if self._held or self.clock() < self._pause_until:
            return 0
        room = self.max_in_flight - self.in_flight
        if room <= 0:
            if self.clock() >= self._next_full_log:  # a storm says so once a minute
                self._next_full_log = self.clock() + 60.0
                log.info(
                    "%d events in flight in Prefect (max_in_flight %d): the next ones wait "
                    "in the inbox until runs end",
                    self.in_flight,
                    self.max_in_flight,
                )
            return 0
        if self.handoff_room is not None:
            room = min(room, self.handoff_room())  # the worker is full: wait for its wakeup
        else:
            room = min(room, await self._waiting_room(min(self.batch, room)))
        if room <= 0:
            return 0
        uses_lanes = any(r.order_by or r.coalesce for r in self.recipes.recipes)
        entries = await self.inbox.claim(
            min(self.batch, room),
            lease_seconds=self.lease_seconds,
            sequencer=self.sequence if uses_lanes else None,
        )
        if not entries:
            return 0
        sem = asyncio.Semaphore(self.concurrency)

        async def one(entry: InboxEntry) -> None:
            async with sem:
                await self._dispatch(entry)

        # the inbox hands out only lane heads, so every claimed entry may go out at once
        await asyncio.gather(*(one(e) for e in entries))
        return len(entries)

    async def _waiting_room(self, wanted: int) -> int:
        """How many more runs may wait in Prefect for a worker (`max_waiting`); the inbox is
        asked which of the waiting ones were claimed only when fewer than ``wanted`` fit."""
        if not self._adopted:
            await self._adopt_waiting()
        if self.max_waiting - len(self.waiting_runs) < wanted and self.waiting_runs:
            claimed = await self.inbox.run_claims(self.waiting_runs)
            self.waiting_runs.difference_update(claimed)
        return self.max_waiting - len(self.waiting_runs)

    async def _adopt_waiting(self) -> None:
        """Count, once at the first dispatch, the runs of dispatched events that no worker
        has claimed: a dispatcher restarted in a storm knew none of them and created
        `max_waiting` more on top. Those another running dispatcher left waiting count too,
        until a worker claims them; what it creates later is its own to bound."""
        runs: set[str] = set()
        async for entries in dispatched_pages(self.inbox, self.follow_page):
            runs.update(rid for e in entries for rid in e.flow_runs.values())
        if runs:
            claimed = await self.inbox.run_claims(runs)
            self.waiting_runs.update(runs - claimed.keys())
        self._adopted = True

    def sequence(self, entry: InboxEntry) -> Sequenced:
        """The inbox's sequencer: this entry's lane keys, from every recipe that matches it
        and has ``order_by`` or ``coalesce`` (a coalesce key orders too); late events are
        skipped unless all of those say ``late: run``. The entry coalesces when every recipe
        that matches it does (with the first one's key and the shortest waits)."""
        try:
            event = _event(entry)
        except ValueError:
            return Sequenced()  # _dispatch reports it
        lanes: list[str] = []
        skip = False
        matched = [r.recipe for r in self.recipes.match(event) if r.matched]
        bursts: list[tuple[str, float, float]] = []
        for recipe in matched:
            ctx = build_context(event, recipe=recipe, steps={}, run={}, failure=None, environ={})
            try:
                keys = [recipe.order_key(ctx)]
                if recipe.coalesce is not None:
                    key = recipe.coalesce_key(ctx)
                    keys.append(key)
                    if key is not None:
                        bursts.append((key, recipe.coalesce.quiet, recipe.coalesce.max_wait))
            except RecipeError as exc:  # a bad key must not stop the other lanes
                log.error(
                    "recipe %s: %s (event %s); no lane for it",
                    recipe.name,
                    exc,
                    entry.event_id,
                    extra={"event_id": entry.event_id, "recipe": recipe.name},
                )
                continue
            for key in keys:
                if key is not None and key not in lanes:
                    lanes.append(key)
            if recipe.order_by or recipe.coalesce is not None:
                skip = skip or recipe.late == "skip" or recipe.coalesce is not None
        if bursts and len(bursts) == len(matched):
            return Sequenced(
                lanes=tuple(lanes),
                skip_if_late=skip,
                coalesce=bursts[0][0],
                quiet=min(b[1] for b in bursts),
                max_wait=min(b[2] for b in bursts),
            )
        return Sequenced(lanes=tuple(lanes), skip_if_late=skip)

    async def _dispatch(self, entry: InboxEntry) -> None:
        try:
            event = _event(entry)
        except ValueError as exc:
            log.error(
                "event %s: cannot parse the stored event: %s",
                entry.event_id,
                exc,
                extra={"event_id": entry.event_id},
            )
            await self.inbox.mark_failed(entry.id, f"cannot parse stored event: {exc}")
            self.stats.failed += 1
            return
        # in a thread: `when` may take up to its time limit on a hostile payload
        results = await asyncio.to_thread(self.recipes.match, event)
        errors = [r for r in results if getattr(r, "error", None) is not None]
        for r in errors:
            log.error(
                "recipe %s: `when` failed on event %s: %s",
                r.recipe.name,
                entry.event_id,
                r.error,
                extra={"event_id": entry.event_id, "recipe": r.recipe.name},
            )
        matched = [r.recipe for r in results if r.matched]
        if not matched:
            if errors:
                await self.inbox.mark_failed(
                    entry.id, "; ".join(f"recipe {r.recipe.name}: {r.reason}" for r in errors)
                )
                self.stats.failed += 1
            else:
                log.info(
                    "no recipe matches %s %s",
                    entry.event_type,
                    entry.event_id,
                    extra={"event_id": entry.event_id},
                )
                await self.inbox.mark_done(entry.id, note=NO_RECIPE_MATCHED)
                self.stats.done += 1
            return
        runs: dict[str, str] = {}
        try:
            # sent again (its worker died) or replayed: a recipe whose run completed is done
            completed = await self._completed_runs(entry, matched)
            for recipe in matched:
                if recipe.name in completed:
                    runs[recipe.name] = completed[recipe.name]
                    continue
                replay_of = entry.flow_runs.get(recipe.name)
                async with self.write_gate or contextlib.nullcontext():
                    flow_run = await self._create(entry, event, recipe.name, replay_of)
                runs[recipe.name] = str(flow_run.id)
                self.stats.created += 1
                if self.on_created is not None:
                    self.on_created(flow_run)
                else:
                    self.waiting_runs.add(str(flow_run.id))
        except PREFECT_ERRORS as exc:
            log.debug("create failed: %r", exc)
            await self._prefect_unavailable(entry, exc)
            return
        self._failures = 0
        await self.inbox.mark_dispatched(entry.id, runs)
        self.stats.dispatched += 1
        self.in_flight += 1
        # a timer waits for its due time on purpose: its lag counts from then
        since = entry.not_before if entry.timer_key and entry.not_before else entry.received_at
        self.stats.last_dispatch_lag = max(0.0, self.clock() - since.timestamp())

    async def _completed_runs(self, entry: InboxEntry, matched: list[Any]) -> dict[str, str]:
        """recipe -> the entry's earlier run of it, for the ones that completed (a "Preview"
        run sent nothing: a replay runs it again, once its connectors are configured)."""
        earlier = {r.name: entry.flow_runs[r.name] for r in matched if r.name in entry.flow_runs}
        if not earlier:
            return {}
        done = {
            str(r.id)
            for r in await read_runs(
                self.client, sorted(UUID(rid) for rid in earlier.values()), [StateType.COMPLETED]
            )
            if r.state is None or r.state.name != PREVIEW_STATE
        }
        return {name: rid for name, rid in earlier.items() if rid in done}

    async def _create(
        self, entry: InboxEntry, event: Event, recipe: str, replay_of: str | None
    ) -> Any:
        failures = 0
        while True:
            try:
                return await self._create_once(entry, event, recipe, replay_of)
            except httpx.HTTPStatusError as exc:  # PrefectHTTPStatusError is one
                failures += 1
                # "database is locked": another write finishes within milliseconds
                if exc.response.status_code != 503 or not self.locked_retry.retries_after(failures):
                    raise
                await asyncio.sleep(self.locked_retry.delay(failures))

    async def _create_once(
        self, entry: InboxEntry, event: Event, recipe: str, replay_of: str | None
    ) -> Any:
        return await self.client.create_flow_run_from_deployment(
            self.deployment_id,
            parameters={
                "entry_id": entry.id,
                "source": entry.source,
                "event_id": entry.event_id,
                "recipe": recipe,
            },
            name=f"{recipe}/{entry.event_id}",
            tags=flow_run_tags(recipe, event, replay_of),
            idempotency_key=idempotency_key(entry.source, entry.event_id, recipe, replay_of),
        )

    async def _prefect_unavailable(self, entry: InboxEntry, exc: BaseException) -> None:
        self._failures += 1
        self.stats.prefect_errors += 1
        delay = self.unavailable_retry.delay(self._failures)
        self._pause_until = self.clock() + delay
        message = f"Prefect API unavailable: {type(exc).__name__}: {exc}"
        log.warning(
            "%s; entry %s back to pending, pausing %.1fs",
            message,
            entry.event_id,
            delay,
            extra={"event_id": entry.event_id},
        )
        await self.inbox.retry_later(entry.id, message, delay)

    # -- follow (see hookline.engine.follow) ---------------------------------------------

    async def follow_once(self) -> int:
        """Move dispatched entries whose runs all ended to done/failed; return how many.
        Every `recover_seconds`, recover the runs of dead workers and reconcile settled
        events too (`Follower.follow_once`)."""
        return await self._follower.follow_once()

    async def reconcile_once(self, now: float | None = None) -> int:
        """Reflect in the inbox what happened to settled events' runs later, in Prefect;
        return how many events changed (`Follower.reconcile_once`)."""
        return await self._follower.reconcile_once(now)


def _event(entry: InboxEntry) -> Event:
    """The entry's event; ValueError if the stored body cannot be parsed."""
    try:
        return Event.from_body(
            source=entry.source,
            event_type=entry.event_type,
            event_id=entry.event_id,
            body=entry.body,
        )
    except EventError as exc:
        raise ValueError(str(exc)) from exc
