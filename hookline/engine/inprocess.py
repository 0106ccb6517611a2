"""What a long-lived process shares between the flow runs it executes in-process.

`run_flow_async` is written for one run per process: every run builds what a process would
build once. Profiling `hookline worker` (py-spy, bench/e2e.py) showed where a 3-step run's
~120 ms of client CPU went, and what sharing buys (bench/README.md, "In-process sharing"):

- **Clients.** Without a client context, each run creates a `PrefectClient` and a
  `SyncPrefectClient`, and each of those builds a fresh TLS context from certifi's CA bundle
  (~40 % of the worker's CPU, even for an http:// API). One `AsyncClientContext` and one
  `SyncClientContext`, entered for the worker's lifetime, are found and reused by
  `get_client()` inside every run.
- **Default result storage.** A flow without `result_storage` asks the server for its
  default storage block (`GET /admin/storage`) on every run. Recipe runs persist no results
  (replay uses the inbox's step log), so the worker gives the recipe flow a local storage and
  the request disappears.
- **Suspension observer.** For every run of a deployment, Prefect 3.9 starts a thread with
  its own event loop, client and events websocket to notice a "Suspended" request, blocks the
  caller's loop until it is ready and joins it (up to 0.2 s) at the end. `SharedSuspension`
  keeps Prefect's behaviour (a run suspended from the UI still stops at its next step) with one
  `FlowRunSuspendingObserver` for all the runs of the process; it is Prefect's own class, fed
  the same way Prefect's per-run observer is.

Everything here falls back to Prefect's own per-run behaviour outside a shared context, so a
run executed anywhere else (tests, `bench/prefect_ceiling.py` without ``shared``) is unaffected.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

log = logging.getLogger("hookline.worker")

_observer: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "hookline_suspension_observer", default=None
)
_installed = False


def _install_shared_suspension() -> bool:
    """Route `prefect.flow_engine`'s per-run suspension observer through `_observer`."""
    global _installed
    if _installed:
        return True
    from prefect import flow_engine

    original = getattr(flow_engine, "observe_flow_run_suspension", None)
    if original is None:  # a Prefect without the per-run observer: nothing to share
        return False

    @contextlib.contextmanager
    def observe_flow_run_suspension(
        flow_run_id: UUID, suspension_request: Any, *args: Any, **kwargs: Any
    ) -> Iterator[None]:
        observer = _observer.get()
        if observer is None:
            with original(flow_run_id, suspension_request, *args, **kwargs):
                yield
            return
        # the engine registered `suspension_request` under flow_run_id beforehand, which is
        # where the shared observer's callback (mark_flow_run_suspension_requested) finds it
        observer.add_in_flight_flow_run_id(flow_run_id)
        try:
            yield
        finally:
            observer.remove_in_flight_flow_run_id(flow_run_id)

    setattr(flow_engine, "observe_flow_run_suspension", observe_flow_run_suspension)  # noqa: B010
    _installed = True
    return True


@contextlib.asynccontextmanager
async def shared_run_context() -> AsyncIterator[None]:
    """Share clients and one suspension observer among the runs started in this context.

    Raises what entering a Prefect client raises when the API is unreachable; the caller
    retries (runs started meanwhile use Prefect's per-run behaviour).
    """
    from prefect._flow_run_suspension import mark_flow_run_suspension_requested
    from prefect._internal.observers import FlowRunSuspendingObserver
    from prefect.context import AsyncClientContext, SyncClientContext

    async with contextlib.AsyncExitStack() as stack:
        # async first: its version check is awaited; the sync one then finds it cached
        await stack.enter_async_context(AsyncClientContext())
        stack.enter_context(SyncClientContext())
        if _install_shared_suspension():

            def on_suspended(flow_run_id: UUID, state: Any) -> None:
                mark_flow_run_suspension_requested(flow_run_id, state)

            observer = await stack.enter_async_context(
                FlowRunSuspendingObserver(on_suspended=on_suspended)
            )
            token = _observer.set(observer)
            stack.callback(_observer.reset, token)
        yield


def local_result_storage(home: Path) -> Path:
    """A result storage that needs no server round trip: Prefect turns a path into a local
    file system without asking the server (nothing is written to it: recipe runs and their
    steps have ``persist_result=False``)."""
    return home / "prefect-results"
