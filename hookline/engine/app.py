"""The composition root: how an engine process (`hookline up`, `worker`, `dispatch`) is put
together from configuration, recipes, the inbox and Prefect. The CLIs call it; nothing here
parses arguments or prints."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from hookline.config import HooklineConfig, get_settings, load_config
from hookline.engine.errors import EngineError
from hookline.engine.events import ui_url_from_api
from hookline.inbox import Inbox

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient

    from hookline.engine.dispatcher import Dispatcher
    from hookline.engine.worker import Worker
    from hookline.recipes.reload import RecipeSource


@dataclass
class Engine:
    """What every engine process shares: built by `open_engine`, used by the CLIs."""

    config: HooklineConfig
    inbox: Inbox
    recipes: RecipeSource
    """Run `recipes.watch(stop)` beside the engine's jobs: it reloads changed recipe files."""
    client: PrefectClient
    deployment_id: UUID

    def worker(self, **options: Any) -> Worker:
        """A worker that claims its runs in this engine's inbox; ``options``: `Worker` fields."""
        from hookline.engine.worker import Worker

        return Worker(self.client, inbox=self.inbox, home=get_settings().home, **options)

    def dispatcher(self, worker: Worker | None = None, **options: Any) -> Dispatcher:
        """A dispatcher of this engine's inbox, recipes and deployment; ``options``:
        `Dispatcher` fields. With ``worker``, in the same process (`Dispatcher.hand_to`)."""
        from hookline.engine.dispatcher import Dispatcher

        d = Dispatcher(self.inbox, self.recipes, self.client, self.deployment_id, **options)
        if worker is not None:
            d.hand_to(worker)
        return d


@asynccontextmanager
async def open_engine(*, preview: bool = False) -> AsyncIterator[Engine]:
    """Config, recipes, inbox, Prefect client and deployment; installs the flow Runtime."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    from hookline.engine.deployment import ensure_deployment
    from hookline.engine.prefect_internals import check_prefect
    from hookline.flows import runtime
    from hookline.flows.artifact import payload_settings
    from hookline.inbox import open_inbox
    from hookline.recipes.reload import RecipeSource

    check_prefect()  # before anything starts: the Prefect internals the engine uses
    if not PREFECT_API_URL.value():
        # without it, Prefect's client would quietly start a throwaway in-process server
        raise EngineError(
            "PREFECT_API_URL is not set: point it at your Prefect server "
            "(e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api), "
            "or run everything on this machine with `hookline up`"
        )
    settings = get_settings()
    config = load_config(settings.config)
    payload_settings(config)  # a bad `artifacts:` section fails here, not in every run
    recipes = RecipeSource(
        settings.recipe_paths, config=config, interval=settings.recipes_reload_seconds
    )
    inbox = await open_inbox(settings)
    try:
        async with get_client() as client:
            deployment_id = await ensure_deployment(client)
            ui = PREFECT_UI_URL.value() or ui_url_from_api(PREFECT_API_URL.value())
            runtime.install(
                runtime.Runtime(
                    inbox=inbox, recipes=recipes, config=config, preview=preview, ui_url=ui
                )
            )
            try:
                yield Engine(config, inbox, recipes, client, deployment_id)
            finally:
                runtime.install(None)
                from prefect.logging.handlers import APILogHandler

                await APILogHandler.aflush()  # the last runs' logs, before the client closes
    finally:
        await inbox.close()


def configure_process_logging() -> None:
    """The process's log format and level, from HOOKLINE_LOG_FORMAT / HOOKLINE_LOG_LEVEL."""
    from hookline.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)


def freeze_startup_heap() -> None:
    """Put what is alive once a long-lived process has started (its imported modules,
    Prefect's and pydantic's models, the recipes) beyond the garbage collector's reach.

    A full collection walks every tracked object: with Prefect imported, ~290,000 of them,
    0.2-0.5 s with the whole process stopped, every 5-15 s under load. In `hookline up` and
    its Prefect server these pauses were the accepted -> first step tail at a steady 6
    events/s (bench/README.md, "Garbage-collector pauses"). Frozen objects are still freed
    by reference counting; only cycles among them are kept for good, and startup makes few.
    """
    gc.collect()
    gc.freeze()


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGINT and SIGTERM set ``stop``: the engine drains what is in flight and exits."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
