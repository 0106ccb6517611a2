"""What a recipe flow run needs from the process that executes it.

Flow parameters carry identifiers only (inbox entry, source, event id, recipe name): never the
payload's secrets, never a vendor credential. The executing process — `hookline worker` or
`hookline up` — installs a `Runtime` that holds the inbox, the loaded recipes and the vendor
clients; the flow looks everything else up through it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hookline.config import HooklineConfig
from hookline.connectors import build_client
from hookline.flows.errors import FlowError
from hookline.recipes.reload import RecipeSource

if TYPE_CHECKING:
    from hookline.connectors.timer import Timer
    from hookline.inbox import Inbox
    from hookline.recipes import Recipe, RecipeSet


class RuntimeMissingError(FlowError):
    """A recipe flow ran in a process that did not install a Runtime."""


@dataclass
class Runtime:
    """Process-wide resources of a Hookline worker."""

    inbox: Inbox
    recipes: RecipeSet | RecipeSource
    """A `RecipeSource` (the engine's) follows the recipe files; a plain set stays as given."""
    config: HooklineConfig | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    preview: bool = False
    """Steps whose connector is not configured record what they would send instead of
    failing. Only `hookline up` turns this on, and says so when it starts."""
    ui_url: str | None = None
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    secrets: Callable[[str], str] | None = None
    """Reads ``prefect-secret:NAME`` settings; None: Prefect Secret blocks (`prefect_secret`)."""
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def client(self, connector: str, timeout: float | None = None) -> Any:
        """The vendor client for ``connector`` whose calls time out after at most ``timeout``
        seconds (a step's timeout), built once per process and timeout.

        Raises:
            NotConfiguredError: the connector is not (or wrongly) configured.
            TransientError: a Prefect Secret block could not be read right now.
        """
        key = connector if timeout is None else f"{connector}@{timeout:g}"
        with self._lock:
            if connector in INBOX_CLIENTS:
                if connector not in self._clients:
                    make = INBOX_CLIENTS[connector]
                    self._clients[connector] = make(self.inbox, asyncio.get_running_loop())
                return self._clients[connector]
            if key not in self._clients:
                self._clients[key] = build_client(
                    connector,
                    self.config,
                    environ=self.environ,
                    secrets=self.secrets or prefect_secret,
                    timeout=timeout,
                )
            return self._clients[key]

    async def recipe(self, name: str, *, look: bool = False) -> Recipe | None:
        """The active recipe ``name``. A `RecipeSource` looks at its files first when it has
        no such recipe or ``look`` is set: a dispatcher may have reloaded before this worker."""
        if isinstance(self.recipes, RecipeSource):
            return await self.recipes.lookup(name, look=look)
        return self.recipes.get(name)

    def recipe_env(self) -> dict[str, str]:
        """The environment variables recipes may read (hookline.yaml's ``env:`` list, as
        reloaded with the recipes)."""
        if isinstance(self.recipes, RecipeSource):
            allowed = self.recipes.config.env
        else:
            allowed = self.config.env if self.config is not None else []
        return {name: self.environ[name] for name in allowed if name in self.environ}

    def run_url(self, flow_run_id: str) -> str | None:
        if not self.ui_url:
            return None
        return f"{self.ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}"


def prefect_secret(name: str) -> str:
    """The value of the Prefect Secret block ``name`` (settings written ``prefect-secret:NAME``).

    Read once per process when a connector's client is built; the value never becomes a flow
    parameter, a log line or an artifact.

    Raises:
        KeyError: there is no such block (a configuration problem). Anything else (the
            Prefect API unreachable, a 5xx) propagates and the step is retried.
    """
    from prefect.blocks.system import Secret
    from prefect.exceptions import ObjectNotFound

    try:
        block: Any = Secret.load(name, _sync=True)  # type: ignore[call-arg]
    except ValueError as exc:
        # Prefect turns its ObjectNotFound into this ValueError
        if isinstance(exc.__cause__, ObjectNotFound) or "Unable to find block" in str(exc):
            raise KeyError(name) from None
        raise
    return str(block.get())


class InboxMemory:
    """`memory.*`'s store, kept in the inbox database (so every worker shares it).

    It reuses the inbox's step log under a namespace of its own: one row per key, upserted.
    Connector actions run in a worker thread; the store hands each call to the event loop
    that owns the inbox connection and waits for it.
    """

    SOURCE = "hookline-memory"
    TIMEOUT = 30.0

    def __init__(self, inbox: Inbox, loop: asyncio.AbstractEventLoop) -> None:
        self._inbox = inbox
        self._loop = loop

    def get(self, key: str) -> dict[str, Any] | None:
        future = asyncio.run_coroutine_threadsafe(
            self._inbox.completed_steps(self.SOURCE, key, "memory"), self._loop
        )
        value = future.result(self.TIMEOUT).get("value")
        return dict(value) if value is not None else None

    def set(self, key: str, value: dict[str, Any]) -> None:
        future = asyncio.run_coroutine_threadsafe(
            self._inbox.record_step(self.SOURCE, key, "memory", "value", value), self._loop
        )
        future.result(self.TIMEOUT)


class InboxTimers:
    """`timer.*`'s store: each timer is an inbox entry of source ``hookline``, pending, due at
    its time (`Inbox.start_timer`), so it survives restarts, fires through the dispatcher as
    any event, and once with any number of dispatchers. Calls are handed to the event loop
    that owns the inbox connection, as `InboxMemory`'s are."""

    TIMEOUT = 30.0

    def __init__(self, inbox: Inbox, loop: asyncio.AbstractEventLoop) -> None:
        self._inbox = inbox
        self._loop = loop

    def now(self) -> float:
        return self._inbox.now()

    def start(self, timer: Timer) -> bool:
        future = asyncio.run_coroutine_threadsafe(
            self._inbox.start_timer(
                timer.key, timer.event_id, timer.event_type, timer.body, timer.due
            ),
            self._loop,
        )
        _, replaced = future.result(self.TIMEOUT)
        return replaced

    def cancel(self, key: str) -> bool:
        future = asyncio.run_coroutine_threadsafe(self._inbox.cancel_timer(key), self._loop)
        return future.result(self.TIMEOUT)


INBOX_CLIENTS: dict[str, Callable[[Inbox, asyncio.AbstractEventLoop], Any]] = {
    "memory": InboxMemory,
    "timer": InboxTimers,
}
"""Connectors whose client the worker builds over its inbox, on the loop that owns it."""

_current: Runtime | None = None


def install(runtime: Runtime | None) -> None:
    """Make ``runtime`` the one recipe flows in this process use (None removes it)."""
    global _current
    _current = runtime


def current() -> Runtime:
    """The installed Runtime.

    Raises:
        RuntimeMissingError: this process is not a Hookline worker.
    """
    if _current is None:
        raise RuntimeMissingError(
            "no Hookline runtime in this process: recipe flows run inside "
            "`hookline worker` or `hookline up`, not a plain Prefect worker"
        )
    return _current


_cancel_requested: set[str] = set()


def request_cancel(flow_run_id: str) -> None:
    """Ask the recipe run ``flow_run_id`` executing in this process to stop before its next
    step (the worker calls this when Prefect marks the run Cancelling)."""
    _cancel_requested.add(flow_run_id)


def cancel_requested(flow_run_id: str) -> bool:
    return flow_run_id in _cancel_requested


def forget_cancel(flow_run_id: str) -> None:
    _cancel_requested.discard(flow_run_id)
