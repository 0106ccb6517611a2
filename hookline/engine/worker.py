"""`hookline worker`: claims recipe runs through Prefect's work pool and executes them in-process.

Prefect's process worker and `flow.serve()` start a new Python process per flow run (about
2.5 s and 1.5-3 CPU-seconds each here); the same async flow executed inside a long-lived
process takes about 0.2 s. This worker keeps Prefect's scale-out machinery — a work pool, its
queues, the Scheduled -> Pending transition as the claim, worker heartbeats shown in the UI —
and replaces only the per-run process with a coroutine:

    poll the pool's due runs (no more than it has room for)  -->  claim (flow run,
    Scheduled state) in the inbox (exactly one worker wins)  -->  propose Pending  -->  record
    this worker on the run  -->  run_flow_async(recipe_flow, flow_run)  in this process

Any number of workers on any number of machines can serve the same pool. A run handed over
directly by an in-process dispatcher (`hookline up`) skips the poll but is claimed the same way.

Why the inbox claim: Prefect refuses Pending from Pending, Running and Cancelled, but accepts
it from Completed and Failed (its rule is for retries). A worker that polled a run into its
backlog and claimed it only after another worker had run it to completion would run it again.
The inbox claim is keyed by the Scheduled state the worker saw, so it runs at most once; a
Retry from the UI schedules the run anew (a new state), which is claimable again.

The worker heartbeats to the work pool every `heartbeat_seconds`; the dispatcher treats a
worker silent for its `worker_timeout` as dead and recovers the runs it claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from hookline.engine.deployment import WORK_POOL
from hookline.engine.prefect_internals import (
    cancellation_observer,
    claim_pending,
    local_result_storage,
    run_in_process,
    shared_run_context,
    with_client_retries,
)
from hookline.flows.recipe_flow import recipe_flow
from hookline.flows.runtime import forget_cancel, request_cancel
from hookline.inbox import Inbox, InboxError

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

log = logging.getLogger("hookline.worker")


@dataclass
class WorkerStats:
    claimed: int = 0
    lost_claims: int = 0
    completed: int = 0
    failed: int = 0


@dataclass
class Worker:
    client: PrefectClient
    work_pool: str = WORK_POOL
    name: str = field(default_factory=lambda: f"hookline-{socket.gethostname()}-{os.getpid()}")
    limit: int = 8
    poll_seconds: float = 1.0
    heartbeat_seconds: float = 10.0
    inbox: Inbox | None = None
    """Where runs are claimed (see the module docstring); the worker of `hookline worker` and
    `hookline up` always has one. Without it, only Prefect's Pending transition guards."""
    on_finished: Any = None
    """Called with each flow run once it ended, and the final state the engine got from
    Prefect (None if the run crashed here): `hookline up` wakes its dispatcher, which follows
    that run's event at once, so the next event of an `order_by` lane starts at once instead
    of at the next follow cycle."""
    handoff_backlog: int = 32
    """Runs handed over directly (by an in-process dispatcher) that may wait here for a free
    slot instead of for the next poll; they are claimed only when a slot frees, so another
    worker polling the pool can still take them first."""
    stats: WorkerStats = field(default_factory=WorkerStats)
    _inflight: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _sem: asyncio.Semaphore | None = None
    write_gate: asyncio.Lock | None = None
    """Shared with the dispatcher when Prefect runs on SQLite: a run executes alone (see
    Dispatcher.write_gate)."""
    home: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "hookline")
    """Where the recipe flow's (never written) local result storage points."""
    _context: contextvars.Context = field(default_factory=contextvars.copy_context)
    """Runs execute in the context the worker was made in (from `run` on: with the shared
    clients and observer of `shared_run_context`), with Prefect's full client retries,
    whoever submits them (the poll loop and the dispatcher limit their own)."""
    _flow: Any = None
    _cancels: Any = None  # FlowRunCancellingObserver, once Prefect was reachable

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limit)
        return self._sem

    @property
    def busy(self) -> int:
        return len(self._inflight)

    def room(self) -> int:
        """How many more runs `submit` takes now: free slots and free places in the backlog."""
        return max(0, self.limit + self.handoff_backlog - self.busy)

    def submit(self, flow_run: Any) -> bool:
        """Take ``flow_run``: it starts as soon as a slot is free (it waits for one if the
        handoff backlog has room). False leaves it to the work pool's next poll."""
        key = str(flow_run.id)
        if key in self._inflight or self.room() <= 0:
            return False
        task = asyncio.get_running_loop().create_task(
            self._execute(flow_run), context=self._context.copy()
        )
        self._inflight[key] = task

        def forget(_task: asyncio.Task[None]) -> None:
            self._inflight.pop(key, None)

        task.add_done_callback(forget)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Poll the work pool and heartbeat until ``stop``; then wait for runs in flight."""
        async with contextlib.AsyncExitStack() as shared:
            await self._poll_loop(stop, shared)

    async def _share(self, shared: contextlib.AsyncExitStack) -> None:
        """Enter `shared_run_context` where runs start from now on (see prefect_internals),
        and watch the runs this worker executes for the UI's Cancel."""
        await shared.enter_async_context(shared_run_context())
        self._cancels = await shared.enter_async_context(cancellation_observer(_request_cancel))
        self._context = contextvars.copy_context()

    async def _poll_loop(self, stop: asyncio.Event, shared: contextlib.AsyncExitStack) -> None:
        few_retries = with_client_retries(1)
        beat = asyncio.create_task(self._heartbeats(stop))
        sharing = False
        try:
            while not stop.is_set():
                if not sharing:
                    try:
                        await self._share(shared)
                        sharing = True
                    except ImportError:  # a Prefect whose internals moved: say so, once
                        log.exception(
                            "cannot share Prefect clients and observers between runs (Prefect "
                            "%s?); runs use Prefect's per-run behaviour and UI Cancel may not "
                            "stop them: install the Prefect version pinned in pyproject.toml",
                            _prefect_version(),
                        )
                        sharing = True
                    except (OSError, RuntimeError, ValueError) as exc:
                        # Prefect unreachable: runs use per-run clients until it answers
                        log.warning("cannot set up shared Prefect clients yet: %s", exc)
                try:
                    with few_retries():
                        await self.poll_once()
                except Exception as exc:  # Prefect down: keep polling, slower
                    log.warning("cannot poll work pool %r: %s", self.work_pool, exc)
                    await _sleep_or_stop(stop, min(10.0, self.poll_seconds * 5))
                    continue
                await _sleep_or_stop(stop, self.poll_seconds)
        finally:
            beat.cancel()
            if self._inflight:
                log.info("waiting for %d run(s) in flight", len(self._inflight))
                await asyncio.gather(*self._inflight.values(), return_exceptions=True)

    async def poll_once(self) -> int:
        """Take scheduled runs from the pool, up to the free capacity and backlog, once no more
        than half the backlog waits for a slot; return how many. Runs taken into the backlog
        are claimed only when a slot frees (see `submit`): a dispatcher faster than this
        worker (a burst, with no write gate) must not leave the runs it could not hand over
        to one poll per slot every `poll_seconds`."""
        room = self.room()
        if room <= 0 or self.busy - self.limit > self.handoff_backlog // 2:
            # enough waits here already. In a burst a poll would take the runs another
            # engine's dispatcher handed to its own worker, to fail their claim later, while
            # every poll costs the server ~25 ms (bench/README.md, "Two engines")
            return 0
        responses = await _scheduled_runs(self.client, self.work_pool, limit=room)
        started = 0
        for r in responses:
            if started >= room:
                break
            if self.submit(r.flow_run):
                started += 1
        return started

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        few_retries = with_client_retries(1)
        while not stop.is_set():
            try:
                with few_retries():
                    await self.client.send_worker_heartbeat(
                        work_pool_name=self.work_pool,
                        worker_name=self.name,
                        heartbeat_interval_seconds=self.heartbeat_seconds,
                    )
            except Exception as exc:  # Prefect down: the next beat tries again
                log.warning("worker heartbeat failed: %s", exc)
            await _sleep_or_stop(stop, self.heartbeat_seconds)

    def _recipe_flow(self) -> Any:
        if self._flow is None:
            self._flow = recipe_flow.with_options(result_storage=local_result_storage(self.home))
        return self._flow

    async def _claim(self, flow_run: Any) -> bool:
        """Claim the Scheduled state this worker saw, in the inbox; False: someone did."""
        if flow_run.state is None or not flow_run.state.is_scheduled():
            return False  # only a Scheduled state is ever claimed
        if self.inbox is None:
            return True
        try:
            won = await self.inbox.claim_run(str(flow_run.id), str(flow_run.state.id), self.name)
        except InboxError as exc:
            log.warning("cannot claim flow run %s in the inbox: %s", flow_run.id, exc)
            return False
        if not won:
            log.info("flow run %s was claimed by another worker; skipped", flow_run.id)
        return won

    async def _reopen_if_settled(self, flow_run: Any) -> None:
        """A run that ran before is running again: someone restarted it in Prefect (the UI's
        Retry). Its event, `done` or `failed` in the inbox, is `dispatched` again, so it
        follows the run to its new end (the dispatcher's `reconcile_once` would, within
        `recover_seconds`; here it is at once)."""
        if self.inbox is None or not (flow_run.run_count or 0):
            return
        params = flow_run.parameters or {}
        entry_id, recipe = params.get("entry_id"), params.get("recipe")
        if not isinstance(entry_id, int) or not isinstance(recipe, str):
            return  # refused by the flow itself, with a clear message
        try:
            reopened = await self.inbox.reopen(entry_id, recipe, str(flow_run.id))
        except InboxError as exc:
            log.warning("cannot mark restarted run %s's event dispatched: %s", flow_run.id, exc)
            return
        if reopened:
            log.info(
                "flow run %s (%s, event %s) was restarted in Prefect; its event is "
                "dispatched again",
                flow_run.id,
                recipe,
                params.get("event_id"),
            )

    async def _execute(self, flow_run: Any) -> None:
        async with self._semaphore(), self.write_gate or contextlib.nullcontext():
            if not await self._claim(flow_run):
                self.stats.lost_claims += 1
                return
            # the Pending state names this worker: the run's state history says who ran it,
            # at no extra API write (bench/README.md, "Scale-out")
            try:
                state = await claim_pending(
                    self.client, flow_run.id, message=f"claimed by {self.name}"
                )
            except Exception as exc:
                log.warning("cannot claim flow run %s: %s", flow_run.id, exc)
                return
            if state is None or not state.is_pending():  # another worker claimed it first
                self.stats.lost_claims += 1
                return
            self.stats.claimed += 1
            await self._reopen_if_settled(flow_run)
            if self._cancels is not None:
                self._cancels.add_in_flight_flow_run_id(flow_run.id)
            final = None
            try:
                final = await run_in_process(self._recipe_flow(), flow_run)
            except Exception:  # the engine already reported the crash to Prefect
                log.exception("flow run %s crashed in the worker", flow_run.id)
                self.stats.failed += 1
                return
            finally:
                if self._cancels is not None:
                    self._cancels.remove_in_flight_flow_run_id(flow_run.id)
                forget_cancel(str(flow_run.id))
                if self.on_finished is not None:
                    self.on_finished(flow_run, final)
            if final.is_completed():
                self.stats.completed += 1
            else:
                self.stats.failed += 1


async def _scheduled_runs(client: PrefectClient, work_pool: str, *, limit: int) -> list[Any]:
    """At most ``limit`` runs of ``work_pool`` that are due, oldest first.

    `PrefectClient.get_scheduled_flow_runs_for_work_pool` does not pass the endpoint's
    ``limit``, so the server answered up to 200 whole runs per poll while a burst waited in
    the pool, for a worker with room for one (bench/README.md, "Sustained")."""
    from prefect.client.schemas.responses import WorkerFlowRunResponse

    response = await client.request(
        "POST",
        "/work_pools/{name}/get_scheduled_flow_runs",
        path_params={"name": work_pool},
        json={"scheduled_before": str(datetime.now(UTC)), "limit": limit},
    )
    return [WorkerFlowRunResponse.model_validate(r) for r in response.json()]


def _prefect_version() -> str:
    import prefect

    return str(getattr(prefect, "__version__", "unknown"))


def _request_cancel(flow_run_id: UUID) -> None:
    log.info("flow run %s is cancelling: it stops before its next step", flow_run_id)
    request_cancel(str(flow_run_id))


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
