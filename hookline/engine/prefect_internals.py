"""Every Prefect internal Hookline reaches into, in one place, checked when an engine starts.

Hookline runs recipe flows in its own long-lived worker process and shares Prefect's per-run
machinery between runs (docs/architecture.md#execution-prefects-work-pool-in-process-runs).
For that it calls functions Prefect does not promise to keep; they are all here, and only
here, so the rest of Hookline sees typed, named operations:

- **Running a flow run in this process** (`claim_pending`, `run_in_process`): the worker
  proposes Pending itself, then hands the run to Prefect's `run_flow_async`.
- **What a long-lived process shares** (`shared_run_context`). `run_flow_async` is written for
  one run per process: every run builds what a process would build once. Profiling
  `hookline worker` (py-spy, bench/e2e.py) showed where a 3-step run's client CPU went, and
  what sharing buys (bench/README.md, "In-process sharing"):
  - *Clients.* Without a client context, each run creates a `PrefectClient` and a
    `SyncPrefectClient`, and each builds a fresh TLS context from certifi's CA bundle. One
    `AsyncClientContext` and one `SyncClientContext`, entered for the worker's lifetime, are
    found and reused by `get_client()` inside every run.
  - *Default result storage* (`local_result_storage`). A flow without `result_storage` asks
    the server for its default storage block on every run; recipe runs persist no results
    (replay uses the inbox's step log), so the worker gives the flow a local storage.
  - *Suspension observer.* For every run of a deployment, Prefect 3.9 starts a thread with its
    own event loop, client and events websocket to notice a "Suspended" request. One
    `FlowRunSuspendingObserver` (Prefect's own class, fed the way Prefect's per-run observer
    is) serves all the runs of the process; Suspend from the UI still stops a run at its next
    step. Everything falls back to Prefect's per-run behaviour outside a shared context.
- **Cancel from the UI** (`cancellation_observer`): one `FlowRunCancellingObserver` per worker.
- **The embedded server's SQLite transactions** (`immediate_sqlite_transactions`, applied by
  `prefect_serve` in the server's process; see its docstring for why).

pyproject.toml pins the tested minor release, but an install that ignores the pin (another
constraints file, a hand upgrade) must not fail later in the middle of a run: `check_prefect`
fails at start-up, naming what moved and what to do. `INTERNALS` lists what it checks; a test
keeps it in step with what this module imports.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from hookline.engine.errors import EngineError

if TYPE_CHECKING:
    from prefect import Flow
    from prefect._internal.observers import OnCancellingCallback
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.objects import FlowRun, State

log = logging.getLogger("hookline.engine")

#: The Prefect minor release Hookline is tested with (pyproject.toml: prefect>=3.9.1,<3.10).
TESTED = (3, 9)

FIX = (
    "install the tested Prefect release: `make install` (pip install -c constraints.txt -e .), "
    "or `pip install 'prefect>=3.9.1,<3.10'`; to move Hookline to a new Prefect, re-run its "
    "tests (tests/engine) and bench/e2e.py, then `make lock` (docs/operations.md#upgrading-prefect)"
)


class PrefectCompatError(EngineError):
    """The installed Prefect lacks an internal Hookline uses, or changed its signature."""


@dataclass(frozen=True)
class Internal:
    """One Prefect internal: where it lives, the parameters Hookline passes, and why."""

    module: str
    name: str  # may be dotted: Class.method
    params: tuple[str, ...]
    used_for: str


INTERNALS: tuple[Internal, ...] = (
    Internal(
        "prefect.context",
        "SettingsContext",
        ("profile", "settings"),
        "settings built once for the worker's polls and heartbeats (`with_client_retries`)",
    ),
    Internal(
        "prefect.flow_engine",
        "run_flow_async",
        ("flow", "flow_run", "parameters", "return_type"),
        "the worker runs recipe flows in its own process",
    ),
    Internal(
        "prefect.utilities.engine",
        "propose_state",
        ("client", "state", "flow_run_id"),
        "the worker claims a run (Scheduled -> Pending)",
    ),
    Internal(
        "prefect.flow_engine",
        "observe_flow_run_suspension",
        ("flow_run_id", "suspension_request"),
        "one suspension observer shared by every run (Suspend/Resume from the UI)",
    ),
    Internal(
        "prefect._flow_run_suspension",
        "mark_flow_run_suspension_requested",
        ("flow_run_id", "state"),
        "the shared suspension observer's callback",
    ),
    Internal(
        "prefect._internal.observers",
        "FlowRunSuspendingObserver",
        ("on_suspended",),
        "one suspension observer shared by every run",
    ),
    Internal(
        "prefect._internal.observers",
        "FlowRunCancellingObserver",
        ("on_cancelling",),
        "Cancel from the Prefect UI stops a recipe run before its next step",
    ),
    Internal(
        "prefect.server.database.configurations",
        "AioSqliteConfiguration.begin_transaction",
        ("self", "session", "with_for_update"),
        "the embedded Prefect server's IMMEDIATE SQLite transactions",
    ),
)


def _version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in text.split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _problem(internal: Internal) -> str | None:
    where = f"{internal.module}.{internal.name}"
    try:
        obj: Any = importlib.import_module(internal.module)
    except ImportError as exc:
        return f"{where}: cannot import {internal.module} ({exc})"
    for attr in internal.name.split("."):
        obj = getattr(obj, attr, None)
        if obj is None:
            return f"{where}: missing (used for: {internal.used_for})"
    try:
        params = inspect.signature(obj).parameters
    except (TypeError, ValueError) as exc:
        return f"{where}: cannot read its signature ({exc})"
    missing = [p for p in internal.params if p not in params]
    if missing:
        return (
            f"{where}{inspect.signature(obj)}: no parameter {', '.join(missing)} "
            f"(used for: {internal.used_for})"
        )
    return None


def problems() -> list[str]:
    """What is missing or changed in the installed Prefect, one line each (empty: all good)."""
    return [p for p in map(_problem, INTERNALS) if p is not None]


def check_prefect() -> None:
    """Fail loudly, before anything starts, if the installed Prefect cannot run Hookline.

    Raises:
        PrefectCompatError: an internal is missing or its signature changed; the message lists
            each one and says what to do.
    """
    import prefect

    version = str(prefect.__version__)
    found = problems()
    tested = ".".join(map(str, TESTED))
    if found:
        raise PrefectCompatError(
            f"prefect {version} is not compatible with this Hookline (tested with prefect "
            f"{tested}.x): " + "; ".join(found) + f". To fix: {FIX}"
        )
    if _version(version) != TESTED:
        log.warning(
            "prefect %s is installed; Hookline is tested with %s.x. The internals it uses are "
            "still there, but re-run the tests before relying on it (%s)",
            version,
            tested,
            FIX,
        )


# -- running flow runs in this process ------------------------------------------------------


async def claim_pending(client: PrefectClient, flow_run_id: UUID, message: str) -> State | None:
    """Propose Pending for a Scheduled run, as Prefect's workers do; the state the server set
    (another worker may have won: then it is not Pending), or None if the server aborted the
    transition (the run is no longer Scheduled)."""
    from prefect.exceptions import Abort
    from prefect.states import Pending
    from prefect.utilities.engine import propose_state

    try:
        state: State = await propose_state(
            client, Pending(message=message), flow_run_id=flow_run_id
        )
    except Abort:
        return None
    return state


async def run_in_process(flow: Flow[Any, Any], flow_run: FlowRun) -> State:
    """Run ``flow_run`` (claimed: Pending) in this process to its final state."""
    from prefect.flow_engine import run_flow_async

    state = await run_flow_async(
        flow, flow_run=flow_run, parameters=dict(flow_run.parameters), return_type="state"
    )
    if state is None:  # not with return_type="state"; a Prefect that changed would say so
        raise PrefectCompatError(f"run_flow_async returned no state for flow run {flow_run.id}")
    return state


def cancellation_observer(on_cancelling: OnCancellingCallback) -> Any:
    """Prefect's `FlowRunCancellingObserver` (an async context manager): calls
    ``on_cancelling`` with the id of each watched run set to Cancelling (the UI's Cancel)."""
    from prefect._internal.observers import FlowRunCancellingObserver

    return FlowRunCancellingObserver(on_cancelling=on_cancelling)


# -- settings --------------------------------------------------------------------------------


def with_client_retries(retries: int) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A context manager factory: Prefect's current settings with ``retries`` client retries.

    The settings are built once, here. `temporary_settings` rebuilds them on every entry,
    and that is not cheap: pydantic-settings stats a dozen files, and each stat gives up the
    GIL. With a busy thread beside it (a heavy render) each stat waits out a GIL switch
    interval, and one poll stalled the event loop for half a second."""
    import prefect.context
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

    current = prefect.context.get_settings_context()
    settings = current.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: retries})

    def enter() -> contextlib.AbstractContextManager[Any]:
        return prefect.context.SettingsContext(profile=current.profile, settings=settings)

    return enter


# -- what a long-lived process shares ----------------------------------------------------------

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


# -- the embedded server ------------------------------------------------------------------


def immediate_sqlite_transactions() -> bool:
    """Make Prefect's SQLite transactions begin IMMEDIATE; False if this Prefect has no hook."""
    from prefect.server.database import configurations

    config = getattr(configurations, "AioSqliteConfiguration", None)
    original = getattr(config, "begin_transaction", None)
    if config is None or original is None:
        return False
    if getattr(original, "__hookline_immediate__", False):
        return True

    @contextlib.asynccontextmanager
    async def begin_transaction(
        self: Any, session: Any, with_for_update: bool = False
    ) -> AsyncGenerator[Any, None]:
        async with original(self, session, with_for_update=True) as transaction:
            yield transaction

    begin_transaction.__hookline_immediate__ = True  # type: ignore[attr-defined]
    config.begin_transaction = begin_transaction
    return True
