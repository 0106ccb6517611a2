"""Follows dispatched events' flow runs to their end, recovers the runs of dead workers, and
reflects in the inbox what happens to settled events' runs later in Prefect.

    dispatched --all runs Completed--> done
    dispatched --a run Failed, Crashed or Cancelled--> failed
    dispatched --its worker dead--> pending (sent again)
    done/failed --a run rescheduled in Prefect--> dispatched

- Following: each cycle pages through every dispatched entry, oldest first, and asks Prefect
  (at most 200 ids per query, Prefect's limit) which of their runs ended (and an entry whose
  run an in-process worker saw end is followed alone, at once); an entry is ``done``
  when all its runs completed, ``failed`` (with the runs' messages) when any failed, crashed
  or was cancelled. Transitions name the status they expect, so several dispatchers following
  the same runs act once. The count of entries still in flight is the owner's ``in_flight``
  (its dispatches stop at ``max_in_flight``).
- Lost runs: every `recover_seconds`, runs still Scheduled, Pending or Running are checked
  against the worker that claimed them (`Inbox.run_claims`) and that worker's heartbeats in
  Prefect's work pool. A worker silent for `worker_timeout` seconds is dead: its Pending and
  Running runs are marked Crashed and the event is sent again (at most `max_auto_retries`
  times; the step log keeps finished steps, `on_failure` included, from repeating); a run it
  claimed but never started is scheduled again for another worker. A run nobody claimed falls
  back to the longest time its recipe can take.
- Reconciling, at the same pace: a settled event whose run changed later in Prefect (the UI's
  Retry or "Mark as") follows that change (`Follower.reconcile_once`).

The `Follower` belongs to a `Dispatcher` and reads its settings from it at each use (see
`Owner`), so a setting changed on a running dispatcher applies from its next cycle.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import httpx
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import State, StateType
from prefect.exceptions import PrefectHTTPStatusError

from hookline.inbox import Inbox, InboxEntry
from hookline.recipes import RecipeSet
from hookline.recipes.reload import RecipeSource

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

    from hookline.engine.dispatcher import DispatcherStats

log = logging.getLogger("hookline.dispatcher")

TERMINAL_BAD = {"FAILED", "CRASHED", "CANCELLED"}
_NOT_COMPLETED: list[StateType] = [t for t in StateType if t != StateType.COMPLETED]
PREFECT_MAX_LIMIT = 200  # Prefect refuses a flow_runs/filter limit above this (422)
PREFECT_ERRORS = (httpx.HTTPError, PrefectHTTPStatusError, OSError)
"""What a call to an unreachable or failing Prefect API raises."""
_FINAL = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]
_LIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]


async def read_runs(
    client: PrefectClient, ids: list[UUID], types: list[StateType] | None = None
) -> list[Any]:
    """The flow runs among ``ids`` (in one of ``types``, if given), paged by Prefect's limit."""
    runs: list[Any] = []
    for start in range(0, len(ids), PREFECT_MAX_LIMIT):
        chunk = ids[start : start + PREFECT_MAX_LIMIT]
        state = FlowRunFilterState(type=FlowRunFilterStateType(any_=types)) if types else None
        runs += await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk), state=state),
            limit=len(chunk),
        )
    return runs


def longest_run_seconds(recipe: Any) -> float:
    """An upper bound on one run of ``recipe``: every step at its longest (`Step.retry`)."""
    return float(sum(step.longest_seconds() for step in [*recipe.steps, *recipe.on_failure]))


class Owner(Protocol):
    """What a `Follower` reads from the `Dispatcher` that owns it (see its fields)."""

    inbox: Inbox
    recipes: RecipeSet | RecipeSource
    client: PrefectClient
    stats: DispatcherStats
    follow_page: int
    reconcile_batch: int
    recover_seconds: float
    worker_timeout: float
    settled_window: float
    stuck_margin: float
    in_flight: int
    waiting_runs: set[str]
    max_auto_retries: int
    work_pool: str

    @property
    def clock(self) -> Callable[[], float]: ...

    def notify(self) -> None: ...


