"""The shipped recipes (recipes/*.yaml, hookline.yaml) run by the real engine against the fake
vendors: inbox -> dispatcher -> Prefect flow run -> in-process worker -> fakes, with the
worker's own Runtime (its memory store lives in the inbox database)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from hookline.config import load_config
from tests.engine.harness import EngineHarness, running_engine
from vendor_fakes import FakeVendors

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


Shipped = EngineHarness


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
    """The engine on the shipped recipes and hookline.yaml."""
    config = load_config(REPO / "hookline.yaml")
    # The channels are left unset unless a test sets them: the recipes' defaults apply.
    unset = set(config.env) - set(env)
    environ = {k: v for k, v in {**os.environ, **env}.items() if k not in unset}
    async with running_engine(
        prefect_api, tmp_path / "home", str(REPO / "recipes"), config, environ
    ) as harness:
        yield harness
