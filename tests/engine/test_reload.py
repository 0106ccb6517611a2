"""Recipes change while the engine runs: a recipe copied in runs for the next event, a broken
edit is refused and the old recipe keeps running, a removed recipe stops, a run in flight keeps
the recipe it started with, and a worker that has not seen a change yet (or saw it first)
neither refuses good runs nor hangs on gone ones."""

from __future__ import annotations

import asyncio
import logging
import os
import textwrap
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from hookline.config import HooklineConfig, load_config
from tests.engine.conftest import OUTAGE_RECIPE, sample
from tests.engine.harness import EngineHarness, running_engine
from vendor_fakes import FakeVendors
from vendor_fakes.slack import channel_id

pytestmark = pytest.mark.anyio

INVOICES = """
name: invoices
on: billing.invoice.generated
steps:
  - id: post
    uses: slack.post_message
    with: { channel: "#billing", text: "invoice {{ data.invoice_id }}" }
"""

TWO_POSTS = """
name: two-posts
on: service.provisioned
steps:
  - id: first
    uses: slack.post_message
    with: { channel: "#ops", text: "first" }
  - id: second
    uses: slack.post_message
    with: { channel: "#ops", text: "second, VERSION" }
"""


async def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not after {timeout}s")
        await asyncio.sleep(0.02)


def _write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text).lstrip("\n"))


def _texts(fakes: FakeVendors, channel: str) -> list[str]:
    return [m["text"] for m in fakes.slack.messages if m["channel"] == channel_id(channel)]


async def test_a_recipe_copied_in_runs_for_the_next_event(
    engine: EngineHarness, recipes_dir: Path, fakes: FakeVendors
) -> None:
    before = await engine.run(sample("billing.invoice.generated"))
    assert before.status == "done" and before.flow_runs == {}  # no recipe for it yet

    _write(recipes_dir / "invoices.yaml", INVOICES)
    await _until(lambda: engine.recipes.get("invoices") is not None, "invoices loaded")
    entry = await engine.run(sample("billing.invoice.generated", invoice_id="inv_new"))

    assert entry.status == "done", entry.last_error
    assert set(entry.flow_runs) == {"invoices"}
    assert _texts(fakes, "#billing") == ["invoice inv_new"]