async def dispatched_pages(inbox: Inbox, page: int) -> AsyncIterator[list[InboxEntry]]:
    """The inbox's dispatched entries, oldest first, ``page`` at a time."""
    after = 0
    while entries := await inbox.dispatched(after_id=after, limit=page):
        yield entries
        if len(entries) < page:
            return
        after = entries[-1].id


class Follower:
    """Follows the owner's dispatched events to done/failed; recovers and reconciles runs."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self._next_recover = 0.0
        self._reconcile_after = 0  # where the next reconcile pass starts (an entry id)

    async def follow_once(self) -> int:
        """Move dispatched entries whose runs all ended to done/failed; return how many.

        Every dispatched entry is followed, oldest first, in pages; Prefect is asked only
        for the runs that ended, at most 200 ids per query. Every `recover_seconds` the runs
        still live are checked for a dead worker, and settled events reconciled, too.
        """
        o = self.owner
        now = o.clock()
        recover = now >= self._next_recover
        if recover:
            self._next_recover = now + o.recover_seconds
        finished = seen = 0
        whole = True  # every dispatched entry counted: the owner's in_flight is exact
        live: set[str] = set()
        waiting = set(o.waiting_runs)  # only a dispatcher without an in-process worker has any
        async for entries in dispatched_pages(o.inbox, o.follow_page):
            seen += len(entries)
            if waiting:
                live.update(rid for e in entries for rid in e.flow_runs.values())
            try:
                finished += await self._follow(entries)
                if recover:
                    await self._recover(entries, now)
            except PREFECT_ERRORS as exc:
                log.warning("cannot read flow run states: %s", exc)
                whole = False
                break
        o.in_flight = seen - finished if whole else max(0, o.in_flight - finished)
        if whole:  # a run that ended unclaimed (cancelled while Scheduled) waits no more
            o.waiting_runs.difference_update(waiting - live)
        if recover:
            try:
                await self.reconcile_once(now)
            except PREFECT_ERRORS as exc:
                log.warning("cannot read flow run states: %s", exc)
        return finished

    async def follow_entries(self, ended: dict[int, dict[str, State]]) -> int:
        """Follow only these entries (their runs ended in this process), the way a cycle
        would, reading from Prefect only the runs whose final state is not given (entry id
        -> run id -> state); return how many moved to done/failed."""
        o = self.owner
        entries = [e for i in sorted(ended) if (e := await o.inbox.get(i)) is not None]
        known = {rid: state for runs in ended.values() for rid, state in runs.items()}
        try:
            finished = await self._follow([e for e in entries if e.status == "dispatched"], known)
        except PREFECT_ERRORS as exc:  # the next cycle follows them
            log.warning("cannot read flow run states: %s", exc)
            return 0
        o.in_flight = max(0, o.in_flight - finished)
        return finished

    async def reconcile_once(self, now: float | None = None) -> int:
        """Reflect in the inbox what happened to settled events' runs later, in Prefect.

        A run restarted there (the UI's Retry, or any change back to Scheduled) makes its
        event `dispatched` again, followed to its new end; a run set by hand to another final
        state (the UI's "Mark as") makes the event `done` or `failed` to match. Only a state
        newer than the event's own last change counts, so an event failed for a reason of
        its own (a `when` error at a replay) is not undone by its old runs. Returns how many
        events changed.

        A pass checks at most `reconcile_batch` events, oldest first from where the last
        pass stopped, and wraps around: a busy system's hour of done events is read from
        Prefect a slice per pass, not whole every `recover_seconds` (28,800 done events
        at 8 a second cost the server 0.5 s of CPU per pass, bench/README.md). A change
        by hand is seen within (settled events / batch) passes; a Retry from the UI
        sooner, by the worker that runs the restarted run (`Worker._reopen_if_settled`).
        """
        o = self.owner
        now = o.clock() if now is None else now
        since = datetime.fromtimestamp(now - o.settled_window, UTC)
        changed = checked = 0
        after = self._reconcile_after
        while checked < o.reconcile_batch:
            page = min(o.follow_page, o.reconcile_batch - checked)
            entries = await o.inbox.settled(after, page, done_since=since)
            if entries:
                after = entries[-1].id
                checked += len(entries)
                changed += await self._resettle(entries)
            if len(entries) < page:
                after = 0  # the end: the next pass starts from the oldest again
                break
        self._reconcile_after = after
        return changed

    async def _resettle(self, entries: list[InboxEntry]) -> int:
        inbox = self.owner.inbox
        client = self.owner.client

        def ids(status: str) -> list[UUID]:
            return sorted(
                {UUID(rid) for e in entries if e.status == status for rid in e.flow_runs.values()}
            )

        # A done event changes only if one of its runs is no longer Completed: ask Prefect for
        # those alone, so the hour of done events a busy system keeps costs an indexed
        # lookup per 200 ids and an answer of almost nothing.
        found = await read_runs(client, ids("failed"))
        found += await read_runs(client, ids("done"), _NOT_COMPLETED)
        runs = {str(r.id): r for r in found}
        changed = 0
        for entry in entries:
            settled_at = entry.updated_at.timestamp() if entry.updated_at else 0.0
            states = {
                name: runs[rid].state
                for name, rid in entry.flow_runs.items()
                if rid in runs and runs[rid].state is not None
            }
            later = {
                n: s
                for n, s in states.items()
                if s.timestamp is not None and s.timestamp.timestamp() > settled_at
            }
            if not later or (entry.status == "failed" and len(states) < len(entry.flow_runs)):
                continue  # nothing changed since; or a failed event's run deleted from Prefect
            live = [n for n, s in later.items() if not s.is_final()]
            bad = {n: s for n, s in states.items() if s.type.value in TERMINAL_BAD}
            if live:
                name = live[0]
                if await inbox.reopen(entry.id, name, entry.flow_runs[name]):
                    changed += 1
                    log.info(
                        "event %s: its %s run %s is %s again in Prefect (a Retry from the "
                        "UI?); following it",
                        entry.event_id,
                        name,
                        entry.flow_runs[name],
                        later[name].name,
                        extra={"event_id": entry.event_id},
                    )
            elif entry.status == "failed" and not bad:
                if await inbox.mark_done(entry.id, expect="failed"):
                    changed += 1
                    log.info(
                        "event %s: its runs are all Completed in Prefect now (set by hand?); "
                        "marked done",
                        entry.event_id,
                        extra={"event_id": entry.event_id},
                    )
            elif entry.status == "done" and bad:
                message = _bad_runs_message(bad)
                if await inbox.mark_failed(entry.id, message, expect="done"):
                    changed += 1
                    log.warning(
                        "event %s: a run of it is no longer Completed in Prefect (set by "
                        "hand?); marked failed: %s",
                        entry.event_id,
                        message,
                        extra={"event_id": entry.event_id},
                    )
        return changed

    async def _follow(
        self, entries: list[InboxEntry], known: dict[str, State] | None = None
    ) -> int:
        runs = {rid for e in entries for rid in e.flow_runs.values()}
        if not runs:
            return 0
        states = dict(known or {})
        ids = sorted(UUID(rid) for rid in runs - states.keys())
        if ids:  # only the runs whose final state this process did not see
            read = await read_runs(self.owner.client, ids, _FINAL)
            states.update((str(r.id), r.state) for r in read)
        finished = 0
        for entry in entries:
            ended = {name: states.get(rid) for name, rid in entry.flow_runs.items()}
            if any(s is None for s in ended.values()):
                continue
            bad = {n: s for n, s in ended.items() if s is not None and s.type.value in TERMINAL_BAD}
            if bad:
                await self._fail_dispatched(entry, _bad_runs_message(bad), logging.WARNING)
            elif await self.owner.inbox.mark_done(entry.id, expect="dispatched"):
                self.owner.stats.done += 1
            finished += 1
        return finished

    async def _fail_dispatched(self, entry: InboxEntry, message: str, level: int) -> None:
        """Mark a dispatched entry failed (once, whichever dispatcher gets there) and say so."""
        if await self.owner.inbox.mark_failed(entry.id, message, expect="dispatched"):
            self.owner.stats.failed += 1
            log.log(
                level,
                "event %s failed: %s",
                entry.event_id,
                message,
                extra={"event_id": entry.event_id},
            )

    async def _live_workers(self, now: float) -> set[str]:
        """Names of the work pool's workers that heartbeat within `worker_timeout`."""
        workers = await self.owner.client.read_workers_for_work_pool(
            work_pool_name=self.owner.work_pool, limit=PREFECT_MAX_LIMIT
        )
        return {
            w.name
            for w in workers
            if w.last_heartbeat_time is not None
            and now - w.last_heartbeat_time.timestamp() <= self.owner.worker_timeout
        }

    async def _recover(self, entries: list[InboxEntry], now: float) -> None:
        """Crash the runs a dead worker left Pending/Running and send their events again;
        reschedule runs a dead worker claimed but never started."""
        from prefect.states import Crashed, Scheduled

        o = self.owner
        by_run = {rid: (e, name) for e in entries for name, rid in e.flow_runs.items()}
        if not by_run:
            return
        runs = await read_runs(o.client, sorted(UUID(r) for r in by_run), _LIVE)
        if not runs:
            return
        claims = await o.inbox.run_claims(str(r.id) for r in runs)
        live = await self._live_workers(now)
        dead: dict[int, list[str]] = {}
        for run in runs:
            rid = str(run.id)
            entry, recipe_name = by_run[rid]
            worker = claims.get(rid) or run.infrastructure_pid
            since = run.state.timestamp.timestamp() if run.state.timestamp else now
            if worker is not None and worker not in live and now - since > o.worker_timeout:
                if run.state.type == StateType.SCHEDULED:
                    # claimed, never started: a new Scheduled state is claimable again
                    log.warning("run %s: its worker %s is dead; scheduling it again", rid, worker)
                    await o.client.set_flow_run_state(
                        run.id,
                        Scheduled(message=f"its worker {worker} stopped; scheduled again"),
                        force=True,
                    )
                    continue
                dead.setdefault(entry.id, []).append(rid)
            elif worker is None and run.state.type != StateType.SCHEDULED:
                recipe = o.recipes.get(recipe_name)
                limit = (longest_run_seconds(recipe) if recipe else 0.0) + o.stuck_margin
                start = run.start_time.timestamp() if run.start_time else since
                if now - start > limit:
                    dead.setdefault(entry.id, []).append(rid)
        entries_by_id = {e.id: e for e in entries}
        for entry_id, rids in dead.items():
            entry = entries_by_id[entry_id]
            message = (
                f"run(s) {', '.join(rids)} lost: their worker stopped heartbeating for more "
                f"than {o.worker_timeout:g}s (or, with no worker known, ran longer than the "
                "recipe can take)"
            )
            for rid in rids:
                await o.client.set_flow_run_state(UUID(rid), Crashed(message=message), force=True)
            if entry.attempts >= o.max_auto_retries:
                await self._fail_dispatched(entry, message, logging.ERROR)
            elif await o.inbox.retry_later(entry.id, message, 0.0, expect="dispatched"):
                log.warning(
                    "event %s: %s; sending it again",
                    entry.event_id,
                    message,
                    extra={"event_id": entry.event_id},
                )
                o.notify()


def _bad_runs_message(bad: dict[str, Any]) -> str:
    """What the failed, crashed or cancelled runs (recipe -> state) say."""
    return "; ".join(
        f"{n}: {s.type.value.lower()}: {s.message or ''}".strip() for n, s in bad.items()
    )
