"""An in-process Hookline engine for tests: inbox + dispatcher + worker in the test's event
loop against a real Prefect server, like `hookline up` without HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hookline.config import CoreSettings, HooklineConfig
from hookline.engine.dispatcher import Dispatcher
from hookline.engine.worker import Worker
from hookline.flows import runtime
from hookline.inbox import FINAL_STATUSES, Inbox, InboxEntry, open_inbox
from hookline.recipes.event import parse_timestamp
from hookline.recipes.reload import RecipeSource
from tests.stack import PG, pg, pg_available


@dataclass
class EngineHarness:
    inbox: Inbox
    recipes: RecipeSource
    """The dispatcher's recipes; the worker's are ``runtime.recipes`` (the same object unless
    the engine was started with ``watch`` "dispatcher" or "worker")."""
    client: Any
    dispatcher: Dispatcher
    worker: Worker
    runtime: runtime.Runtime
    stop: asyncio.Event

    async def put(self, payload: dict[str, Any], source: str = "solveforce") -> int:
        """Store ``payload`` as the receiver does (event time from its body); wake dispatch."""
        inserted, entry_id = await self.inbox.put(
            source,
            payload["event_id"],
            payload["event_type"],
            json.dumps(payload).encode(),
            {},
            parse_timestamp(payload.get("timestamp")),
        )
        assert inserted
        self.dispatcher.notify()
        return entry_id

    async def wait_final(self, entry_id: int, timeout: float = 60.0) -> InboxEntry:
        """The entry once every recipe run for it has ended."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            entry = await self.inbox.get(entry_id)
            assert entry is not None
            if entry.status in FINAL_STATUSES:
                return entry
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"entry still {entry.status} after {timeout}s: {entry}")
            await asyncio.sleep(0.05)

    async def run(self, payload: dict[str, Any]) -> InboxEntry:
        return await self.wait_final(await self.put(payload))

    async def memory(self, key: str) -> dict[str, Any] | None:
        """What `memory.remember` stored under ``key`` (the worker keeps it in the inbox)."""
        value = (await self.inbox.completed_steps("hookline-memory", key, "memory")).get("value")
        return None if value is None else dict(value)


@contextlib.contextmanager
def prefect_requests(client: Any, path_end: str) -> Iterator[list[Any]]:
    """The requests ``client`` sends to Prefect paths ending in ``path_end``, in the block."""
    seen: list[Any] = []

    async def keep(request: Any) -> None:
        if request.url.path.endswith(path_end):
            seen.append(request)

    hooks = client._client.event_hooks["request"]
    hooks.append(keep)
    try:
        yield seen
    finally:
        hooks.remove(keep)


def run_ids_read(requests: list[Any]) -> list[int]:
    """How many flow run ids each `/flow_runs/filter` request of ``requests`` asked for."""
    bodies = [json.loads(r.content or b"{}") for r in requests if r.method == "POST"]
    return [len(((b.get("flow_runs") or {}).get("id") or {}).get("any_") or []) for b in bodies]


@contextlib.asynccontextmanager
async def running_engine(
    prefect_api: str,
    home: Path,
    recipe_paths: str,
    config: HooklineConfig,
    environ: Mapping[str, str],
    database_url: str | None = None,
    *,
    reload_seconds: float = 0.1,
    watch: str = "both",
) -> AsyncIterator[EngineHarness]:
    """Run the engine until the block ends; retries back off without sleeping.

    The dispatcher and the worker share one `RecipeSource` that looks at the recipe files
    every ``reload_seconds``; with ``watch`` "dispatcher" or "worker" they have one each and
    only that side's is watched (the other looks only when a run names a recipe it lacks),
    as two processes that see a change at different times."""
    from prefect import get_client
    from prefect.logging.handlers import APILogHandler

    from hookline.engine.deployment import ensure_deployment

    settings = CoreSettings(home=home, recipes=recipe_paths, database_url=database_url)
    home.mkdir(parents=True, exist_ok=True)
    recipes = RecipeSource(settings.recipe_paths, config=config, interval=reload_seconds)
    worker_recipes = recipes
    if watch != "both":
        worker_recipes = RecipeSource(settings.recipe_paths, config=config, interval=reload_seconds)
    watched = {"both": recipes, "dispatcher": recipes, "worker": worker_recipes}[watch]
    inbox = await open_inbox(settings)

    async def no_sleep(_s: float) -> None:
        await asyncio.sleep(0)

    async with get_client() as client:
        deployment_id = await ensure_deployment(client)
        rt = runtime.Runtime(
            inbox=inbox,
            recipes=worker_recipes,
            config=config,
            environ=dict(environ),
            ui_url=prefect_api.removesuffix("/api"),
            sleep=no_sleep,
        )
        runtime.install(rt)
        worker = Worker(client, poll_seconds=0.2, inbox=inbox, heartbeat_seconds=1.0)
        dispatcher = Dispatcher(inbox, recipes, client, deployment_id, poll_seconds=0.1)
        dispatcher.hand_to(worker)
        stop = asyncio.Event()
        jobs = asyncio.gather(dispatcher.run(stop), worker.run(stop), watched.watch(stop))
        try:
            yield EngineHarness(inbox, recipes, client, dispatcher, worker, rt, stop)
        finally:
            stop.set()
            await jobs
            runtime.install(None)
            await inbox.close()
            await APILogHandler.aflush()  # before this test's server may go away


@contextlib.asynccontextmanager
async def running_pg_engine(
    prefect_api: str,
    home: Path,
    recipe_paths: str,
    environ: Mapping[str, str],
    *,
    schema_prefix: str,
) -> AsyncIterator[EngineHarness]:
    """`running_engine` with its inbox in a fresh PostgreSQL schema, dropped afterwards; the
    test is skipped when PostgreSQL is not listening."""
    if not pg_available():
        pytest.skip("PostgreSQL is not listening on 127.0.0.1:5432")
    schema = f"{schema_prefix}_{uuid.uuid4().hex[:8]}"
    try:
        async with running_engine(
            prefect_api,
            home,
            recipe_paths,
            HooklineConfig(env=[]),
            environ,
            database_url=f"{PG}/test?schema={schema}",
        ) as harness:
            yield harness
    finally:
        await pg(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
