"""The shipped recipes (recipes/*.yaml, hookline.yaml) run by the real engine against the fake
vendors: inbox -> dispatcher -> Prefect flow run -> in-process worker -> fakes, with the
worker's own Runtime (its memory store lives in the inbox database)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from hookline.config import CoreSettings, load_config
from hookline.engine.dispatcher import Dispatcher
from hookline.engine.worker import Worker
from hookline.flows import runtime
from hookline.inbox import Inbox, InboxEntry, open_inbox
from hookline.recipes import RecipeSet, load_recipes
from tests.fakes import FakeVendors

REPO = Path(__file__).resolve().parents[2]


def sample(
    event_type: str, *, timestamp: str | None = None, **sections: dict[str, Any]
) -> dict[str, Any]:
    """A seed sample with a fresh event id, ``data``/``account`` updated from ``sections``."""
    from hookline import samples

    payload = samples.load(event_type)
    payload["event_id"] = f"evt_{uuid.uuid4().hex[:12]}"  # Prefect keys outlive a test's inbox
    if timestamp is not None:
        payload["timestamp"] = timestamp
    for name, values in sections.items():
        payload.setdefault(name, {}).update(values)
    return payload


@dataclass
class Shipped:
    inbox: Inbox
    recipes: RecipeSet
    client: Any
    dispatcher: Dispatcher
    runtime: runtime.Runtime
    fakes: FakeVendors

    async def put(self, payload: dict[str, Any]) -> int:
        """Put ``payload`` in the inbox (as the receiver does) and wake the dispatcher."""
        body = json.dumps(payload).encode()
        # The event time, as the receiver takes it from the body: order_by lanes follow it.
        event_time = datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00"))
        inserted, entry_id = await self.inbox.put(
            "solveforce", payload["event_id"], payload["event_type"], body, {}, event_time
        )
        assert inserted
        self.dispatcher.notify()
        return entry_id

    async def wait(self, entry_id: int, timeout: float = 60.0) -> InboxEntry:
        """The entry once every recipe run for it has ended."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            entry = await self.inbox.get(entry_id)
            assert entry is not None
            if entry.status in ("done", "failed"):
                return entry
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"entry still {entry.status} after {timeout}s: {entry}")
            await asyncio.sleep(0.05)

    async def run(self, payload: dict[str, Any]) -> InboxEntry:
        return await self.wait(await self.put(payload))

    async def memory(self, key: str) -> dict[str, Any] | None:
        """What `memory.remember` stored under ``key`` (the worker keeps it in the inbox)."""
        value = (await self.inbox.completed_steps("hookline-memory", key, "memory")).get("value")
        return None if value is None else dict(value)


@pytest.fixture
def fakes() -> Iterator[FakeVendors]:
    with FakeVendors() as f:
        yield f


@pytest.fixture
def recipe_env() -> dict[str, str]:
    """Extra environment for the run; empty: every channel falls back to its default."""
    return {}


@pytest.fixture
async def shipped(
    prefect_api: str, tmp_path: Path, fakes: FakeVendors, recipe_env: dict[str, str]
) -> AsyncIterator[Shipped]:
    async with running(prefect_api, tmp_path, fakes, {**fakes.env, **recipe_env}) as harness:
        yield harness


@contextlib.asynccontextmanager
async def running(
    prefect_api: str, tmp_path: Path, fakes: FakeVendors, env: Mapping[str, str]
) -> AsyncIterator[Shipped]:
    from prefect import get_client

    from hookline.engine.deployment import ensure_deployment

    settings = CoreSettings(home=tmp_path / "home", recipes=str(REPO / "recipes"))
    settings.home.mkdir()
    config = load_config(REPO / "hookline.yaml")
    recipes = load_recipes(settings.recipe_paths, config=config)
    inbox = await open_inbox(settings)
    # The channels are left unset unless a test sets them: the recipes' defaults apply.
    unset = set(config.env) - set(env)
    environ = {k: v for k, v in {**os.environ, **env}.items() if k not in unset}

    async def no_sleep(_s: float) -> None:
        await asyncio.sleep(0)

    async with get_client() as client:
        deployment_id = await ensure_deployment(client)
        rt = runtime.Runtime(
            inbox=inbox,
            recipes=recipes,
            config=config,
            environ=environ,
            ui_url=prefect_api.removesuffix("/api"),
            sleep=no_sleep,
        )
        runtime.install(rt)
        worker = Worker(client, poll_seconds=0.2)
        dispatcher = Dispatcher(
            inbox, recipes, client, deployment_id, on_created=worker.submit, poll_seconds=0.1
        )
        stop = asyncio.Event()
        jobs = asyncio.gather(dispatcher.run(stop), worker.run(stop))
        try:
            yield Shipped(inbox, recipes, client, dispatcher, rt, fakes)
        finally:
            stop.set()
            await jobs
            runtime.install(None)
            await inbox.close()
