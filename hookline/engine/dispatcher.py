"""Moves inbox entries into Prefect flow runs, at the pace Prefect can take, and follows them.

    claim (leased) --match--> create flow run per recipe --> mark_dispatched --follow--> done/failed

- Every flow run is created with idempotency key ``<source>:<event_id>:<recipe>``: a dispatcher
  that dies between creating runs and marking the entry re-creates nothing when the lease
  expires and the entry is claimed again (Prefect returns the existing run).
- Prefect down or overloaded (connection errors, 5xx after the client's own retries): the entry
  goes back to pending with exponential backoff and the dispatcher pauses, so nothing is lost
  and Prefect is not hammered while it recovers.
- ``order_by`` lanes: a recipe run whose lane key (the rendered ``order_by``, shared by all
  recipes: `support-ticket-created` and `support-ticket-resolved` both order by ticket id)
  is held by another event's runs waits; events of one lane go out in event-time order. The
  runs of one event never wait for each other. Lanes are held by the dispatcher, so run one
  dispatcher per inbox when recipes use ``order_by`` (receivers and workers scale freely).
- Following: one Prefect query per cycle reads the states of every dispatched entry's runs;
  an entry is ``done`` when all its runs completed, ``failed`` (with the runs' messages) when
  any failed, crashed or was cancelled.
- Lost runs: a worker killed mid-run leaves its run Pending or Running for ever. A run that
  has been Pending/Running longer than its recipe can possibly take (every attempt of every
  step timing out, plus backoffs, plus `stuck_margin`) is marked Crashed and the event is sent
  again (at most `max_auto_retries` times); the step log keeps finished steps from repeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import httpx
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.exceptions import PrefectHTTPStatusError

from hookline.inbox import Inbox, InboxEntry
from hookline.recipes import Event, RecipeSet, build_context, render_template
from hookline.recipes.matcher import type_matches

log = logging.getLogger("hookline.dispatcher")

TERMINAL_OK = {"COMPLETED"}
TERMINAL_BAD = {"FAILED", "CRASHED", "CANCELLED"}


def idempotency_key(source: str, event_id: str, recipe: str, replay_of: str | None) -> str:
    key = f"{source}:{event_id}:{recipe}"
    return f"{key}:replay:{replay_of}" if replay_of else key


def flow_run_tags(recipe: str, event: Event) -> list[str]:
    return ["hookline", f"recipe:{recipe}", f"event:{event.event_type}", f"source:{event.source}"]


@dataclass
class DispatcherStats:
    created: int = 0
    dispatched: int = 0
    done: int = 0
    failed: int = 0
    deferred: int = 0
    last_dispatch_lag: float = 0.0
    prefect_errors: int = 0


@dataclass
class _Lane:
    entry_id: int
    runs: set[str] = field(default_factory=set)


@dataclass
class Dispatcher:
    inbox: Inbox
    recipes: RecipeSet
    client: Any  # prefect.client.orchestration.PrefectClient
    deployment_id: UUID
    concurrency: int = 1
    """Flow-run creates at once. 1 suits a SQLite-backed Prefect (concurrent writers there
    meet "database is locked" 503s and 2^n s client backoffs); raise it on PostgreSQL."""
    batch: int = 32
    lease_seconds: float = 60.0
    poll_seconds: float = 0.25
    max_backoff: float = 60.0
    client_retries: int = 0
    """Prefect client retries per call. Its default (5, with 2^n s backoff) can hold a call
    for a minute and turns every SQLite "database is locked" 503 into a 2 s stall; the
    dispatcher retries a 503 itself within milliseconds (`fast_retries`) and leaves anything
    longer to its own backoff, with the entry kept pending."""
    fast_retries: int = 6
    stuck_margin: float = 120.0
    max_auto_retries: int = 3
    write_gate: asyncio.Lock | None = None
    """Optionally shared with an in-process worker: a flow-run create waits for the run being
    executed. For a plain SQLite Prefect server, where a create that overlaps a run's state
    writes gets "database is locked" (503) and a 2^n s client backoff. `hookline up`'s embedded
    server does not need it (its transactions queue, see prefect_serve.py): measured with
    `bench/e2e.py --gate on|off`, the gate costs it 6.2 vs 8.2 recipe runs/s."""
    on_created: Callable[[Any], object] | None = None
    """Called with each new flow run: `hookline up` hands it straight to its in-process
    worker instead of waiting for the worker's next poll."""
    clock: Callable[[], float] = time.time
    stats: DispatcherStats = field(default_factory=DispatcherStats)
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _lanes: dict[str, _Lane] = field(default_factory=dict)  # lane key -> the event holding it
    _pause_until: float = 0.0
    _failures: int = 0

    async def readiness(self) -> str:
        """The `/readyz` check `hookline up` adds: fails while Prefect is unreachable."""
        counts = await self.inbox.counts()
        pending = counts.get("pending", 0)
        if self.clock() < self._pause_until:
            raise RuntimeError(
                f"Prefect API unavailable (last {self.stats.prefect_errors} error(s)); "
                f"{pending} event(s) pending, kept in the inbox"
            )
        return f"{pending} pending, last dispatch lag {self.stats.last_dispatch_lag:.2f}s"

    def notify(self) -> None:
        """Something was stored: dispatch now instead of at the next poll."""
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
                await self.follow_once()
            except Exception:  # never let one bad cycle stop the dispatcher
                log.exception("dispatch cycle failed; retrying")
                n = 0
                await asyncio.sleep(1.0)
            if n == 0 and not stop.is_set():
                self.wakeup.clear()
                delay = max(self.poll_seconds, self._pause_until - self.clock())
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

    async def dispatch_once(self) -> int:
        """Claim due entries and create their flow runs; return how many were claimed."""
        if self.clock() < self._pause_until:
            return 0
        entries = await self.inbox.claim(self.batch, lease_seconds=self.lease_seconds)
        if not entries:
            return 0
        # event-time order within the batch, so a lane's earlier event goes first
        entries.sort(key=lambda e: (e.event_time or e.received_at, e.id))
        sem = asyncio.Semaphore(self.concurrency)

        async def one(entry: InboxEntry) -> None:
            async with sem:
                await self._dispatch(entry)

        lanes_first = [e for e in entries if self._uses_lanes(e)]
        rest = [e for e in entries if not self._uses_lanes(e)]
        for e in lanes_first:  # sequential: lane decisions depend on the previous entry
            await self._dispatch(e)
        await asyncio.gather(*(one(e) for e in rest))
        return len(entries)

    def _uses_lanes(self, entry: InboxEntry) -> bool:
        """Whether a recipe with ``order_by`` could match this entry's event type."""
        return any(
            r.order_by and type_matches(r.on, entry.event_type) for r in self.recipes.recipes
        )

    async def _dispatch(self, entry: InboxEntry) -> None:
        try:
            event = Event.from_body(
                source=entry.source,
                event_type=entry.event_type,
                event_id=entry.event_id,
                body=entry.body,
            )
        except Exception as exc:
            await self.inbox.mark_failed(entry.id, f"cannot parse stored event: {exc}")
            self.stats.failed += 1
            return
        results = self.recipes.match(event)
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
                await self.inbox.mark_done(entry.id)
                self.stats.done += 1
            return
        runs: dict[str, str] = {}
        waiting: list[str] = []
        try:
            for recipe in matched:
                lane = self._lane(recipe, event)
                holder = self._lanes.get(lane) if lane is not None else None
                if holder is not None and holder.entry_id != entry.id:
                    waiting.append(str(lane))
                    continue
                replay_of = entry.flow_runs.get(recipe.name)
                async with self.write_gate or contextlib.nullcontext():
                    flow_run = await self._create(entry, event, recipe.name, replay_of)
                runs[recipe.name] = str(flow_run.id)
                self.stats.created += 1
                if lane is not None:
                    self._lanes.setdefault(lane, _Lane(entry.id)).runs.add(str(flow_run.id))
                if self.on_created is not None:
                    self.on_created(flow_run)
        except (httpx.HTTPError, PrefectHTTPStatusError, OSError) as exc:
            log.debug("create failed: %r", exc)
            await self._prefect_unavailable(entry, exc)
            return
        self._failures = 0
        if waiting:
            # runs created so far are idempotent: re-created (found) on the next claim
            self.stats.deferred += 1
            await self.inbox.retry_later(
                entry.id, f"waiting for order_by lane(s) {', '.join(waiting)}", 0.2
            )
            return
        await self.inbox.mark_dispatched(entry.id, runs)
        self.stats.dispatched += 1
        self.stats.last_dispatch_lag = max(0.0, self.clock() - entry.received_at.timestamp())

    async def _create(
        self, entry: InboxEntry, event: Event, recipe: str, replay_of: str | None
    ) -> Any:
        for attempt in range(self.fast_retries + 1):
            try:
                return await self._create_once(entry, event, recipe, replay_of)
            except httpx.HTTPStatusError as exc:  # PrefectHTTPStatusError is one
                if exc.response.status_code != 503 or attempt == self.fast_retries:
                    raise
                # "database is locked": another write finishes within milliseconds
                await asyncio.sleep(0.02 * 2**attempt * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")  # pragma: no cover

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
            tags=flow_run_tags(recipe, event),
            idempotency_key=idempotency_key(entry.source, entry.event_id, recipe, replay_of),
        )

    def _lane(self, recipe: Any, event: Event) -> str | None:
        if not recipe.order_by:
            return None
        ctx = build_context(event, recipe=recipe, steps={}, run={}, failure=None, environ={})
        return str(render_template(recipe.order_by, ctx))

    async def _prefect_unavailable(self, entry: InboxEntry, exc: BaseException) -> None:
        self._failures += 1
        self.stats.prefect_errors += 1
        delay = min(self.max_backoff, 0.5 * 2 ** min(self._failures, 10))
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

    async def _resend_if_stuck(
        self,
        entry: InboxEntry,
        states: dict[str, Any],
        starts: dict[str, Any],
        now: float,
    ) -> bool:
        """Crash runs a dead worker left behind and send the event again; True if it did."""
        from prefect.states import Crashed

        stuck: list[str] = []
        for name, rid in entry.flow_runs.items():
            st, start = states.get(rid), starts.get(rid)
            if st is None or st.type.value not in ("PENDING", "RUNNING") or start is None:
                continue
            recipe = self.recipes.get(name)
            limit = (longest_run_seconds(recipe) if recipe else 0.0) + self.stuck_margin
            if now - start.timestamp() > limit:
                stuck.append(rid)
        if not stuck:
            return False
        message = (
            f"run(s) {', '.join(stuck)} made no progress for longer than the recipe can take; "
            "their worker is presumed dead"
        )
        for rid in stuck:
            try:
                await self.client.set_flow_run_state(
                    UUID(rid), Crashed(message=message), force=True
                )
            except (httpx.HTTPError, PrefectHTTPStatusError, OSError) as exc:
                log.warning("cannot mark run %s crashed: %s", rid, exc)
                return True
        if entry.attempts >= self.max_auto_retries:
            await self.inbox.mark_failed(entry.id, message)
            self.stats.failed += 1
            log.error(
                "event %s failed: %s", entry.event_id, message, extra={"event_id": entry.event_id}
            )
        else:
            log.warning(
                "event %s: %s; sending it again",
                entry.event_id,
                message,
                extra={"event_id": entry.event_id},
            )
            await self.inbox.retry_later(entry.id, message, 0.0)
        return True

    # -- follow -----------------------------------------------------------------------------

    async def follow_once(self, limit: int = 200) -> int:
        """Move dispatched entries whose runs all ended to done/failed; return how many."""
        entries = await self.inbox.list(status="dispatched", limit=limit)
        ids = {UUID(rid) for e in entries for rid in e.flow_runs.values()}
        ids |= {UUID(rid) for lane in self._lanes.values() for rid in lane.runs}
        if not ids:
            return 0
        try:
            runs = await self.client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=sorted(ids))),
                limit=len(ids),
            )
        except (httpx.HTTPError, PrefectHTTPStatusError, OSError) as exc:
            log.warning("cannot read flow run states: %s", exc)
            return 0
        states = {str(r.id): r.state for r in runs}
        starts = {str(r.id): r.start_time for r in runs}
        for key, lane in list(self._lanes.items()):
            ended = [states.get(rid) for rid in lane.runs]
            if all(st is not None and st.type.value in TERMINAL_OK | TERMINAL_BAD for st in ended):
                del self._lanes[key]
        finished = 0
        now = self.clock()
        for entry in entries:
            if await self._resend_if_stuck(entry, states, starts, now):
                continue
            types = {name: states.get(rid) for name, rid in entry.flow_runs.items()}
            if any(
                s is None or s.type.value not in TERMINAL_OK | TERMINAL_BAD for s in types.values()
            ):
                continue
            bad = {n: s for n, s in types.items() if s is not None and s.type.value in TERMINAL_BAD}
            if bad:
                message = "; ".join(
                    f"{n}: {s.type.value.lower()}: {s.message or ''}".strip()
                    for n, s in bad.items()
                )
                await self.inbox.mark_failed(entry.id, message)
                self.stats.failed += 1
                log.warning(
                    "event %s failed: %s",
                    entry.event_id,
                    message,
                    extra={"event_id": entry.event_id},
                )
            else:
                await self.inbox.mark_done(entry.id)
                self.stats.done += 1
            finished += 1
        return finished


def longest_run_seconds(recipe: Any) -> float:
    """An upper bound on one run of ``recipe``: every attempt of every step times out."""
    total = 0.0
    for step in [*recipe.steps, *recipe.on_failure]:
        attempts = int(step.retries) + 1
        backoff = sum(min(300.0, float(step.retry_backoff) * 2**i * 1.25) for i in range(attempts))
        total += float(step.timeout) * attempts + backoff
    return total


def lag_seconds(entries: list[InboxEntry], now: datetime) -> float:
    """How long the oldest pending entry has waited."""
    if not entries:
        return 0.0
    return max(0.0, (now - min(e.received_at for e in entries)).total_seconds())