async def test_a_broken_edit_is_refused_and_the_old_recipe_keeps_running(
    engine: EngineHarness,
    recipes_dir: Path,
    fakes: FakeVendors,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hookline.recipes")
    fingerprint = engine.recipes.fingerprint
    broken = textwrap.dedent(OUTAGE_RECIPE).replace(
        "servicenow.create_incident", "servicenow.create_incidnt"
    )
    (recipes_dir / "outage.yaml").write_text(broken)
    await _until(lambda: engine.recipes.refused != [], "the edit refused")

    [refusal] = [r for r in caplog.records if "recipe reload refused" in r.getMessage()]
    assert refusal.levelno == logging.ERROR
    line = 1 + broken.splitlines().index("    uses: servicenow.create_incidnt")
    assert f"{recipes_dir / 'outage.yaml'}:{line}:" in refusal.getMessage()
    assert "did you mean 'servicenow.create_incident'?" in refusal.getMessage()
    assert refusal.getMessage().endswith(f"the previous recipes stay active ({fingerprint[:12]})")

    entry = await engine.run(sample(current_status="outage", impact="high"))
    assert entry.status == "done", entry.last_error
    assert len(fakes.servicenow.incidents) == 1  # the recipe as it was before the edit
    assert engine.recipes.fingerprint == fingerprint
    await asyncio.sleep(0.3)  # three more looks at the same broken file: no more errors
    assert sum("recipe reload refused" in r.getMessage() for r in caplog.records) == 1


async def test_a_removed_recipe_no_longer_runs(
    engine: EngineHarness, recipes_dir: Path, fakes: FakeVendors
) -> None:
    (recipes_dir / "tickets.yaml").unlink()
    await _until(lambda: engine.recipes.get("tickets") is None, "tickets removed")
    entry = await engine.run(sample("support.ticket.created"))
    assert entry.status == "done" and entry.flow_runs == {}
    assert fakes.slack.messages == []


async def test_a_run_in_flight_keeps_the_recipe_it_started_with(
    engine: EngineHarness, recipes_dir: Path, fakes: FakeVendors
) -> None:
    path = recipes_dir / "two-posts.yaml"
    _write(path, TWO_POSTS.replace("VERSION", "v1"))
    await _until(lambda: engine.recipes.get("two-posts") is not None, "two-posts loaded")
    v1 = engine.recipes.fingerprint
    fakes.slack.fail_next(status=None, delay=1.5, path="chat.postMessage")  # a slow answer
    first = await engine.put(sample("service.provisioned"))
    await _until(lambda: len(fakes.slack.calls_to("chat.postMessage")) == 1, "first post sent")

    _write(path, TWO_POSTS.replace("VERSION", "v2"))  # while the run waits for Slack
    await _until(lambda: engine.recipes.fingerprint != v1, "v2 loaded")
    assert (await engine.wait_final(first)).status == "done"
    assert (await engine.run(sample("service.provisioned"))).status == "done"

    assert _texts(fakes, "#ops") == ["first", "second, v1", "first", "second, v2"]


Skewed = Callable[[str], AbstractAsyncContextManager[EngineHarness]]


@pytest.fixture
def skewed(prefect_api: str, tmp_path: Path, recipes_dir: Path, fakes: FakeVendors) -> Skewed:
    """An engine whose dispatcher and worker each have their recipes, and only ``watch``'s
    side looks at the files: two processes, one of which has not seen a change yet."""

    def start(watch: str) -> AbstractAsyncContextManager[EngineHarness]:
        return running_engine(
            prefect_api,
            tmp_path / "home",
            str(recipes_dir),
            HooklineConfig(env=[]),
            {**os.environ, **fakes.env},
            watch=watch,
        )

    return start


async def test_a_worker_behind_its_dispatcher_looks_before_it_refuses(
    skewed: Skewed, recipes_dir: Path, fakes: FakeVendors
) -> None:
    async with skewed("dispatcher") as engine:
        _write(recipes_dir / "invoices.yaml", INVOICES)
        await _until(lambda: engine.recipes.get("invoices") is not None, "dispatcher reloaded")
        assert engine.runtime.recipes.get("invoices") is None  # the worker has not looked

        entry = await engine.run(sample("billing.invoice.generated", invoice_id="inv_skew"))
        assert entry.status == "done", entry.last_error
        assert _texts(fakes, "#billing") == ["invoice inv_skew"]
        assert engine.runtime.recipes.get("invoices") is not None

        # a changed `when` the dispatcher matched and the worker's old version does not
        _write(
            recipes_dir / "outage.yaml",
            OUTAGE_RECIPE.replace("['degraded', 'outage']", "['degraded', 'outage', 'slow']"),
        )
        await _until(lambda: "slow" in str(engine.recipes.get("outage").when), "new `when`")  # type: ignore[union-attr]
        entry = await engine.run(sample(current_status="slow"))
        assert entry.status == "done", entry.last_error
        assert set(entry.flow_runs) == {"outage"}


async def test_a_run_for_a_recipe_its_worker_no_longer_has_fails_clearly(
    skewed: Skewed, recipes_dir: Path, fakes: FakeVendors
) -> None:
    async with skewed("worker") as engine:
        (recipes_dir / "tickets.yaml").unlink()
        await _until(lambda: engine.runtime.recipes.get("tickets") is None, "worker reloaded")
        assert engine.recipes.get("tickets") is not None  # the dispatcher has not looked

        entry = await engine.run(sample("support.ticket.created"))
        assert entry.status == "failed"
        assert "recipe 'tickets' is not loaded by this worker (it has 5 recipes (" in (
            entry.last_error or ""
        )
        assert "removed or renamed after the event was dispatched" in (entry.last_error or "")
        assert fakes.slack.messages == []


async def test_hookline_yaml_env_list_is_reloaded_with_the_recipes(
    prefect_api: str, tmp_path: Path, recipes_dir: Path, fakes: FakeVendors
) -> None:
    config_file = tmp_path / "hookline.yaml"
    config_file.write_text("env: []\n")
    environ = {**os.environ, **fakes.env, "RELOAD_CHANNEL": "#from-env"}
    async with running_engine(
        prefect_api, tmp_path / "home", str(recipes_dir), load_config(config_file), environ
    ) as engine:
        _write(
            recipes_dir / "invoices.yaml", INVOICES.replace("#billing", "{{ env.RELOAD_CHANNEL }}")
        )
        await _until(lambda: engine.recipes.refused != [], "env.RELOAD_CHANNEL refused")
        assert f"env.RELOAD_CHANNEL is not allowed by {config_file}" in engine.recipes.refused[0]

        config_file.write_text("env: [RELOAD_CHANNEL]\n")
        await _until(lambda: engine.recipes.get("invoices") is not None, "env list reloaded")
        entry = await engine.run(sample("billing.invoice.generated", invoice_id="inv_env"))
        assert entry.status == "done", entry.last_error
        assert _texts(fakes, "#from-env") == ["invoice inv_env"]
